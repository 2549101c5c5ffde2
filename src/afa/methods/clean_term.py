"""The clean contrastive term and its weight against the adversarial one (ACL, DynACL).

No working adversarial contrastive recipe trains on adversarial anchors alone: ACL (Jiang et
al., NeurIPS 2020, ``train_simCLR.py``) minimises ``(L_clean + L_adv) / 2``, where ``L_clean``
contrasts two clean augmented views among themselves; DynACL (Luo et al., ICLR 2023,
``train_DynACL.py``) weights the terms ``((2 - w) L_clean + w L_adv) / 2`` with ``w`` rising
from 1 during training:

    w = min(1 + ((e + 1) // K) * (K / epochs) * swap, 2)      (e the epoch, from 0)

(their K = ``reload_frequency`` = 50, ``swap_param`` = 2/3, their 1-based epoch ``e + 1``;
with 1000 epochs w ends at 1 + 20 * 0.05 * 2/3 ≈ 1.67). The same weights serve ``afa`` and
``afa-trades`` (option ``clean_term``) and the methods ``acl`` and ``dynacl``.

Also here: the branch-routing helpers for dual batch norm (:mod:`afa.models.dual_bn`): clean
views go through the ``clean`` branch, adversarial views and the attacks through ``adv``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from afa.errors import ConfigError
from afa.losses import AFALoss, Views

#: ``none``: the adversarial term alone (weights 0, 1); ``acl``: 1/2, 1/2; ``dynacl``:
#: DynACL's schedule.
CleanTerm = Literal["none", "acl", "dynacl"]


def dynacl_adv_weight(epoch: int, epochs: int, k: int = 50, swap: float = 2 / 3) -> float:
    """DynACL's ``w`` of epoch ``epoch`` (from 0) of ``epochs`` (see the module docstring)."""
    return min(1.0 + ((epoch + 1) // k) * (k / max(epochs, 1)) * swap, 2.0)


def clean_adv_weights(
    kind: CleanTerm, epoch: int, epochs: int, k: int = 50, swap: float = 2 / 3
) -> tuple[float, float]:
    """The weights ``(a, b)`` of ``a * L_clean + b * L_adv`` for ``kind`` at ``epoch``."""
    if kind == "none":
        return 0.0, 1.0
    if kind == "acl":
        return 0.5, 0.5
    if kind == "dynacl":
        w = dynacl_adv_weight(epoch, epochs, k, swap)
        return (2.0 - w) / 2.0, w / 2.0
    raise ConfigError(f"method.clean_term: expected 'none', 'acl' or 'dynacl', got {kind!r}")


def check_schedule(k: int, swap: float) -> None:
    """Raise a ConfigError naming ``dynacl_k`` / ``dynacl_swap`` when out of range."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"method.dynacl_k: expected an integer >= 1, got {k!r}")
    if not float(swap) >= 0:
        raise ConfigError(f"method.dynacl_swap: expected >= 0, got {swap!r}")


class CleanTermMixin:
    """The clean term of ``afa`` and ``afa-trades`` (their option ``clean_term``).

    Mixed into a :class:`~afa.methods.contrastive.ContrastiveMethod` whose ``Config`` has
    ``temperature``, ``denominator``, ``clean_term``, ``dynacl_k`` and ``dynacl_swap``:
    the method calls :meth:`init_clean_term` in its constructor, :meth:`set_term_weights`
    at each epoch's start and :meth:`add_clean_term` in its step.
    """

    config: Any
    term_weights: tuple[float, float]

    def init_clean_term(self) -> None:
        """Build the clean criterion (every clean view an anchor against the clean views
        only) and the weights of epoch 0."""
        c = self.config
        self.clean_criterion = AFALoss(
            temperature=c.temperature, denominator=c.denominator, anchors="all"
        )
        self.set_term_weights(0, 1)

    def set_term_weights(self, epoch: int, epochs: int) -> None:
        """The ``(a, b)`` of epoch ``epoch`` (from 0) of ``epochs``."""
        c = self.config
        self.term_weights = clean_adv_weights(
            c.clean_term, epoch, epochs, c.dynacl_k, c.dynacl_swap
        )

    def add_clean_term(
        self, adv_loss: Tensor, z_clean: Tensor, y: Tensor, n_views: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``a * L_clean + b * adv_loss`` and the clean term's metrics.

        Shape:
            adv_loss: scalar; z_clean: (n_views * B, D), view-major (view 0 of every
            example first); y: (B,).
        """
        clean_out = self.clean_criterion(z_clean, Views.stack(y, n_views, 0))
        w_clean, w_adv = self.term_weights
        loss = w_clean * clean_out.loss + w_adv * adv_loss
        metrics = {
            "clean_term_loss": clean_out.afa,
            "clean_term_weight": torch.tensor(w_clean, device=loss.device),
        }
        return loss, metrics


__all__ = [
    "CleanTerm",
    "CleanTermMixin",
    "check_schedule",
    "clean_adv_weights",
    "dynacl_adv_weight",
]
