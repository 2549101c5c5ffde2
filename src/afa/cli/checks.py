"""Argument checks of the command line, run before any work starts.

Each check turns a bad value into one :class:`~afa.errors.UserError` line that names the
option (or config key) and the value, so a typo costs a second rather than a traceback
after the first epoch. Library functions keep their own ``ValueError`` checks; these
exist so that the user meets a named option instead.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from afa.config import apply_overrides
from afa.errors import ConfigError, UserError

if TYPE_CHECKING:  # the checks import the library only where they use it
    from afa.runs import EvalConfig

#: Files of which a run directory holds at least one (``afa train``, ``eval``, ``analyze``).
RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "eval.json", "analysis.json")


def check_device(name: str, key: str = "device") -> None:
    """Refuse a device this machine does not have, naming ``key`` and the value.

    ``auto`` always passes (it falls back to the CPU). Without this, ``device=cuda`` on a
    CPU-only build fails deep in torch with ``AssertionError: Torch not compiled with CUDA``.
    """
    import torch

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"{key}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}"
        ) from None
    if device.type == "cpu":
        return
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "torch was built without CUDA"
                if torch.version.cuda is None
                else "no GPU is visible"
            )
            raise ConfigError(
                f"{key}={name!r}: CUDA is not available here ({why}); use cpu or auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{key}={name!r}: only {count} CUDA device(s) here (cuda:0..)")
        return
    if device.type == "mps" and torch.backends.mps.is_available():
        return
    raise ConfigError(f"{key}={name!r}: device type {device.type!r} is not available here")


def check_output_dir(path: str | Path, key: str) -> Path:
    """Refuse an output location that cannot become a writable directory.

    Nothing is created: the nearest existing ancestor must be a directory in which a
    file can be written (a temporary file is made and removed at once), so ``/proc/x``,
    a path below a file, or a read-only place fail here with one line.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{key}={str(path)!r}: is a file, not a directory")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{key}={str(path)!r}: {ancestor} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"{key}={str(path)!r}: cannot write in {ancestor} ({reason})") from None
    return path


def check_record_writable(path: str, out: str | None, what: str) -> None:
    """Before ``afa eval`` / ``afa analyze`` work for minutes, the place their record goes
    must take a new file: the run directory (or the checkpoint file's), or for a
    ``robustbench:`` model its ``--out`` directory (default ``runs/NAME``). A path that
    does not exist is left to the loader, which names it.
    """
    if path.startswith("robustbench:"):
        check_output_dir(out if out is not None else "runs", "--out")
        return
    target = Path(path)
    if not target.exists():
        return
    directory = target if target.is_dir() else target.parent
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(
            f"{directory}: cannot write {what} there ({reason}); expected a writable run "
            "directory (copy the run to a writable place to evaluate it)"
        ) from None


def check_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Each path must be an existing directory holding a run's files (:data:`RUN_FILES`),
    each run once (a run given twice would be two identical rows)."""
    out = []
    seen: dict[Path, Path] = {}
    for p in map(Path, paths):
        if p.is_dir() and p.resolve() in seen:
            first = seen[p.resolve()]
            same = "" if str(first) == str(p) else f" (as {first})"
            raise UserError(f"{p}: given twice{same}; expected each run once")
        if not p.exists():
            raise UserError(f"{p}: run directory not found")
        if not p.is_dir():
            raise UserError(f"{p}: expected a run directory, got a file")
        if not any((p / name).is_file() for name in RUN_FILES):
            raise UserError(
                f"{p}: not a run directory (none of {', '.join(RUN_FILES)}); "
                "give directories written by `afa train`"
            )
        seen[p.resolve()] = p
        out.append(p)
    return out


def check_attacks(names: Sequence[str], key: str = "eval.attacks") -> None:
    """Every name a registered evaluation attack, each once: checked by ``afa train``, so
    a typo in a recipe's ``eval.attacks`` fails before training rather than after it."""
    from afa._registry import unknown_name_message
    from afa.evaluation.attacks import EVAL_ATTACKS

    for name in names:
        if name not in EVAL_ATTACKS:
            raise ConfigError(f"{key}: " + unknown_name_message("attack", name, EVAL_ATTACKS))
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}: each attack once, got {list(names)}")


def check_eval(e: EvalConfig) -> None:
    """A run's ``eval`` section as ``afa eval`` will read it: every attack registered and
    named once (:func:`check_attacks`), every ``eval.attack_options`` setting one its
    attack declares, of its type. Checked by ``afa train``, before training."""
    from afa.evaluation.runs import eval_settings

    check_attacks(e.attacks)
    eval_settings(e)


def parse_attack_options(items: Sequence[str] | None) -> dict[str, dict[str, Any]] | None:
    """``--attack-option ATTACK.KEY=VALUE`` (repeated) as ``{attack: {key: value}}``, the
    value read as YAML (``0.5``, ``true``, ``[1, 2]``); which keys an attack has is checked
    against its declaration when the settings are built."""
    if not items:
        return None
    for item in items:
        key = item.split("=", 1)[0]
        if "=" not in item or key.count(".") != 1 or not all(key.split(".")):
            raise UserError(
                f"--attack-option: expected ATTACK.KEY=VALUE (e.g. cw.steps=50), got {item!r}"
            )
    return apply_overrides({}, list(items))


def check_val_size(value: float, key: str = "data.val_size") -> None:
    """A float is a fraction in (0, 1), an int a count: ``2.0`` is neither, and reading it
    as a count of 2 would silently validate on two images. (The schema itself lets a
    whole float through, for runs stored by earlier versions; a user's new run may not.)"""
    if isinstance(value, float) and value >= 1:
        raise ConfigError(
            f"{key}: expected 0, a fraction in (0, 1) such as 0.1, or a whole count >= 1 "
            f"such as 500, got {value!r} (a count is written without a decimal point)"
        )
