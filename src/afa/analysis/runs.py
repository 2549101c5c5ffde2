"""``afa analyze``: feature-alignment analysis of a trained run, written beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from afa.analysis.analyze import analyze, write_analysis
from afa.data import Splits, load_splits
from afa.training.plan import load_trained, resolve_device


def analyze_run(
    path: Path,
    *,
    which: Literal["best", "last"] = "best",
    k: int = 10,
    n_test: int | None = None,
    n_train: int | None = None,
    device: str = "auto",
    figures: bool = True,
    seed: int = 0,
    splits: Splits | None = None,
) -> dict[str, Any]:
    """Analyse the run's checkpoint under the run's own threat model; write analysis.json."""
    model, cfg, ckpt_path = load_trained(path, which=which)
    dev = resolve_device(device)
    splits = splits or load_splits(cfg.data)
    result = analyze(
        model.to(dev),
        torch.from_numpy(splits.train.images[:]),
        torch.from_numpy(splits.train.labels[:]),
        torch.from_numpy(splits.test.images[:]),
        torch.from_numpy(splits.test.labels[:]),
        cfg.threat,
        k=k,
        n_test=n_test,
        n_train=n_train,
        device=dev,
        seed=seed,
    )
    result["checkpoint"] = str(ckpt_path)
    result["method"] = cfg.method_name
    write_analysis(ckpt_path.parent, result, figures=figures)
    return result
