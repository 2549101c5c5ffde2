"""One writer per run directory: an exclusive ``flock`` on ``RUN_DIR/.lock``.

Two ``afa train`` processes (or a ``--resume`` while the run still trains) writing one run
directory interleave ``metrics.jsonl`` and leave a ``config.yaml`` of one run beside the
``last.pt`` of the other. :func:`run_lock` holds an exclusive, non-blocking ``flock`` for
the life of a run; the second writer is refused at once with one line naming the holder.

The lock is the kernel's, not the file's: it is released on any exit, ``kill -9``
included, so a dead holder never blocks anyone. The file holds the holder's pid, host and
start time (for the refusal message) and is emptied on a clean release; a new writer that
finds it non-empty knows the previous one died mid-run, says so, and takes over. The file
itself is never removed (unlinking a lock file races with a writer that opened it just
before).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afa._io import naming, remove_stale_temporaries
from afa.errors import UserError

log = logging.getLogger("afa")

LOCK_NAME = ".lock"


class RunLockedError(UserError):
    """Another live process holds the run directory's lock."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a run directory's lock."""

    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.started}"


@dataclass(frozen=True)
class RunLock:
    """A held lock: the lock file and, when one died holding it, the previous holder."""

    path: Path
    holder: LockHolder
    stale: LockHolder | None


def _me() -> LockHolder:
    return LockHolder(
        pid=os.getpid(),
        host=socket.gethostname(),
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        command=" ".join(sys.argv[:8]),
    )


def _parse(text: str) -> LockHolder | None:
    if not text.strip():
        return None
    try:
        data: Any = json.loads(text)
        return LockHolder(
            pid=int(data["pid"]),
            host=str(data["host"]),
            started=str(data.get("started", "?")),
            command=str(data.get("command", "")),
        )
    except (ValueError, KeyError, TypeError):
        return LockHolder(pid=-1, host="?", started="?", command=text.strip()[:80])


def read_holder(run_dir: str | os.PathLike[str]) -> LockHolder | None:
    """The holder written in ``run_dir/.lock`` (None when there is none or it is empty).

    The file says who took the lock last; only :func:`is_locked` says whether a live
    process still holds it.
    """
    try:
        return _parse((Path(run_dir) / LOCK_NAME).read_text())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def is_locked(run_dir: str | os.PathLike[str]) -> bool:
    """Whether a live process holds the lock of ``run_dir`` now."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[RunLock]:
    """Hold ``run_dir``'s exclusive writer lock for the body of the ``with``.

    Creates ``run_dir`` if needed. A lock left by a process that died holding it is taken
    over, with a warning naming that process. When the body raises (a refused run) and the
    directory holds nothing but the lock file this call created, both are removed, and so
    are the parent directories it created: a refused run leaves nothing behind. (The file
    is unlinked while still locked, and a writer that locked a file since unlinked tries
    again, so the removal never lets two writers in.)

    Raises:
        RunLockedError: another live process holds it (its pid and host are named).
        UserError: ``RUN_DIR/.lock`` is a directory.
        OSError: the directory or the lock file cannot be written (naming the path).
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    created = _make_dirs(run_dir)
    fd, made = -1, False
    try:
        fd, made = _lock_file(path, run_dir)
        with naming(path):
            stale = _parse(os.pread(fd, 65536, 0).decode("utf-8", "replace"))
            me = _me()
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me.__dict__) + "\n").encode(), 0)
            os.fsync(fd)
        if stale is not None:
            log.warning(
                "%s: taking over the lock left by %s, which ended without releasing it "
                "(killed or crashed)",
                run_dir,
                stale.describe(),
            )
        yield RunLock(path=path, holder=me, stale=stale)
    except BaseException:
        if fd >= 0 and made and _holds_only_the_lock(run_dir):
            path.unlink()  # still locked: see the docstring
        for directory in created[::-1]:  # each only if empty, the innermost first
            try:
                directory.rmdir()
            except OSError:
                break
        raise
    finally:
        if fd >= 0:
            # Empty the file first: a non-empty file under a free lock means "died holding it".
            try:
                os.ftruncate(fd, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def _make_dirs(run_dir: Path) -> list[Path]:
    """Create ``run_dir`` and its missing parents; the ones this call created, outermost
    first."""
    missing = [d for d in (run_dir, *run_dir.parents) if not d.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def _lock_file(path: Path, run_dir: Path) -> tuple[int, bool]:
    """Open and lock ``path``: ``(fd, whether this call created the file)``.

    Raises:
        RunLockedError: another live process holds it.
        UserError: ``path`` is a directory.
    """
    for _ in range(10):
        try:
            try:
                fd, made = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                fd, made = os.open(path, os.O_RDWR), False
        except IsADirectoryError:
            raise UserError(
                f"{path}: is a directory; expected the run's lock file (a file afa writes "
                "and empties): remove that directory"
            ) from None
        except FileNotFoundError:  # removed between the two opens: try again
            run_dir.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _parse(os.pread(fd, 65536, 0).decode("utf-8", "replace"))
            os.close(fd)
            who = holder.describe() if holder else "a process that has not written its pid yet"
            raise RunLockedError(
                f"{run_dir}: another afa process is writing this run directory ({who}); "
                "wait for it to finish, or stop it and resume with --resume"
            ) from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            return fd, made
        # A refused run removed the file after this call opened it: lock the new one.
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        run_dir.mkdir(parents=True, exist_ok=True)
    raise RunLockedError(f"{path}: the lock file keeps being removed; try again")


def _holds_only_the_lock(run_dir: Path) -> bool:
    try:
        return os.listdir(run_dir) == [LOCK_NAME]
    except OSError:
        return False


@contextmanager
def writer_lock(run_dir: str | os.PathLike[str], *, enabled: bool = True) -> Iterator[None]:
    """What a run's writer holds for its life: :func:`run_lock`, then stale temporaries.

    With the lock held no live writer can own a temporary of the directory, so the
    ``.<name>.<pid>.<random>.tmp`` files left by a writer killed mid-write (a 0-byte
    ``.last.pt.*.tmp`` after ``kill -9``) are removed, and the removal is reported.

    Args:
        run_dir: the run directory (created if needed).
        enabled: False on every rank but rank 0 under ``torchrun`` (one holder per run).
    """
    if not enabled:
        yield
        return
    with run_lock(run_dir):
        removed = remove_stale_temporaries(run_dir)
        if removed:
            log.warning(
                "%s: removed %d temporary file(s) left by an interrupted write: %s",
                run_dir,
                len(removed),
                ", ".join(p.name for p in removed),
            )
        yield
