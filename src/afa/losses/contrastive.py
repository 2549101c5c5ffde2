"""The AFA loss: fully supervised contrastive alignment of clean and adversarial features.

AFA (Park et al., "Adversarial Feature Alignment: Balancing Robustness and Accuracy in
Deep Learning via Adversarial Training", arXiv 2402.12187, AISec 2024) minimises, over the
features ``z = normalize(h(g(x)))`` of clean and adversarial views,

    l(i) = -1/|P(i)| sum_{p in P(i)} log[ exp s(i,p) / (exp s(i,p) + sum_{n in N(i)} exp s(i,n)) ]

with ``s(a, b) = z_a . z_b / temperature``, ``P(i)`` the same-label features other than
``i`` and ``N(i)`` the other-label ones (:mod:`afa.losses.views`): each positive competes
only with the negatives (``denominator="negatives"``). ``denominator="supcon"`` is the
SupCon form of Khosla et al. (NeurIPS 2020, "Supervised Contrastive Learning", their
L_out), whose denominator sums over every feature of the contrast set but ``i``:

    l(i) = -1/|P(i)| sum_{p in P(i)} log[ exp s(i,p) / sum_{a != i} exp s(i,a) ]

(with ``cross_view_positives=False`` the same-class rows of the other kind, which are
neither positives nor negatives, also leave that denominator: it sums over P(i) and N(i)).

The loss is the mean of ``l(i)`` over the anchors that have at least one positive;
anchors without a positive are left out. When no anchor has a positive (one sample and one
view, every label distinct with one view, ...) the loss is a zero that still depends on
``z`` (its gradient is zero), so callers never see a NaN and ``backward`` works; the
number of valid anchors is reported alongside.

Numerics: features are normalised and everything is computed in float32 with autocast
disabled, whatever the input dtype. ``log(exp s_ip + sum_n exp s_in)`` is
``logaddexp(s_ip, lse_n(i))``, so the per-pair term is ``softplus(lse_n(i) - s_ip)``:
memory is O(A x R) for A anchors and R contrast rows, never O(A x R x R).

Chance level: the value of the loss when all similarities are equal (features carry no
information): ``log(1 + |N(i)|)`` for the negatives denominator and
``log(|P(i)| + |N(i)|)`` for SupCon, averaged over the valid anchors. ``loss / chance`` is
comparable across batch sizes, view counts and class counts.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from afa.losses.distributed import gather_with_grad, is_distributed, scale_grad, world_size
from afa.losses.views import AnchorSet, Views, anchor_mask, pair_masks

Denominator = Literal["negatives", "supcon"]


@dataclass
class ContrastiveOutput:
    """The loss and what to report about it.

    Attributes:
        loss: mean of ``per_anchor`` over the valid anchors (0 with a graph if none).
        per_anchor: ``l(i)`` for every row of the anchor tensor; 0 for rows that are not
            anchors or have no positive.
        valid: rows that are anchors with at least one positive.
        chance: the loss at equal similarities (mean over valid anchors; 0 if none).
        num_valid: number of valid anchors (int64 scalar).

    Shape:
        loss, chance, num_valid: scalars; per_anchor, valid: (N,).
    """

    loss: Tensor
    per_anchor: Tensor
    valid: Tensor
    chance: Tensor
    num_valid: Tensor


def _no_autocast(t: Tensor) -> AbstractContextManager[object]:
    if t.device.type in ("cuda", "cpu", "xpu", "mps"):
        return torch.autocast(device_type=t.device.type, enabled=False)
    return nullcontext()


def check_options(temperature: float, denominator: str) -> None:
    """Raise ``ValueError`` for a temperature that is not positive or an unknown denominator.

    The one check of the loss options, shared by :func:`contrastive_terms` and
    :class:`AFALoss` (method configs call it through their own validation).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if denominator not in ("negatives", "supcon"):
        raise ValueError(f"denominator: expected 'negatives' or 'supcon', got {denominator!r}")


def _masked_logsumexp(x: Tensor, mask: Tensor) -> Tensor:
    """Row-wise logsumexp over ``mask``; a very negative finite number for an empty row.

    A finite fill (not -inf) keeps the backward free of ``exp(-inf - (-inf))`` NaNs.
    """
    fill = torch.finfo(x.dtype).min / 2
    return torch.logsumexp(x.masked_fill(~mask, fill), dim=1)


