"""NT-Xent, SimCLR's self-supervised contrastive loss, on the AFA loss machinery.

NT-Xent (Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020; the loss of ACL, Jiang et al. NeurIPS 2020, and DynACL, Luo et
al. ICLR 2023) over ``2B`` rows, two views of each of ``B`` images, is for every row ``i``
with ``p(i)`` the other view of the same image

    l(i) = -log[ exp s(i, p(i)) / sum_{a != i} exp s(i, a) ],   s = z_i . z_a / temperature,

averaged over the ``2B`` rows (temperature 0.5 in ACL/DynACL's CIFAR code). It is the SupCon
form of :func:`afa.losses.contrastive.contrastive_terms` with each image its own class, so it
shares that function's masks, float32 logsumexp (autocast off) and degenerate-case handling.
With ``V > 2`` views every other view of the same image is a positive and the terms are
averaged over them (Khosla et al.'s self-supervised L_out); ``V = 2`` is NT-Xent exactly.

Chance level (all similarities equal): ``log(V B - 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from afa.losses.contrastive import ContrastiveOutput, per_row_terms, reduce_anchors
from afa.losses.distributed import gather_with_grad, is_distributed, scale_grad, world_size


def view_sample_ids(
    batch: int, views: int, *, offset: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """The image index of every row of ``views`` views stacked view by view, plus ``offset``.

    Shape:
        result: (views * batch,) int64; row ``v * batch + i`` holds ``offset + i``.
    """
    return torch.arange(batch, device=device).repeat(views) + offset


def nt_xent(z: Tensor, sample: Tensor, *, temperature: float = 0.5) -> ContrastiveOutput:
    """NT-Xent of rows ``z`` whose images are ``sample`` (single process; see :class:`NTXentLoss`).

    Rows with the same ``sample`` are positives of each other, every other row a negative.
    A row whose image has no other view is left out of the mean (``valid`` False).

    Args:
        z: features (normalised inside), any float dtype (computed in float32, or float64
            for float64 inputs).
        sample: the image each row is a view of (e.g. :func:`view_sample_ids`).
        temperature: tau (0.5: SimCLR's CIFAR value, ACL, DynACL).

    Returns:
        :class:`~afa.losses.contrastive.ContrastiveOutput` (``loss``, ``per_anchor``,
        ``valid``, ``chance``, ``num_valid``).

    Shape:
        z: (N, D); sample: (N,) int64.

    Example:
        >>> z = torch.cat([z1, z2])                     # two views of B images
        >>> out = nt_xent(z, view_sample_ids(B, 2))
    """
    if z.dim() != 2 or sample.shape != (z.shape[0],):
        raise ValueError(
            f"nt_xent: expected z (N, D) and sample (N,), got {tuple(z.shape)}, "
            f"{tuple(sample.shape)}"
        )
    clean = torch.zeros_like(sample, dtype=torch.bool)
    per, valid, chance = per_row_terms(
        z,
        sample,
        clean,
        torch.ones_like(clean),
        temperature=temperature,
        denominator="supcon",
    )
    return reduce_anchors(per, valid, chance, z)


@dataclass
class NTXentOutput:
    """What :class:`NTXentLoss` returns.

    Attributes:
        loss: NT-Xent to minimise; its value is the single-process loss on the global
            batch, its gradient scaled by the world size under DDP (so DDP's average of
            parameter gradients is the single-process gradient).
        chance: ``log(N_global - 1)`` for two views (detached).
        num_rows: rows of the (global) batch.
    """

    loss: Tensor
    chance: Tensor
    num_rows: int


class NTXentLoss(nn.Module):
    """NT-Xent over ``views`` views stacked view by view, gathered across ranks under DDP.

    Each rank holds ``views`` views of its own ``B_r`` images; under DDP the rows of every
    rank are gathered (:func:`afa.losses.distributed.gather_with_grad`, local gradients
    only) with globally distinct image ids, and every rank computes the loss over all
    global rows (see :mod:`afa.losses.distributed` for why the gradient is then exact).

    Args:
        temperature: tau (0.5).
        gather: gather across ranks when torch.distributed is initialised.

    Shape:
        z: (views * B, D), rows ``v * B + i`` view ``v`` of image ``i``.

    Example:
        >>> crit = NTXentLoss(temperature=0.5)
        >>> out = crit(torch.cat([head(x1), head(x2)]))
        >>> out.loss.backward()
    """

    def __init__(self, temperature: float = 0.5, gather: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature = temperature
        self.gather = gather

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, z: Tensor, views: int = 2) -> NTXentOutput:
        if views < 1 or z.shape[0] % views:
            raise ValueError(f"NTXentLoss: {z.shape[0]} rows are not {views} views of a batch")
        batch = z.shape[0] // views
        scale = 1
        if self.gather and is_distributed():
            z, row_offset = gather_with_grad(z, return_offset=True)
            # Every rank stacks `views` views, so earlier ranks hold row_offset / views images.
            sample = view_sample_ids(batch, views, offset=row_offset // views, device=z.device)
            sample = gather_with_grad(sample)
            scale = world_size()
        else:
            sample = view_sample_ids(batch, views, device=z.device)
        out = nt_xent(z, sample, temperature=self.temperature)
        return NTXentOutput(
            loss=scale_grad(out.loss, float(scale)), chance=out.chance, num_rows=int(z.shape[0])
        )


__all__ = ["NTXentLoss", "NTXentOutput", "nt_xent", "view_sample_ids"]
