"""Reading a run's checkpoint safely, and what it holds.

A checkpoint is a dict of weights-only-loadable values (tensors, numbers, strings, None,
lists, tuples, dicts), loaded with ``torch.load(weights_only=True)``, so loading never
executes code. The payload written by ``afa.training.fit`` (``format`` =
``"afa-checkpoint/1"``):

* ``model``: the Classifier's state dict, saved from the unwrapped module (no ``module.``
  or ``_orig_mod.`` prefixes);
* ``method``: the Method's own state without the ``model.`` entries (projection heads ...);
* ``optimizer``, ``scheduler`` (``LRSchedule``), ``scaler`` (empty unless fp16);
* ``ema``: the averaged Classifier's state dict (loadable like ``model``) or None;
  ``ema_updates``: the EMA's update count;
* ``eval_weights``: ``"ema"`` or ``"model"``, the weights that validation measured;
* ``stage``: ``{"index", "name"}``; ``epoch``: completed epochs within the stage;
  ``global_epoch``: completed epochs over all stages; ``global_step``: optimizer steps;
* ``best``: ``{"metric", "value", "stage", "epoch", "global_epoch"}`` or None;
* ``rng``: one ``rng_state()`` per rank; ``world_size``;
* ``config``: the resolved run config as a plain dict; ``metrics``: the epoch's record;
* whatever the caller added through ``RunSpec(extra=...)`` (e.g. ``dataset_info``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from afa.errors import CheckpointError

FORMAT = "afa-checkpoint/1"

#: Every key ``fit`` writes (``load_checkpoint`` checks they are present).
PAYLOAD_KEYS = (
    "format",
    "model",
    "method",
    "optimizer",
    "scheduler",
    "scaler",
    "ema",
    "ema_updates",
    "eval_weights",
    "stage",
    "epoch",
    "global_epoch",
    "global_step",
    "best",
    "rng",
    "world_size",
    "config",
    "metrics",
)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an ``afa`` checkpoint safely (``weights_only=True``) onto the CPU.

    Raises:
        CheckpointError: naming ``path``, when the file is missing, unreadable or
            corrupted, holds non-weights objects, or is not a complete afa checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, unsafe pickle ...
        raise CheckpointError(f"{path}: not a readable checkpoint ({_reason(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path}: not an afa checkpoint (expected format {FORMAT!r}, got {found!r})"
        )
    missing = [k for k in PAYLOAD_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing key {missing[0]!r}")
    return payload


#: torch's boilerplate around a weights-only refusal (its advice to retry with
#: ``weights_only=False`` is exactly what a user must not do with an unknown file).
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _reason(exc: Exception) -> str:
    """The specific line of a load error: ``Unsupported operand 110``, ``... GLOBAL posix.system``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(_BOILERPLATE)]
    reason = (specific or lines or [type(exc).__name__])[0].removeprefix("WeightsUnpickler error:")
    if lines and lines[0].startswith(_BOILERPLATE[0]):
        reason = f"refused by the weights-only loader, nothing was run: {reason.strip()}"
    # torch's zip errors go on for sentences ("This is an internal miniz error. If you ...")
    return reason.strip().split(". ")[0] or type(exc).__name__


__all__ = ["FORMAT", "PAYLOAD_KEYS", "load_checkpoint"]
