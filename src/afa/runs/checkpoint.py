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

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

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
    return _checked(path, path)


def _checked(path: Path, source: Path | IO[bytes]) -> dict[str, Any]:
    """Load ``source`` (``path`` or a file opened from it) and check it is a whole afa
    checkpoint; every error names ``path``."""
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
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


def load_weights(model: torch.nn.Module, state: Mapping[str, Any], where: str) -> None:
    """``model.load_state_dict(state)``; weights of another shape as one line.

    torch lists every mismatching key over many lines; the line here names the first
    (its shape in the checkpoint and in the model) and how many differ.

    Raises:
        CheckpointError: ``where: weights do not fit the model: ...``.
    """
    problem = weights_mismatch(model, state)
    if problem is None:
        try:
            model.load_state_dict(state)
            return
        except RuntimeError as exc:  # what the comparison does not see (dtype, ...)
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            problem = lines[-1] if lines else type(exc).__name__
    raise CheckpointError(f"{where}: weights do not fit the model: {problem}")


def weights_mismatch(model: torch.nn.Module, state: Mapping[str, Any]) -> str | None:
    """The first difference of ``state`` from ``model``'s state dict and the count, or None."""
    own = model.state_dict()
    if not isinstance(state, Mapping):
        return f"expected a state dict, got {type(state).__name__}"
    shapes = [
        f"{k} is {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} in the model"
        for k, v in own.items()
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    missing = [f"{k} is missing from the checkpoint" for k in own if k not in state]
    unexpected = [f"{k} is in the checkpoint, not in the model" for k in state if k not in own]
    problems = shapes + missing + unexpected
    if not problems:
        return None
    more = f" ({len(problems)} keys differ)" if len(problems) > 1 else ""
    return f"{problems[0]}{more}"


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


@dataclass(frozen=True)
class CheckpointIdentity:
    """Which checkpoint a result describes, so a reader can tell when the run moved on.

    ``best.pt`` and ``last.pt`` are replaced as training goes on (and by a resumed or
    re-trained run), so a path alone does not say which weights an ``eval.json`` or
    ``analysis.json`` measured; the content hash does, and the epoch and step say it in
    the run's terms.

    Attributes:
        path: the checkpoint file as it was given.
        sha256: hex SHA-256 of the file's bytes.
        epoch: completed epochs over all stages (``global_epoch``).
        step: optimizer steps (``global_step``).
        stage: the stage's name (``pretrain``, ``classifier``, ``train``), if recorded.
    """

    path: str
    sha256: str
    epoch: int | None
    step: int | None
    stage: str | None

    def record(self) -> dict[str, Any]:
        """The JSON form written under ``checkpoint_identity``."""
        return asdict(self)

    def describe(self) -> str:
        """``epoch 20, step 240, sha256 1a2b3c4d5e6f``."""
        return f"epoch {self.epoch}, step {self.step}, sha256 {self.sha256[:12]}"


def load_checkpoint_identified(path: str | Path) -> tuple[dict[str, Any], CheckpointIdentity]:
    """:func:`load_checkpoint`, and the identity of the bytes that were loaded.

    The file is opened once, hashed, then loaded from the same open file, so the hash
    describes the weights loaded even if training replaces the file meanwhile (an atomic
    replace gives the path a new file; the open one is unchanged).

    Raises:
        CheckpointError: as :func:`load_checkpoint`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with open(path, "rb") as f:
        digest = _sha256(f)
        f.seek(0)
        payload = _checked(path, f)
    return payload, identity_of(payload, path, digest)


def identity_of(payload: Mapping[str, Any], path: str | Path, sha256: str) -> CheckpointIdentity:
    """The identity of a loaded checkpoint ``payload`` read from ``path``."""
    stage = payload.get("stage")
    epoch, step = payload.get("global_epoch"), payload.get("global_step")
    return CheckpointIdentity(
        path=str(path),
        sha256=sha256,
        epoch=int(epoch) if isinstance(epoch, int) else None,
        step=int(step) if isinstance(step, int) else None,
        stage=str(stage["name"]) if isinstance(stage, dict) and "name" in stage else None,
    )


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    with open(path, "rb") as f:
        return _sha256(f)


def _sha256(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def checkpoint_moved_on(
    run_dir: str | Path, recorded: Mapping[str, Any] | None, what: str
) -> str | None:
    """A sentence when the run's checkpoint is no longer the one ``what`` describes, else None.

    ``recorded`` is the ``checkpoint_identity`` of ``what`` (``eval.json``,
    ``analysis.json``). The checkpoint compared is the file of the same name in
    ``run_dir`` (so a moved run directory still checks), else the recorded path. It has
    moved on when its bytes hash differently, or when it no longer exists.

    Args:
        run_dir: the run directory holding ``what``.
        recorded: the recorded identity; None or a mapping without ``sha256`` (a file
            written before identities were recorded) gives None: nothing to compare.
        what: the result file's name, for the sentence.
    """
    if not isinstance(recorded, Mapping) or not isinstance(recorded.get("sha256"), str):
        return None
    then = Path(str(recorded.get("path") or ""))
    current = Path(run_dir) / then.name
    if not then.name or not current.is_file():
        current = then
    was = (
        f"{what} describes {then.name or 'a checkpoint'} at epoch {recorded.get('epoch')}, "
        f"step {recorded.get('step')}, sha256 {recorded['sha256'][:12]}"
    )
    if not current.is_file():
        return (
            f"{was}; that file no longer exists: its numbers describe weights the run no longer has"
        )
    digest = file_sha256(current)
    if digest == recorded["sha256"]:
        return None
    try:
        now = identity_of(
            torch.load(current, map_location="cpu", weights_only=True, mmap=True), current, digest
        ).describe()
    except Exception:  # unreadable now: the hash alone says it changed
        now = f"sha256 {digest[:12]}, unreadable"
    again = {"eval.json": "`afa eval`", "analysis.json": "`afa analyze`"}.get(what, "it")
    return f"{was}; {current.name} is now {now}: the run has moved on since (re-run {again})"


__all__ = [
    "FORMAT",
    "PAYLOAD_KEYS",
    "CheckpointIdentity",
    "checkpoint_moved_on",
    "file_sha256",
    "identity_of",
    "load_checkpoint",
    "load_checkpoint_identified",
    "load_weights",
    "weights_mismatch",
]
