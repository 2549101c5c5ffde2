"""Validation during training: clean and PGD accuracy under the run's shared threat model."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from afa.attacks import cross_entropy, perturb
from afa.attacks.threat import ThreatModel, pgd_label
from afa.data import to_float
from afa.runs.options import Precision
from afa.training.distributed import DistContext
from afa.training.precision import autocast_context


def attack_label(threat: ThreatModel) -> str:
    """The label of validation's attack, recorded as ``val/attack`` next to ``val/pgd_acc``.

    Validation runs PGD with cross-entropy under the run's own threat model (its steps
    and BN mode), so the label is ``afa.attacks.pgd_label(threat, "CE")``, e.g.
    ``PGD-10 (CE, BN eval)``; ``afa eval``'s attacks carry labels of the same form.
    """
    return pgd_label(threat, "CE")


@torch.no_grad()
def validate(
    model: nn.Module,
    images: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    threat: ThreatModel,
    *,
    batch_size: int,
    device: torch.device,
    precision: Precision = "fp32",
    generator: torch.Generator | None = None,
    dist: DistContext | None = None,
) -> dict[str, float]:
    """Clean accuracy and PGD accuracy (CE objective, ``threat``) on held-out examples.

    The model is put in eval mode and its mode restored afterwards. PGD is the library's
    ``perturb`` with ``cross_entropy`` and the SAME ``ThreatModel`` as training and
    evaluation, so "val/pgd_acc" is the robust accuracy those numbers mean (the loop
    records :func:`attack_label` beside it, as ``val/attack``). Accuracies
    are correct counts divided once by the example count (after summing over ranks).

    Args:
        model: a Classifier (unwrapped: not DDP).
        images: uint8 images; labels: int64 labels.
        threat: the run's threat model.
        batch_size: examples per forward.
        device: where to compute.
        precision: autocast precision for the forward passes.
        generator: seeds PGD's random start (on ``device``), so every validation of a run
            draws the same starts and leaves the training RNG stream untouched.
        dist: under DDP each rank takes every ``world_size``-th example and the counts are
            summed over ranks (every rank must call this).

    Returns:
        ``{"clean_acc": float, "pgd_acc": float}`` in [0, 1].

    Shape:
        images: (N, C, H, W) uint8; labels: (N,).
    """
    images = torch.as_tensor(images)
    labels = torch.as_tensor(labels)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"validate: {images.shape[0]} images but {labels.shape[0]} labels")
    if dist is not None and dist.enabled:
        images, labels = images[dist.rank :: dist.world_size], labels[dist.rank :: dist.world_size]
    was_training = model.training
    model.eval()
    clean = torch.zeros((), dtype=torch.int64, device=device)
    adv = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for start in range(0, images.shape[0], batch_size):
            x = to_float(images[start : start + batch_size], device)
            y = labels[start : start + batch_size].to(device)
            with autocast_context(device, precision):
                clean += (model(x).argmax(1) == y).sum()
                x_adv = perturb(model, x, y, threat, cross_entropy, generator=generator)
                adv += (model(x_adv).argmax(1) == y).sum()
    finally:
        model.train(was_training)
    counts: dict[str, float] = {"clean": int(clean), "adv": int(adv), "n": int(images.shape[0])}
    if dist is not None:
        counts = dist.reduce_sums(counts)
    n = counts["n"]
    if n == 0:
        raise ValueError("validate: no validation examples")
    return {"clean_acc": counts["clean"] / n, "pgd_acc": counts["adv"] / n}


__all__ = ["attack_label", "validate"]
