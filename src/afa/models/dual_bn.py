"""Dual batch norm: separate clean and adversarial BN statistics and affine parameters.

Clean and adversarial inputs have different feature statistics; normalising both with one
running mean/variance mixes two distributions (Xie et al., "Adversarial Examples Improve
Image Recognition", CVPR 2020, AdvProp's auxiliary BN). ACL (Jiang et al., NeurIPS 2020,
``models/resnet_multi_bn.py``, ``batch_norm_multiple`` with the names ``normal`` / ``pgd``) and
DynACL (Luo et al., ICLR 2023) keep one BN per kind: the attack and the adversarial views run
through the ``pgd`` one, the clean views through ``normal``, and fine-tuning starts from the
adversarial one. Here they are the branches ``clean`` (ACL's ``normal``) and ``adv`` (``pgd``).

Any model becomes dual by :func:`convert_dual_bn`, which replaces every batch norm layer by a
:class:`DualBatchNorm` holding two copies of it (state dict keys ``<bn>.clean.*`` and
``<bn>.adv.*``), so every registered architecture gets the capability without code of its
own. Which branch a forward uses is explicit and scoped: ``with bn_branch(module, "adv"):``
(or ``model.bn_branch("adv")``) sets every dual layer under ``module`` and restores the previous
branches in ``finally``, so an exception inside cannot leave a model on the wrong branch.
Outside any such block a layer uses its default branch, ``clean`` unless changed with
:func:`set_bn_branch` (e.g. to evaluate on the adversarial branch).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

Branch = Literal["clean", "adv"]
BRANCHES: tuple[Branch, ...] = ("clean", "adv")


class DualBatchNorm(nn.Module):
    """Two batch norm layers of one shape, ``clean`` and ``adv``; ``branch`` picks one.

    Args:
        bn: the layer to duplicate (``BatchNorm1d/2d/3d`` or ``SyncBatchNorm``); it becomes
            the ``clean`` branch and a deep copy the ``adv`` branch (same initial values).

    Shape:
        as the wrapped layer.
    """

    def __init__(self, bn: _BatchNorm) -> None:
        super().__init__()
        self.clean = bn
        self.adv = copy.deepcopy(bn)
        self.branch: Branch = "clean"

    def forward(self, x: Tensor) -> Tensor:
        return self.adv(x) if self.branch == "adv" else self.clean(x)

    def extra_repr(self) -> str:
        return f"branch={self.branch!r}"


def convert_dual_bn(module: nn.Module) -> nn.Module:
    """Replace every batch norm layer under ``module`` (in place) by a :class:`DualBatchNorm`.

    Layers already inside a ``DualBatchNorm`` are left alone, so converting twice is the
    identity. Returns ``module`` (or the replacement when ``module`` itself is a BN layer).
    """
    if isinstance(module, _BatchNorm):
        return DualBatchNorm(module)
    for name, child in module.named_children():
        if isinstance(child, DualBatchNorm):
            continue
        if isinstance(child, _BatchNorm):
            setattr(module, name, DualBatchNorm(child))
        else:
            convert_dual_bn(child)
    return module


def dual_bn_layers(module: nn.Module) -> list[DualBatchNorm]:
    """Every :class:`DualBatchNorm` under ``module`` (module order)."""
    return [m for m in module.modules() if isinstance(m, DualBatchNorm)]


def has_dual_bn(module: nn.Module) -> bool:
    """Whether ``module`` holds at least one :class:`DualBatchNorm`."""
    return any(isinstance(m, DualBatchNorm) for m in module.modules())


def _check(branch: str) -> None:
    if branch not in BRANCHES:
        raise ValueError(f"bn branch: expected 'clean' or 'adv', got {branch!r}")


def set_bn_branch(module: nn.Module, branch: Branch) -> None:
    """Set the branch of every dual layer under ``module`` until changed again."""
    _check(branch)
    for layer in dual_bn_layers(module):
        layer.branch = branch


@contextmanager
def bn_branch(module: nn.Module, branch: Branch) -> Iterator[nn.Module]:
    """Run the block with every dual layer under ``module`` on ``branch``; restore after.

    Each layer's previous branch is restored in ``finally`` (nesting works; an exception
    leaves the branches as they were). A module without dual layers is unaffected, so
    methods may always name the branch of a forward.

    Example:
        >>> with bn_branch(model, "adv"):
        ...     logits_adv = model(x_adv)
    """
    _check(branch)
    layers = dual_bn_layers(module)
    saved = [layer.branch for layer in layers]
    for layer in layers:
        layer.branch = branch
    try:
        yield module
    finally:
        for layer, previous in zip(layers, saved, strict=True):
            layer.branch = previous


def on_branch(
    module: nn.Module,
    branch: Branch,
    fn: Callable[[Tensor], Tensor],
    *,
    enabled: bool = True,
) -> Callable[[Tensor], Tensor]:
    """``fn`` as a function that runs with every dual layer under ``module`` on ``branch``.

    The callable form of :func:`bn_branch`, for a forward handed to an attack. With
    ``enabled=False`` (a method whose option keeps one branch), ``fn`` itself.

    Shape:
        as ``fn``.
    """
    if not enabled:
        return fn

    def forward(x: Tensor) -> Tensor:
        with bn_branch(module, branch):
            return fn(x)

    return forward


def collapse_dual_bn(module: nn.Module, branch: Branch) -> nn.Module:
    """Replace every :class:`DualBatchNorm` under ``module`` by its ``branch`` layer, in place.

    A single-BN model from one branch of a dual one (ACL fine-tunes from ``adv``). Returns
    ``module`` (or the chosen layer when ``module`` itself is dual).
    """
    _check(branch)
    if isinstance(module, DualBatchNorm):
        return getattr(module, branch)
    for name, child in module.named_children():
        if isinstance(child, DualBatchNorm):
            setattr(module, name, getattr(child, branch))
        else:
            collapse_dual_bn(child, branch)
    return module


__all__ = [
    "BRANCHES",
    "Branch",
    "DualBatchNorm",
    "bn_branch",
    "collapse_dual_bn",
    "convert_dual_bn",
    "dual_bn_layers",
    "has_dual_bn",
    "on_branch",
    "set_bn_branch",
]