def contrastive_terms(
    anchor_z: Tensor,
    anchor_labels: Tensor,
    anchor_is_adv: Tensor,
    ref_z: Tensor,
    ref_labels: Tensor,
    ref_is_adv: Tensor,
    self_index: Tensor,
    *,
    temperature: float = 0.1,
    denominator: Denominator = "negatives",
    cross_view_positives: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-anchor AFA (or SupCon) terms of anchors against a contrast set.

    Inputs are normalised here; the computation is float32 (float64 inputs stay float64,
    for gradcheck). See the module docstring for the formulas.

    Args:
        anchor_z, anchor_labels, anchor_is_adv: the anchors.
        ref_z, ref_labels, ref_is_adv: the contrast set.
        self_index: row of the contrast set that is the anchor itself, or -1.
        temperature: tau in ``s = z_a . z_b / tau``.
        denominator: ``"negatives"`` (AFA) or ``"supcon"`` (Khosla et al.).
        cross_view_positives: see :func:`afa.losses.views.pair_masks`.

    Returns:
        ``(loss, valid, chance)`` per anchor: ``l(i)`` (0 where ``|P(i)| = 0``), whether
        the anchor has a positive, and ``l(i)`` at equal similarities.

    Shape:
        anchor_*: (A, D) / (A,); ref_*: (R, D) / (R,); self_index: (A,); results: (A,).
    """
    check_options(temperature, denominator)
    with _no_autocast(anchor_z):
        dtype = torch.float64 if anchor_z.dtype == torch.float64 else torch.float32
        za = F.normalize(anchor_z.to(dtype), dim=1)
        zr = F.normalize(ref_z.to(dtype), dim=1)
        s = za @ zr.T / temperature
        pos, neg = pair_masks(
            anchor_labels,
            anchor_is_adv,
            ref_labels,
            ref_is_adv,
            self_index,
            cross_view_positives=cross_view_positives,
        )
        n_pos = pos.sum(1, dtype=torch.int32)
        n_neg = neg.sum(1, dtype=torch.int32)
        valid = n_pos > 0
        denom_pos = n_pos.clamp_min(1).to(dtype)
        if denominator == "negatives":
            lse_neg = _masked_logsumexp(s, neg)
            # -log[e^s_ip / (e^s_ip + sum_n e^s_in)] = softplus(lse_n - s_ip)
            pair = F.softplus(lse_neg[:, None] - s)
            per = torch.where(pos, pair, 0.0).sum(1) / denom_pos
            chance = torch.log1p(n_neg.to(dtype))
        else:
            lse_all = _masked_logsumexp(s, pos | neg)
            mean_pos = torch.where(pos, s, 0.0).sum(1) / denom_pos
            per = lse_all - mean_pos
            chance = torch.log((n_pos + n_neg).clamp_min(1).to(dtype))
        zero = torch.zeros_like(per)
        per = torch.where(valid, per, zero)
        chance = torch.where(valid, chance, zero)
    return per, valid, chance


def afa_loss(
    z: Tensor,
    labels: Tensor,
    is_adv: Tensor,
    *,
    temperature: float = 0.1,
    denominator: Denominator = "negatives",
    anchors: AnchorSet = "adversarial",
    cross_view_positives: bool = True,
    ref_z: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_is_adv: Tensor | None = None,
    self_index: Tensor | None = None,
) -> ContrastiveOutput:
    """The AFA loss of stacked views (single process; see :class:`AFALoss` for DDP).

    Without a reference set, the contrast set is ``z`` itself and each anchor excludes its
    own row. With ``ref_z`` (and ``ref_labels``, ``ref_is_adv``), the anchors selected
    from ``z`` are contrasted with the reference rows only; ``self_index[r]`` names the
    reference row that stands for row ``r`` of ``z`` (excluded), -1 for none (default).
    The AFA attack uses this: the anchors are the adversarial views being crafted, the
    reference set holds the detached clean-input features of the whole contrast set.

    Args:
        z: features (normalised inside), rows as in :class:`Views`.
        labels, is_adv: per row of ``z``.
        temperature: tau.
        denominator: ``"negatives"`` (AFA) or ``"supcon"``.
        anchors: ``"adversarial"`` (default), ``"all"`` or ``"clean"``.
        cross_view_positives: whether clean and adversarial same-label features are
            positives of each other (default True).
        ref_z, ref_labels, ref_is_adv, self_index: an optional separate contrast set
            (``ref_is_adv`` defaults to all clean).

    Returns:
        :class:`ContrastiveOutput`; ``per_anchor`` and ``valid`` are indexed by rows of z.

    Shape:
        z: (N, D); labels, is_adv: (N,); ref_z: (R, D); ref_labels, ref_is_adv: (R,);
        self_index: (N,).
    """
    if ref_z is None:
        if ref_labels is not None or ref_is_adv is not None or self_index is not None:
            raise ValueError("ref_labels/ref_is_adv/self_index need ref_z")
    elif ref_labels is None:
        raise ValueError("ref_z needs ref_labels")
    per, valid, chance = per_row_terms(
        z,
        labels,
        is_adv,
        anchor_mask(is_adv, anchors),
        temperature=temperature,
        denominator=denominator,
        cross_view_positives=cross_view_positives,
        ref_z=ref_z,
        ref_labels=ref_labels,
        ref_is_adv=ref_is_adv,
        self_index=self_index,
    )
    return reduce_anchors(per, valid, chance, z)


def per_row_terms(
    z: Tensor,
    labels: Tensor,
    is_adv: Tensor,
    rows: Tensor,
    *,
    temperature: float = 0.1,
    denominator: Denominator = "negatives",
    cross_view_positives: bool = True,
    ref_z: Tensor | None = None,
    ref_labels: Tensor | None = None,
    ref_is_adv: Tensor | None = None,
    self_index: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`contrastive_terms` for the rows of ``z`` selected by ``rows``, scattered back.

    Returns:
        ``(per, valid, chance)`` of length N: zero / False on rows not selected.

    Shape:
        z: (N, D); labels, is_adv, rows: (N,); results: (N,).
    """
    n = z.shape[0]
    all_rows = torch.arange(n, device=z.device)
    if ref_z is None:
        ref_z, ref_labels, ref_is_adv, self_index = z, labels, is_adv, all_rows
    else:
        assert ref_labels is not None
        if ref_is_adv is None:
            ref_is_adv = torch.zeros_like(ref_labels, dtype=torch.bool)
        if self_index is None:
            self_index = torch.full_like(all_rows, -1)
    idx = all_rows[rows]
    per_a, valid_a, chance_a = contrastive_terms(
        z[idx],
        labels[idx],
        is_adv[idx],
        ref_z,
        ref_labels,
        ref_is_adv,
        self_index[idx],
        temperature=temperature,
        denominator=denominator,
        cross_view_positives=cross_view_positives,
    )
    per = per_a.new_zeros(n).index_put((idx,), per_a)
    valid = torch.zeros(n, dtype=torch.bool, device=z.device).index_put((idx,), valid_a)
    chance = chance_a.new_zeros(n).index_put((idx,), chance_a)
    return per, valid, chance


def reduce_anchors(
    per: Tensor, valid: Tensor, chance: Tensor, z: Tensor, rows: Tensor | None = None
) -> ContrastiveOutput:
    """Mean of the per-row terms over the valid rows (optionally only within ``rows``).

    ``per`` is 0 on invalid rows, so the sum keeps the graph to ``z`` even when nothing is
    valid (then the loss is an exact 0 with zero gradient); ``z.sum() * 0`` joins it for
    the degenerate case of no anchor row at all.

    Shape:
        per, valid, chance, rows: (N,); z: (N, D).
    """
    if rows is not None:
        valid = valid & rows
        per = torch.where(valid, per, torch.zeros_like(per))
        chance = torch.where(valid, chance, torch.zeros_like(chance))
    num_valid = valid.sum()
    count = num_valid.clamp_min(1).to(per.dtype)
    loss = per.sum() / count + z.sum().to(per.dtype) * 0
    return ContrastiveOutput(
        loss=loss,
        per_anchor=per,
        valid=valid,
        chance=(chance.sum() / count).detach(),
        num_valid=num_valid.detach(),
    )


@dataclass
class AFAOutput:
    """What :class:`AFALoss` returns.

    Attributes:
        loss: ``afa + clean_anchor_weight * clean``, to minimise. Its value is the
            single-process loss on the global batch; under DDP its gradient is scaled by
            the world size so DDP's gradient average is the single-process gradient.
        afa: the AFA term over the configured anchors (detached).
        clean: the clean-anchor term (detached; 0 when its weight is 0).
        chance: chance level of ``afa`` (detached).
        num_valid: valid anchors of ``afa`` over the global batch.
        num_rows: rows of the (global) contrast set.
    """

    loss: Tensor
    afa: Tensor
    clean: Tensor
    chance: Tensor
    num_valid: Tensor
    num_rows: int


class AFALoss(nn.Module):
    """The AFA loss over a multi-view batch, gathered across ranks under DDP.

    Args:
        temperature: tau (0.1, the SupCon default of Khosla et al.).
        denominator: ``"negatives"`` (AFA, default) or ``"supcon"``.
        anchors: ``"adversarial"`` (default) or ``"all"``.
        cross_view_positives: clean and adversarial same-label features are positives of
            each other (default True).
        clean_anchor_weight: weight of an extra term with the clean views as anchors
            (0 = off), a remedy against collapse of the clean features.
        gather: gather the contrast set across ranks when torch.distributed is initialised
            (see :mod:`afa.losses.distributed`).

    Shape:
        z: (N, D) stacked views; views: :class:`Views` of N rows.

    Example:
        >>> crit = AFALoss(temperature=0.1)
        >>> out = crit(z, Views.stack(y, clean_views=1, adv_views=1))
        >>> out.loss.backward()
    """

    def __init__(
        self,
        temperature: float = 0.1,
        denominator: Denominator = "negatives",
        anchors: AnchorSet = "adversarial",
        cross_view_positives: bool = True,
        clean_anchor_weight: float = 0.0,
        gather: bool = True,
    ) -> None:
        super().__init__()
        check_options(temperature, denominator)
        if anchors not in ("adversarial", "all"):
            raise ValueError(f"anchors: expected 'adversarial' or 'all', got {anchors!r}")
        self.temperature = temperature
        self.denominator: Denominator = denominator
        self.anchors: AnchorSet = anchors
        self.cross_view_positives = cross_view_positives
        self.clean_anchor_weight = clean_anchor_weight
        self.gather = gather

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, denominator={self.denominator!r}, "
            f"anchors={self.anchors!r}, cross_view_positives={self.cross_view_positives}, "
            f"clean_anchor_weight={self.clean_anchor_weight}"
        )

    def terms(
        self,
        anchor_z: Tensor,
        anchor_labels: Tensor,
        anchor_is_adv: Tensor,
        ref_z: Tensor,
        ref_labels: Tensor,
        ref_is_adv: Tensor,
        self_index: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`contrastive_terms` with this criterion's options (no gathering).

        The AFA attack scores its anchors with the same temperature, denominator and
        positives as the training loss by calling this.

        Shape:
            as :func:`contrastive_terms`.
        """
        return contrastive_terms(
            anchor_z,
            anchor_labels,
            anchor_is_adv,
            ref_z,
            ref_labels,
            ref_is_adv,
            self_index,
            temperature=self.temperature,
            denominator=self.denominator,
            cross_view_positives=self.cross_view_positives,
        )

    def forward(self, z: Tensor, views: Views) -> AFAOutput:
        if z.shape[0] != len(views):
            raise ValueError(f"z has {z.shape[0]} rows but views describe {len(views)}")
        labels, is_adv = views.labels, views.is_adv
        scale = 1
        if self.gather and is_distributed():
            z = gather_with_grad(z)
            labels = gather_with_grad(labels)
            is_adv = gather_with_grad(is_adv)
            scale = world_size()
        main_rows = anchor_mask(is_adv, self.anchors)
        rows = main_rows | ~is_adv if self.clean_anchor_weight else main_rows
        # One similarity computation for every row that is an anchor of some term.
        per, valid, chance = per_row_terms(
            z,
            labels,
            is_adv,
            rows,
            temperature=self.temperature,
            denominator=self.denominator,
            cross_view_positives=self.cross_view_positives,
        )
        main = reduce_anchors(per, valid, chance, z, main_rows)
        loss = main.loss
        clean = loss.new_zeros(())
        if self.clean_anchor_weight:
            clean = reduce_anchors(per, valid, chance, z, ~is_adv).loss
            loss = loss + self.clean_anchor_weight * clean
        return AFAOutput(
            loss=scale_grad(loss, float(scale)),
            afa=main.loss.detach(),
            clean=clean.detach(),
            chance=main.chance,
            num_valid=main.num_valid,
            num_rows=int(z.shape[0]),
        )


__all__ = [
    "AFALoss",
    "AFAOutput",
    "ContrastiveOutput",
    "Denominator",
    "afa_loss",
    "check_options",
    "contrastive_terms",
    "per_row_terms",
    "reduce_anchors",
]
