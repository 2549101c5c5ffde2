"""The correctness matrix: attacks in order, each only on the points still robust.

The protocol of AutoAttack (Croce & Hein 2020): a point broken by one attack is not
attacked again, and robust accuracy is the fraction that survives every attack.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from afa.data import to_float
from afa.errors import NonFiniteError
from afa.evaluation.attacks import AttackFn


def correctness_matrix(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[tuple[str, AttackFn]],
    *,
    batch_size: int,
    device: torch.device | str,
    progress: bool = False,
    chunks: Sequence[int | None] | None = None,
) -> tuple[Tensor, Tensor, dict[str, float]]:
    """Run ``attacks`` in order, each on the examples still robust, and record who survives.

    Args:
        model: classifier (called as is: set its mode before).
        images, labels: the examples (uint8 or floats in [0, 1]).
        attacks: ``(label, fn)`` pairs; ``fn(x, y) -> x_adv`` on one batch.
        batch_size: examples per call of ``fn``.
        device: where batches go.
        progress: a tqdm bar per attack.
        chunks: per attack, examples per call of its ``fn`` when not ``batch_size``
            (AutoAttack batches internally and pays a fixed cost per call, so it takes
            every remaining example at once).

    Returns:
        ``correct``: (N, 1 + A) bool, column 0 clean, column k correct after attack k (False
        for an example not attacked because it was already broken, so each column implies
        the one before it); ``attacked``: (N, A) bool, which examples each attack ran on;
        ``times``: seconds per attack label.
    """
    n = labels.shape[0]
    correct = torch.zeros(n, 1 + len(attacks), dtype=torch.bool)
    attacked = torch.zeros(n, len(attacks), dtype=torch.bool)
    times: dict[str, float] = {}
    everyone = torch.arange(n)
    correct[:, 0] = correct_on(model, images, labels, everyone, None, batch_size, device)
    for k, (label, fn) in enumerate(attacks):
        t0 = time.perf_counter()
        idx = correct[:, k].nonzero().squeeze(1)
        attacked[idx, k] = True
        size = (chunks[k] if chunks is not None else None) or batch_size
        correct[idx, k + 1] = correct_on(
            model, images, labels, idx, fn, size, device, desc=label if progress else None
        )
        times[label] = time.perf_counter() - t0
    return correct, attacked, times


def correct_on(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    idx: Tensor,
    attack: AttackFn | None,
    batch_size: int,
    device: torch.device | str,
    desc: str | None = None,
) -> Tensor:
    """Whether ``model`` classifies ``attack(images[idx])`` correctly (``attack=None``:
    the clean images): (len(idx),) bool, on the CPU.

    Raises:
        NonFiniteError: a logit is NaN or infinite. ``argmax`` would still pick a class,
            so a broken model would score about chance instead of failing.
    """
    out = torch.zeros(idx.shape[0], dtype=torch.bool)
    chunks = list(torch.arange(idx.shape[0]).split(batch_size))
    if desc is not None:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc=desc, leave=False)
    for chunk in chunks:
        sel = idx[chunk].to(images.device)
        x = images[sel]
        x = to_float(x, device) if x.dtype == torch.uint8 else x.to(device).float()
        y = labels[sel.to(labels.device)].to(device)
        if attack is not None:
            x = attack(x, y)
        with torch.no_grad():
            logits = model(x)
        bad = ~torch.isfinite(logits).all(dim=1)
        if bad.any():
            where = "clean inputs" if attack is None else "attacked inputs"
            first = int(sel[bad.nonzero()[0, 0].to(sel.device)])
            raise NonFiniteError(
                f"the model's logits are NaN or infinite on {int(bad.sum())} of "
                f"{len(chunk)} examples ({where}; the first is test example {first})"
            )
        out[chunk] = (logits.argmax(dim=1) == y).cpu()
    return out
