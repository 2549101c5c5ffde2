"""Divergence: a loss that became NaN or infinite stops the run with one line.

The loop already refuses to checkpoint an epoch whose mean loss is not finite, so the
last finite ``last.pt``/``best.pt`` are never overwritten. :class:`DivergenceWatch` adds
what the message needs, the first step whose loss was not finite and which loss terms
were, without a device synchronisation per step (the flags stay on the device until the
epoch's end, where the loop reads its metrics anyway).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from afa.errors import TrainingDiverged


class DivergenceWatch:
    """The first step of an epoch whose loss is not finite, and its non-finite terms."""

    def __init__(self) -> None:
        self._first: Tensor | None = None
        self._terms: dict[str, Tensor] = {}

    def observe(self, step: int, loss: Tensor, terms: Mapping[str, Tensor]) -> None:
        """Note step ``step`` (no sync): its ``loss`` and the method's logged ``terms``."""
        bad = ~torch.isfinite(loss.detach()).all()
        if self._first is None:
            self._first = torch.full((), -1, dtype=torch.long, device=loss.device)
        new = bad & (self._first < 0)
        self._first = torch.where(new, torch.full_like(self._first, step), self._first)
        for name, value in terms.items():
            flag = new & ~torch.isfinite(value.detach().to(loss.device)).all()
            self._terms[name] = self._terms[name] | flag if name in self._terms else flag

    def first(self) -> tuple[int, list[str]] | None:
        """``(step, non-finite terms)`` of the first bad step, or None (synchronises)."""
        if self._first is None or int(self._first) < 0:
            return None
        return int(self._first), [k for k, v in self._terms.items() if bool(v)]


def diverged(
    *,
    run_dir: Path,
    stage: str,
    epoch: int,
    mean_loss: float,
    watch: DivergenceWatch,
    last_path: Path,
    last_global_epoch: int,
) -> TrainingDiverged:
    """The one-line error for an epoch whose mean loss is ``mean_loss`` (not finite).

    Args:
        epoch: the diverged epoch within ``stage``, counted from 1.
        last_global_epoch: completed epochs over all stages saved in ``last_path``.
    """
    seen = watch.first()
    if seen is None:  # under DDP: another rank's loss made the reduced mean non-finite
        where = f"the mean loss of stage {stage!r} epoch {epoch} is {mean_loss} (another rank)"
    else:
        step, terms = seen
        terms = [t for t in terms if t != "loss"]
        named = f"; non-finite terms: {', '.join(terms)}" if terms else ""
        where = f"the loss was not finite at step {step} (stage {stage!r}, epoch {epoch}{named})"
    if last_path.is_file():
        kept = f"the last good checkpoint {last_path} (global epoch {last_global_epoch}) is kept"
    else:
        kept = "no checkpoint exists yet (it diverged in the first epoch)"
    return TrainingDiverged(
        f"{run_dir}: training diverged: {where}; stopped without saving, {kept}; "
        "lower train.optimizer.lr or set train.grad_clip, and train again"
    )
