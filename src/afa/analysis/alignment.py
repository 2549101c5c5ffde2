"""Feature alignment: is a sample's feature closer to its own class than to any other?

The AFA paper (Park et al. 2024, arXiv 2402.12187) explains the robustness/accuracy
tradeoff by *feature misalignment*: a sample, clean or adversarial, whose penultimate
feature lies closer to another class than to its own is misclassified. These are the
measurements of that claim, on L2-normalised penultimate features ``z = g(x) / ||g(x)||``
(docs/method.md, "Measuring alignment"); all functions are pure tensor functions.

Definitions:

* **Class centroid** ``mu_c``: the mean of the normalised clean *training* features of class
  c, normalised again (the direction of the class's mean feature; cosine to it is the
  natural "closeness to the class" on the sphere where AFA's contrastive loss acts).
* **Centroid alignment**: sample i is aligned when ``cos(z_i, mu_{y_i}) > cos(z_i, mu_c)``
  for every ``c != y_i``. A tie counts as *misaligned* (not strictly closer).
* **kNN alignment**: the k training features of highest cosine vote with their labels; the
  sample is aligned when its own class has strictly more votes than every other class (a
  tie involving the own class is misaligned). The kNN *prediction* breaks ties between
  classes of equal votes by the class of the nearest neighbour among them.
* **Distances** ``d = 1 - cos``: to the own centroid and to the nearest other centroid;
  the **alignment margin** is ``d_other - d_own`` (positive exactly when aligned).

Centroid alignment is, by construction, "the nearest-centroid classifier is right": if the
network's linear head is close to a nearest-centroid rule, the aligned fraction merely
restates accuracy. :func:`restatement` measures this and says so in words.

Shape:
    features: (N, D); labels: (N,) int64; centroids: (C, D).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import Tensor

__all__ = [
    "CentroidAlignment",
    "RESTATE_AGREEMENT",
    "RESTATE_GAP",
    "centroid_alignment",
    "class_centroids",
    "knn_alignment",
    "margin_vs_robustness",
    "restatement",
    "summarize",
]

RESTATE_AGREEMENT = 0.95
"""Agreement (aligned == correct) above which alignment may only restate accuracy."""
RESTATE_GAP = 0.02
"""... when, in addition, the aligned fraction is within this of the accuracy."""


def class_centroids(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Normalised mean of the normalised features of each class.

    Raises:
        ValueError: when a class has no feature (its centroid would be undefined).

    Shape:
        features: (N, D); labels: (N,); result: (num_classes, D), unit rows.
    """
    z = F.normalize(features.double(), dim=1)
    counts = torch.bincount(labels, minlength=num_classes)
    missing = (counts[:num_classes] == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(
            f"no training features for classes {missing}: their centroids are undefined"
        )
    sums = torch.zeros(num_classes, z.shape[1], dtype=z.dtype, device=z.device).index_add_(
        0, labels, z
    )
    return F.normalize(sums / counts[:, None], dim=1).to(features.dtype)


@dataclass
class CentroidAlignment:
    """Per-sample results of the centroid rule.

    Attributes:
        aligned: own-centroid cosine strictly above every other centroid's.
        d_own: ``1 - cos(z, mu_y)``.
        d_other: ``1 - max_{c != y} cos(z, mu_c)``.
        margin: ``d_other - d_own``.
        prediction: the nearest-centroid class (``argmax_c cos``, lowest index on ties).

    Shape:
        every field: (N,).
    """

    aligned: Tensor
    d_own: Tensor
    d_other: Tensor
    margin: Tensor
    prediction: Tensor


def centroid_alignment(features: Tensor, labels: Tensor, centroids: Tensor) -> CentroidAlignment:
    """The centroid rule of alignment for each sample (see the module docstring).

    Shape:
        features: (N, D); labels: (N,); centroids: (C, D) with C >= 2.
    """
    if centroids.shape[0] < 2:
        raise ValueError("alignment needs at least two class centroids")
    cos = F.normalize(features.float(), dim=1) @ F.normalize(centroids.float(), dim=1).T
    own = cos.gather(1, labels[:, None]).squeeze(1)
    other = cos.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return CentroidAlignment(
        aligned=own > other,
        d_own=1 - own,
        d_other=1 - other,
        margin=own - other,
        prediction=cos.argmax(dim=1),
    )


def knn_alignment(
    features: Tensor,
    labels: Tensor,
    ref_features: Tensor,
    ref_labels: Tensor,
    *,
    k: int,
    num_classes: int,
    chunk: int = 1024,
) -> tuple[Tensor, Tensor]:
    """kNN alignment and prediction under cosine similarity (see the module docstring).

    Args:
        features, labels: the samples (e.g. test features).
        ref_features, ref_labels: the neighbours (clean training features).
        k: neighbours per sample (clipped to the reference size).
        num_classes: number of classes.
        chunk: samples per similarity block (memory: ``chunk x N_ref`` floats).

    Returns:
        ``(aligned, prediction)``, both (N,).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, ref_features.shape[0])
    ref = F.normalize(ref_features.float(), dim=1)
    aligned, pred = [], []
    for s in range(0, features.shape[0], chunk):
        z = F.normalize(features[s : s + chunk].float(), dim=1)
        y = labels[s : s + chunk]
        nbr = ref_labels[(z @ ref.T).topk(k, dim=1).indices]  # (n, k), nearest first
        votes = F.one_hot(nbr, num_classes).sum(dim=1)  # (n, C)
        own = votes.gather(1, y[:, None]).squeeze(1)
        other = votes.scatter(1, y[:, None], -1).amax(dim=1)
        aligned.append(own > other)
        # Among the classes with the most votes, the one of the nearest neighbour.
        top = votes == votes.amax(dim=1, keepdim=True)
        first = top.gather(1, nbr).int().argmax(dim=1)
        pred.append(nbr.gather(1, first[:, None]).squeeze(1))
    if not aligned:
        empty = torch.zeros(0, dtype=torch.bool, device=features.device)
        return empty, empty.long()
    return torch.cat(aligned), torch.cat(pred)


def summarize(aligned: Tensor, correct: Tensor, labels: Tensor, num_classes: int) -> dict[str, Any]:
    """Counts and rates of alignment against the classifier's correctness.

    Accuracies are counts divided once; a rate over an empty set is ``None``.

    Returns:
        ``{"n", "aligned_fraction", "accuracy", "n_aligned", "n_misaligned",
        "acc_aligned", "acc_misaligned", "aligned_but_wrong", "misaligned_but_correct",
        "agreement", "per_class": {"<c>": {"n", "aligned_fraction", "accuracy",
        "acc_aligned", "acc_misaligned"}}}``.
    """
    a, c = aligned.bool().cpu(), correct.bool().cpu()
    lab = labels.cpu()
    out = _rates(a, c)
    out["per_class"] = {str(k): _rates(a[lab == k], c[lab == k]) for k in range(num_classes)}
    return out


def _rates(a: Tensor, c: Tensor) -> dict[str, Any]:
    n = int(a.numel())
    n_al = int(a.sum())
    n_mis = n - n_al

    def rate(num: int, den: int) -> float | None:
        return num / den if den else None

    out = {
        "n": n,
        "aligned_fraction": rate(n_al, n),
        "accuracy": rate(int(c.sum()), n),
        "n_aligned": n_al,
        "n_misaligned": n_mis,
        "acc_aligned": rate(int((a & c).sum()), n_al),
        "acc_misaligned": rate(int((~a & c).sum()), n_mis),
        "aligned_but_wrong": int((a & ~c).sum()),
        "misaligned_but_correct": int((~a & c).sum()),
        "agreement": rate(int((a == c).sum()), n),
    }
    return out


def restatement(summary: dict[str, Any], split: str) -> tuple[bool, str]:
    """Does the aligned fraction only restate the accuracy? A flag and a plain sentence.

    Flagged when alignment and correctness agree on more than :data:`RESTATE_AGREEMENT` of
    the samples *and* the aligned fraction is within :data:`RESTATE_GAP` of the accuracy:
    then "misaligned samples are misclassified" is nearly the definition of accuracy
    (the head acts as a nearest-centroid rule), not an explanation of it.
    """
    agree, frac, acc = (
        summary.get("agreement"),
        summary.get("aligned_fraction"),
        summary.get("accuracy"),
    )
    if agree is None or frac is None or acc is None:
        return False, f"{split}: no samples, nothing to compare."
    flag = agree > RESTATE_AGREEMENT and abs(frac - acc) <= RESTATE_GAP
    facts = (
        f"centroid alignment agrees with the classifier's correctness on {agree:.1%} of samples "
        f"and the aligned fraction ({frac:.1%}) is {'within' if abs(frac - acc) <= RESTATE_GAP else 'not within'} "
        f"{RESTATE_GAP:.0%} of the accuracy ({acc:.1%})"
    )
    if flag:
        return True, (
            f"On {split} inputs {facts}: here alignment restates accuracy (the classifier behaves "
            "like a nearest-centroid rule on these features); it is not evidence that "
            "misalignment explains the errors."
        )
    return False, (
        f"On {split} inputs {facts}: not flagged as a restatement (that needs agreement above "
        f"{RESTATE_AGREEMENT:.0%} and a gap of at most {RESTATE_GAP:.0%})."
    )


def margin_vs_robustness(margin: Tensor, robust_correct: Tensor) -> dict[str, float | None]:
    """How well a per-sample alignment margin predicts robust correctness.

    Returns:
        ``{"auc": P(margin of a robust-correct sample > margin of a robust-wrong one), ties
        counted one half (Mann-Whitney; 0.5 = no information), "point_biserial": the
        Pearson correlation of the margin with the 0/1 outcome}``; ``None`` where the outcome
        has one value only or the margin is constant.

    Shape:
        margin: (N,); robust_correct: (N,) bool.
    """
    m = margin.double().cpu().numpy()
    r = robust_correct.bool().cpu().numpy()
    n_pos, n_neg = int(r.sum()), int((~r).sum())
    if n_pos == 0 or n_neg == 0:
        return {"auc": None, "point_biserial": None}
    auc = roc_auc_score(r, m)  # the Mann-Whitney statistic, ties counted one half
    pb = None
    if m.std() > 0:
        pb = float(np.corrcoef(m, r.astype(np.float64))[0, 1])
    return {"auc": float(auc), "point_biserial": pb}
