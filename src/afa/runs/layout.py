"""The run directory: what a run leaves, under which names.

::

    RUN_DIR/config.yaml     the resolved RunConfig, written before step 0
    RUN_DIR/metrics.jsonl   one flat JSON object per epoch
    RUN_DIR/last.pt         the latest complete checkpoint (resume from here)
    RUN_DIR/best.pt         the epoch chosen by the stage's selection metric
    RUN_DIR/eval.json       ``afa eval``
    RUN_DIR/analysis.json   ``afa analyze`` (and its figures)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from afa._io import atomic_write_text
from afa.config import to_dict
from afa.runs.schema import RunConfig

Which = Literal["best", "last"]


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (nothing is created by building one)."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def eval_json(self) -> Path:
        return self.path / "eval.json"

    @property
    def analysis_json(self) -> Path:
        return self.path / "analysis.json"

    def checkpoint(self, which: Which) -> Path:
        """``best.pt`` or ``last.pt``."""
        return self.best if which == "best" else self.last


def checkpoint_path(path: str | Path, which: Which = "best") -> Path:
    """The checkpoint a run directory's ``which`` names, or ``path`` itself if a file."""
    path = Path(path)
    return RunDir(path).checkpoint(which) if path.is_dir() else path


def write_config(cfg: RunConfig, run_dir: str | Path) -> Path:
    """Write the resolved config to ``run_dir/config.yaml`` (atomically)."""
    path = RunDir(Path(run_dir)).config
    return atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


__all__ = ["RunDir", "Which", "checkpoint_path", "write_config"]
