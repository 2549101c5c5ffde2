"""The collapse indicator: are an encoder's features g(x) collapsed or class-structured?

A collapsed encoder maps every input to (nearly) one direction, to a line, or to features no
more class-structured than those of a randomly initialised copy of itself. The raw class gap
``cos_gap`` (mean same-class minus different-class cosine) cannot tell that from a robust
encoder: it is the class separation *times the spread* of the features on the sphere, so
class-structured features that are tightly bunched (afa-trades' on CIFAR-10) read as nearly
collapsed. The indicator therefore uses two scale-free statistics of the normalised features
``z = g(x) / ||g(x)||`` (``docs/method.md#the-collapse-indicator``):

* **class separation** :func:`class_separation`: the share of the variance of ``z`` that
  lies between the class means, ``eta^2 = sum_c n_c ||m_c - m||^2 / sum_i ||z_i - m||^2``,
  corrected for chance: under randomly permuted labels ``E[eta^2] = (K - 1) / (N - 1)``
  exactly (K classes present, N rows), so ``(eta^2 - e0) / (1 - e0)`` is 0 for features
  that carry no class information and 1 for classes collapsed to distinct points. How widely
  the features spread changes the between-class and the total variance alike.
* **effective rank** :func:`effective_rank`: ``exp`` of the entropy of the normalised
  eigenvalues of the covariance of ``z`` (Roy and Vetterli 2007); 1 for features on one
  line, 0 for constant features.

:func:`judge` turns them into reasons, empty for a healthy encoder: an effective rank below
:data:`MIN_EFFECTIVE_RANK`, a separation below :data:`MIN_SEPARATION`, or (when the mean
separation of randomly initialised copies on the same images is known,
:func:`init_separation`) a separation below :data:`MIN_GAIN_OVER_INIT` times that mean.
The thresholds and the measurements behind them are in that section of the method card.

Shape:
    features: (N, D); labels: (N,) int64.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from afa.data import to_float
from afa.models.base import Classifier

__all__ = [
    "INIT_SEEDS",
    "MAX_IMAGES",
    "MIN_EFFECTIVE_RANK",
    "MIN_GAIN_OVER_INIT",
    "MIN_SEPARATION",
    "class_separation",
    "collapse_reasons",
    "effective_rank",
    "encoder_stats",
    "init_separation",
    "judge",
    "reinitialised",
]

#: Below this effective rank the features lie on (about) one line: rank-1 features have 1,
#: constant ones 0; trained CNNs measured 4.6-12.6 (digits and a CIFAR-10 subset), random
#: ones 3.9-19.4.
MIN_EFFECTIVE_RANK = 1.5
#: Below this chance-corrected separation the classes explain (almost) none of the
#: features' variance; raw pixels of CIFAR-10 measured 0.055.
MIN_SEPARATION = 0.02
#: A trained encoder's separation must exceed this multiple of the mean separation of
#: randomly initialised copies, on the same images, not to count as "no better than at
#: initialisation": single random CNNs ranged from 0.56x to 1.41x their mean on CIFAR-10
#: (six seeds), so a smaller factor would let some random encoders pass.
MIN_GAIN_OVER_INIT = 1.5
#: Seeds of the randomly initialised copies whose mean separation is the reference (fixed:
#: the reference is a constant of the architecture and the images).
INIT_SEEDS = (0, 1, 2, 3, 4)
#: Validation images the loop's indicator uses at most (a forward pass each).
MAX_IMAGES = 1024


def _stat_dtype(t: Tensor) -> torch.dtype:
    return torch.float32 if t.device.type == "mps" else torch.float64


def _centered_unit(features: Tensor) -> tuple[Tensor, Tensor]:
    """``(z, z - mean z)`` with ``z`` the L2-normalised rows (zero rows stay zero)."""
    z = F.normalize(features.detach().to(_stat_dtype(features)), dim=1)
    return z, z - z.mean(dim=0, keepdim=True)


def class_separation(features: Tensor, labels: Tensor) -> Tensor:
    """Chance-corrected share of the normalised features' variance between class means.

    ``(eta^2 - e0) / (1 - e0)`` with ``eta^2`` the between-class over the total sum of
    squares of ``z = normalize(features)`` and ``e0 = (K - 1) / (N - 1)`` its expectation
    under permuted labels (K classes present). 0: no class information; 1: every class a
    single point; it can be slightly negative by chance. Constant features (no variance)
    give exactly 0; NaN when it is undefined (fewer than two classes, or no more rows than
    classes), which :func:`judge` does not judge.

    Returns:
        A detached 0-dim tensor on the features' device.

    Shape:
        features: (N, D); labels: (N,); result: ().
    """
    z, zc = _centered_unit(features)
    labels = labels.to(z.device)
    n = z.shape[0]
    classes, inverse = torch.unique(labels, return_inverse=True)
    k = int(classes.numel())
    if k < 2 or n <= k:
        return torch.tensor(float("nan"), dtype=z.dtype, device=z.device)
    total = zc.pow(2).sum()
    sums = torch.zeros(k, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, inverse, zc)
    counts = torch.bincount(inverse, minlength=k).to(z.dtype)
    between = (sums.pow(2).sum(dim=1) / counts).sum()  # sum_c n_c ||m_c - m||^2
    e0 = (k - 1) / (n - 1)
    eta = between / total.clamp_min(torch.finfo(z.dtype).tiny)
    out = (eta - e0) / (1 - e0)
    # No variance at all (every row the same direction): no separation, not 0/0.
    return torch.where(total > 1e-9 * n, out, torch.zeros_like(out))


def effective_rank(features: Tensor) -> Tensor:
    """``exp(H(p))``, p the normalised eigenvalues of the covariance of ``normalize(features)``.

    The number of equally used directions the features would need for the same spectral
    entropy (Roy and Vetterli 2007): 1 for features on one line, 0 for constant features
    (no variance), at most ``min(N - 1, D)``.

    Returns:
        A detached 0-dim tensor on the features' device.

    Shape:
        features: (N, D); result: ().
    """
    _, zc = _centered_unit(features)
    n = zc.shape[0]
    cov = zc.T @ zc / max(n, 1) if zc.shape[1] <= n else zc @ zc.T / max(n, 1)
    eig = torch.linalg.eigvalsh(cov).clamp_min(0)
    total = eig.sum()
    if not total > 1e-9:
        return torch.zeros((), dtype=zc.dtype, device=zc.device)
    p = eig / total
    entropy = -(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum()
    return torch.exp(entropy)


def judge(
    separation: float | None,
    rank: float | None,
    separation_init: float | None = None,
) -> list[str]:
    """Why features count as collapsed, in words; empty when they do not.

    Args:
        separation: :func:`class_separation` of the judged features (None/NaN: not judged).
        rank: :func:`effective_rank` of the judged features (None/NaN: not judged).
        separation_init: the mean :func:`class_separation` of randomly initialised copies
            of the encoder on the same images (:func:`init_separation`); None: not compared.

    Returns:
        One sentence per rule broken: effective rank below :data:`MIN_EFFECTIVE_RANK`,
        separation below :data:`MIN_SEPARATION`, separation below
        :data:`MIN_GAIN_OVER_INIT` times ``separation_init``.
    """

    def known(v: float | None) -> float:
        return float(v) if v is not None and math.isfinite(v) else math.nan

    sep, erank, init = known(separation), known(rank), known(separation_init)
    reasons = []
    if erank < MIN_EFFECTIVE_RANK:  # NaN compares False: not judged
        reasons.append(
            f"the features span {erank:.2f} effective directions "
            f"(below {MIN_EFFECTIVE_RANK}: one line or one point)"
        )
    if sep < MIN_SEPARATION:
        reasons.append(
            f"classes explain no more of the features' variance than chance "
            f"(separation {sep:.3f} < {MIN_SEPARATION})"
        )
    elif sep < MIN_GAIN_OVER_INIT * init:
        reasons.append(
            f"the features separate classes no better than randomly initialised "
            f"encoders' (separation {sep:.3f}, random init {init:.3f}; "
            f"needs {MIN_GAIN_OVER_INIT}x)"
        )
    return reasons


def collapse_reasons(stats: Mapping[str, float]) -> list[str]:
    """:func:`judge` on a record's ``feat_separation``, ``feat_erank`` and
    ``feat_separation_init`` (absent keys are not judged)."""
    return judge(
        stats.get("feat_separation"), stats.get("feat_erank"), stats.get("feat_separation_init")
    )


def reinitialised(model: Classifier, seed: int = 0) -> Classifier:
    """A copy of ``model`` with every parameter and BN statistic freshly initialised.

    Each sub-module's own ``reset_parameters`` (PyTorch's default initialisation; batch
    norm's running statistics reset too) under ``torch.manual_seed(seed)``, on the CPU and
    inside ``torch.random.fork_rng``, so the caller's random streams (training's, on every
    device) are untouched; the copy is then moved to the model's device. ``model`` is
    unchanged.
    """
    device = next(model.parameters()).device
    clone = copy.deepcopy(model).to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return clone.to(device)


@torch.no_grad()
def encoder_stats(
    model: Classifier,
    images: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    *,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> dict[str, float]:
    """:func:`class_separation` and :func:`effective_rank` of ``model.features`` on images.

    The model is in eval mode (restored afterwards); images are uint8 (divided by 255) or
    float in [0, 1].

    Returns:
        ``{"feat_separation": float, "feat_erank": float}`` (NaN where undefined).

    Shape:
        images: (N, C, H, W); labels: (N,).
    """
    images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        feats = []
        for s in range(0, images.shape[0], batch_size):
            x = images[s : s + batch_size]
            x = to_float(x, device) if x.dtype == torch.uint8 else x.to(device).float()
            feats.append(model.features(x).float())
    finally:
        model.train(was_training)
    f = torch.cat(feats) if feats else torch.zeros(0, model.num_features, device=device)
    y = labels.to(f.device)
    return {
        "feat_separation": float(class_separation(f, y)),
        "feat_erank": float(effective_rank(f)),
    }


def init_separation(
    model: Classifier,
    images: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    *,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> tuple[float, list[float]]:
    """The reference of the third rule: the mean class separation of randomly
    initialised copies of ``model`` (:func:`reinitialised`, one per seed of
    :data:`INIT_SEEDS`) on the images.

    Returns:
        ``(mean, per-seed separations)``; NaN where undefined.
    """
    values = []
    for seed in INIT_SEEDS:
        copy_ = reinitialised(model, seed)
        values.append(
            encoder_stats(copy_, images, labels, batch_size=batch_size, device=device)[
                "feat_separation"
            ]
        )
        del copy_
    return float(np.mean(values)) if values else float("nan"), values
