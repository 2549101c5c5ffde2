"""File writing the project does in one way: atomic writes, JSON with numbers as numbers.

Every file a run leaves (config.yaml, metrics.jsonl, checkpoints, eval.json,
analysis.json, the report, a download) is written to a temporary file in the same
directory, flushed and fsynced, then renamed over its target (``os.replace`` is atomic),
so a reader or a killed process never sees a torn file. Temporaries are named
``.<name>.<pid>.<random>.tmp``; :func:`remove_stale_temporaries` recognises them. A write
that fails (a full disk, a read-only directory) raises an ``OSError`` naming the file it
was writing (:func:`naming`), never its temporary, which the command line prints as one line.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from afa.errors import ConfigError

TMP_SUFFIX = ".tmp"

#: The longest name a run directory or an output file may have: file systems allow 255
#: bytes per name, and the name is extended (``RUN-slf``, ``.NAME.<pid>.<random>.tmp``).
MAX_NAME_BYTES = 200


def tmp_name(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (hidden, unique per process and call)."""
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"


def fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """An ``OSError`` raised in the body names ``path`` when it names no file or a
    temporary of ``path`` (``f.write`` on a full disk names nothing), and is marked as a
    failed write, so the one line the command line prints says which file could not be
    written (``afa.errors.os_error_line``)."""
    try:
        yield
    except OSError as exc:
        named = exc.filename
        if named is None or Path(named).name.startswith(f".{Path(path).name}."):
            error = OSError(exc.errno, exc.strerror or str(exc), os.fspath(path))
            error.writing = True  # type: ignore[attr-defined]  # read by os_error_line
            raise error from exc
        target = Path(path)
        if Path(os.fsdecode(named)) in (target, *target.parents):  # making its directory
            exc.writing = True  # type: ignore[attr-defined]
        raise


def check_file_name(name: str, key: str) -> str:
    """``name`` if it can name one file or directory inside another, else a one-line error.

    Refused: an empty name, ``.`` and ``..``, a path separator (the file would land
    outside its directory), a NUL byte, and more than :data:`MAX_NAME_BYTES` bytes.

    Raises:
        ConfigError: naming ``key`` and what was expected.
    """
    shown = name if len(name) <= 60 else f"{name[:57]}..."
    expected = "expected a plain file name"
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ConfigError(f"{key}={shown!r}: {expected} (no '/', no '..'), such as 'cifar10-afa'")
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        raise ConfigError(
            f"{key}={shown!r}: {expected} of at most {MAX_NAME_BYTES} bytes, got {size}"
        )
    return name


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the target; its directory is created if missing.
        mode: ``"w"`` (text, UTF-8) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with naming(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, mode, encoding="utf-8" if mode == "w" else None) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: non-finite floats become ``None`` (JSON has no NaN), numpy
    and 0-d torch scalars become Python numbers, tuples lists, paths strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def dumps_json(value: Any, *, indent: int | None = 2) -> str:
    """:func:`jsonable` then ``json.dumps`` with ``allow_nan=False``."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
    """Write ``value`` as indented JSON (numbers as numbers, NaN as null), atomically."""
    return atomic_write_text(path, dumps_json(value) + "\n")


def read_jsonl(
    path: str | os.PathLike[str], on_bad_line: Callable[[int, str], None] | None = None
) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file, one per non-empty line ([] if it is missing).

    Args:
        path: the file.
        on_bad_line: called with (line number, text) for a line that is not a JSON object;
            without it such a line raises ``ValueError`` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            if on_bad_line is None:
                raise ValueError(f"{path}: line {number} is not a JSON object")
            on_bad_line(number, line)
            continue
        rows.append(row)
    return rows


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries of :func:`tmp_name` left in ``directory`` by a killed writer.

    Only hidden files ending in ``.tmp`` are touched; call it only while holding the
    directory's writer lock (no live writer can own them then).

    Returns:
        The removed paths.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for p in directory.iterdir():
        if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file():
            p.unlink()
            removed.append(p)
    return removed
