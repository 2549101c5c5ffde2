"""The main job on the embedded default data: every method on digits, one report.

Each method trains from its shipped ``digits-<method>`` recipe at the same budget of
adversarial epochs, is evaluated with the run's own threat model (clean, PGD-20 (CE),
AutoAttack) and analysed for feature alignment; ``afa compare`` then writes the report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from afa.analysis.runs import analyze_run
from afa.data import load_splits
from afa.evaluation.runs import evaluate_run
from afa.recipes import resolve_recipe
from afa.report import compare
from afa.training.plan import adversarial_epochs, load_run_config, train_run

log = logging.getLogger("afa")

QUICKSTART_METHODS = ("standard", "pgd-at", "trades", "afa", "afa-trades")


def quickstart(
    out: Path,
    *,
    methods: Sequence[str] | None = None,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Path]:
    """Train, evaluate and analyse each method on digits; write and return the report paths."""
    start = time.perf_counter()
    methods = list(methods or QUICKSTART_METHODS)
    runs = []
    splits = None
    for name in methods:
        cfg = load_run_config(
            resolve_recipe(f"digits-{name}"),
            [f"out_dir={out}", f"name={name}", f"train.seed={seed}", f"device={device}"],
        )
        splits = splits or load_splits(cfg.data)
        log.info(
            "quickstart: %s (%d epochs of adversarial training)", name, adversarial_epochs(cfg)
        )
        train_run(cfg, splits=splits)
        evaluate_run(cfg.run_dir, device=device, seed=seed, splits=splits)
        analyze_run(cfg.run_dir, device=device, splits=splits)
        runs.append(cfg.run_dir)
    paths = compare(runs, out, title="afa quickstart: every method on digits")
    elapsed = time.perf_counter() - start
    print(Path(paths["md"]).read_text())
    print(f"quickstart finished in {elapsed:.0f} s; report: {paths['html']}")
    return paths
