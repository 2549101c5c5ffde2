"""Within-class and between-class cosine similarity of normalised features.

The mean cosine between distinct same-class pairs (within) and between differently labelled
pairs (between), and their gap. An aligned feature space has high within-class and low
between-class similarity; a *collapse* (every feature pointing the same way) shows as both
near 1 and a gap near 0.

Exact in O(N D) rather than O(N^2 D): with unit rows ``z_i`` and class sums ``s_c``,
``sum_{i != j, same class} z_i . z_j = sum_c ||s_c||^2 - sum_i ||z_i||^2`` and
``sum_{different class} z_i . z_j = ||sum_i z_i||^2 - sum_c ||s_c||^2``; the means divide by
the numbers of ordered pairs. Computed in float64. Zero features (normalised to zero)
count as cosine 0 with everything.

Shape:
    features: (N, D); labels: (N,) int64.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cosine_geometry"]


def cosine_geometry(features: Tensor, labels: Tensor) -> dict[str, Any]:
    """Mean within-class and between-class cosine and their gap.

    Returns:
        ``{"within": float | None, "between": float | None, "gap": within - between | None,
        "n_within_pairs": int, "n_between_pairs": int}`` (ordered pairs; ``None`` when a
        kind of pair does not exist).
    """
    z = F.normalize(features.double(), dim=1)
    labels = labels.long().to(z.device)
    n = z.shape[0]
    if n == 0:
        return {
            "within": None,
            "between": None,
            "gap": None,
            "n_within_pairs": 0,
            "n_between_pairs": 0,
        }
    classes, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(len(classes), z.shape[1], dtype=z.dtype, device=z.device).index_add_(
        0, inverse, z
    )
    counts = torch.bincount(inverse, minlength=len(classes)).double()
    same_all = float((sums * sums).sum())  # includes i == j
    self_sim = float((z * z).sum())
    total = float(z.sum(dim=0).pow(2).sum())
    n_within = int((counts * (counts - 1)).sum())
    n_between = int(n * n - (counts * counts).sum())
    within = (same_all - self_sim) / n_within if n_within else None
    between = (total - same_all) / n_between if n_between else None
    gap = within - between if within is not None and between is not None else None
    return {
        "within": within,
        "between": between,
        "gap": gap,
        "n_within_pairs": n_within,
        "n_between_pairs": n_between,
    }
