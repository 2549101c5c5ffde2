"""What a run reports: ``metrics.jsonl`` (one flat JSON object per epoch) and progress.

Progress goes through Python logging (the ``afa`` logger tree) as plain lines, or a tqdm
bar per epoch when stderr is a terminal. Only rank 0 writes or displays anything.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from afa._io import atomic_write_text, dumps_json, naming, read_jsonl

log = logging.getLogger("afa.training")


class MetricsWriter:
    """Appends one flat JSON object per line to ``path`` (flushed and fsynced per write).

    Args:
        path: ``run_dir/metrics.jsonl``.
        enabled: False on ranks other than 0 (every method is then a no-op).
    """

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        line = dumps_json(dict(record), indent=None)
        with naming(self.path), open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        """The records written so far (empty if the file does not exist)."""
        return read_metrics(self.path)

    def keep(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """Rewrite the file (atomically) keeping only the records ``predicate`` accepts.

        A resumed run drops the records written after its checkpoint, so an epoch that
        is trained again does not appear twice.
        """
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in self.read() if predicate(r)]
        atomic_write_text(self.path, "".join(dumps_json(r, indent=None) + "\n" for r in kept))

    def reset(self) -> None:
        """Start an empty file (a fresh run in a directory with an old log)."""
        if self.enabled and self.path.exists():
            self.path.unlink()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (``afa._io.read_jsonl``; [] if missing)."""
    return read_jsonl(path)


def format_values(values: Mapping[str, float]) -> str:
    """``loss 1.2346 adv_acc 0.4500`` (4 significant figures for small values)."""
    return " ".join(f"{k} {v:.4g}" for k, v in values.items())


class Progress:
    """Per-epoch progress: a tqdm bar on a terminal, else a log line every ``log_every`` steps.

    ``step`` is called after every optimizer step; the running averages it shows are only
    computed (which synchronises with the device) when ``due(step)``.

    Args:
        desc: e.g. ``"train 3/10"``.
        total: steps in the epoch.
        log_every: steps between refreshes.
        enabled: False on ranks other than 0.
        bar: force the bar on/off (default: when stderr is a TTY).
        log_last: without a bar, also log the epoch's last step (False when the caller
            logs its own line for the finished epoch, as ``fit`` does).
    """

    def __init__(
        self,
        desc: str,
        total: int,
        *,
        log_every: int,
        enabled: bool = True,
        bar: bool | None = None,
        log_last: bool = True,
    ) -> None:
        self.desc = desc
        self.log_last = log_last
        self.total = total
        self.log_every = max(1, log_every)
        self.enabled = enabled
        self._bar = None
        if enabled and (sys.stderr.isatty() if bar is None else bar):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    def due(self, step: int) -> bool:
        """Whether step ``step`` (1-based) shows values."""
        last = step == self.total and (self.log_last or self._bar is not None)
        return self.enabled and (step % self.log_every == 0 or last)

    def step(self, step: int, values: Mapping[str, float] | None) -> None:
        """After step ``step`` (1-based) of ``total``; ``values`` when ``due(step)``."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
            if values is not None:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
        elif values is not None:
            log.info("%s step %d/%d %s", self.desc, step, self.total, format_values(values))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


__all__ = ["MetricsWriter", "Progress", "format_values", "read_metrics"]
