"""The view structure of a contrastive batch: which rows are anchors, positives, negatives.

Features of a multi-view batch are stacked view by view: ``V`` views of ``B`` samples,
row ``r = v * B + i`` holds view ``v`` of sample ``i``. :class:`Views` records, per row,
the sample index, the label and whether the view is adversarial; the loss options are
mask changes computed here (never inside the loss arithmetic).

Masks between anchors (rows of the anchor set) and the contrast set (rows of the
reference set, which is the anchor set itself unless a separate reference is given):

* positives ``P(i)``: same label, not ``i`` itself; with ``cross_view_positives=False``
  also the same kind (clean with clean, adversarial with adversarial). Same-label rows of
  the other kind are then *ignored*: neither positives nor negatives.
* negatives ``N(i)``: another label.
* anchors: ``"adversarial"`` (the AFA default), ``"all"``, or ``"clean"`` (the optional
  clean-anchor term).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

AnchorSet = Literal["adversarial", "all", "clean"]


@dataclass(frozen=True)
class Views:
    """Per-row description of stacked multi-view features.

    Attributes:
        labels: class of each row.
        sample: index of the sample each row is a view of (in ``[0, B)``).
        is_adv: whether each row is an adversarial view.

    Shape:
        labels, sample, is_adv: (N,) with N = V * B (int64, int64, bool).
    """

    labels: Tensor
    sample: Tensor
    is_adv: Tensor

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        if self.labels.dim() != 1 or self.sample.shape != (n,) or self.is_adv.shape != (n,):
            raise ValueError(
                "Views: labels, sample and is_adv must be 1-D of one length, got "
                f"{tuple(self.labels.shape)}, {tuple(self.sample.shape)}, {tuple(self.is_adv.shape)}"
            )
        if self.is_adv.dtype != torch.bool:
            raise ValueError(f"Views.is_adv must be bool, got {self.is_adv.dtype}")

    @classmethod
    def stack(cls, y: Tensor, clean_views: int, adv_views: int) -> Views:
        """The layout of ``clean_views`` clean views followed by ``adv_views`` adversarial ones.

        Rows ``[v*B, (v+1)*B)`` are view ``v``; views ``0 .. clean_views-1`` are clean.

        Shape:
            y: (B,); result: N = (clean_views + adv_views) * B rows.
        """
        if clean_views < 0 or adv_views < 0:
            raise ValueError(f"view counts must be >= 0, got {clean_views}, {adv_views}")
        v = clean_views + adv_views
        b = y.shape[0]
        sample = torch.arange(b, device=y.device).repeat(v)
        is_adv = torch.zeros(v * b, dtype=torch.bool, device=y.device)
        is_adv[clean_views * b :] = True
        return cls(labels=y.repeat(v), sample=sample, is_adv=is_adv)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def anchor_mask(self, anchors: AnchorSet) -> Tensor:
        """Which rows are anchors: ``"adversarial"``, ``"all"`` or ``"clean"``.

        Shape:
            result: (N,) bool.
        """
        return anchor_mask(self.is_adv, anchors)


def anchor_mask(is_adv: Tensor, anchors: AnchorSet) -> Tensor:
    """Rows that are anchors under the ``anchors`` option (see :class:`Views`)."""
    if anchors == "adversarial":
        return is_adv.clone()
    if anchors == "clean":
        return ~is_adv
    if anchors == "all":
        return torch.ones_like(is_adv)
    raise ValueError(f"anchors: expected 'adversarial', 'all' or 'clean', got {anchors!r}")


def pair_masks(
    anchor_labels: Tensor,
    anchor_is_adv: Tensor,
    ref_labels: Tensor,
    ref_is_adv: Tensor,
    self_index: Tensor,
    *,
    cross_view_positives: bool = True,
) -> tuple[Tensor, Tensor]:
    """Positive and negative masks between anchors and the contrast (reference) set.

    Args:
        anchor_labels, anchor_is_adv: per anchor.
        ref_labels, ref_is_adv: per row of the contrast set.
        self_index: the row of the contrast set that *is* the anchor (excluded from
            both masks), or -1 when the anchor is not in the contrast set.
        cross_view_positives: whether same-label features of the other kind (clean vs
            adversarial) are positives; when False they are ignored.

    Returns:
        ``(pos, neg)`` boolean masks.

    Shape:
        anchor_*: (A,); ref_*: (R,); self_index: (A,); pos, neg: (A, R).
    """
    same = anchor_labels[:, None] == ref_labels[None, :]
    cols = torch.arange(ref_labels.shape[0], device=ref_labels.device)
    not_self = cols[None, :] != self_index[:, None]
    pos = same & not_self
    if not cross_view_positives:
        pos = pos & (anchor_is_adv[:, None] == ref_is_adv[None, :])
    neg = ~same
    return pos, neg


__all__ = ["AnchorSet", "Views", "anchor_mask", "pair_masks"]
