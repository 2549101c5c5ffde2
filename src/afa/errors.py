"""User-facing errors: the CLI prints them as one line and exits with status 2.

So are the file system's errors (``OSError``: a full disk, a read-only directory), through
:func:`os_error_line`.
"""

from __future__ import annotations

import errno
import os


class UserError(Exception):
    """Bad input from the user (a file, a key, a value). Printed without a traceback."""


class ConfigError(UserError):
    """A configuration key or value that does not fit the schema."""


class DataError(UserError):
    """A data file that is missing, corrupted, or does not fit the dataset."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or incompatible with the run."""


class NonFiniteError(CheckpointError):
    """A model with NaN or infinite weights, or one whose logits are NaN or infinite: it
    would score as a constant classifier (chance accuracy) instead of failing."""


class TrainingDiverged(UserError):
    """A training loss that became NaN or infinite; the run stopped, its last finite
    checkpoint kept. Usually a learning rate too high for the model or the precision."""


#: Failures of a write, whatever the call that met them (``write``, ``open``, ``mkdir``).
_WRITE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG", "ENAMETOOLONG")
    if hasattr(errno, name)
)


def os_error_line(exc: OSError) -> str:
    """A failed file operation as one line: the path, and the system's reason.

    ``cannot write runs/x/last.pt: No space left on device``; ``data/x.npz: Permission
    denied``. The writers name the file they were writing and mark the error as a write
    (``afa._io.naming``), whatever the call that failed.
    """
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return f"{reason} ({errno.errorcode.get(exc.errno or 0, type(exc).__name__)})"
    path = os.fsdecode(exc.filename)
    if exc.filename2 is not None:
        path = f"{path} -> {os.fsdecode(exc.filename2)}"
    writing = exc.errno in _WRITE_ERRNOS or getattr(exc, "writing", False)
    verb = "cannot write " if writing else ""
    return f"{verb}{path}: {reason}"
