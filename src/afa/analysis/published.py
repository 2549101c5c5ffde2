"""``afa analyze robustbench:NAME@CHECKPOINT``: feature-alignment analysis of a published model.

The same analysis as for a run (:func:`afa.analysis.runs.analyze_run`), under RobustBench's
CIFAR-10 Linf threat model (the schema's default, eps = 8/255), with centroids from the whole
CIFAR-10 training set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from afa.analysis.analyze import analyze, write_analysis
from afa.attacks import ThreatModel
from afa.data import Splits
from afa.evaluation.published import published_data
from afa.models.robustbench import load_published
from afa.runs import resolve_device


def analyze_published(
    spec: str,
    *,
    out_dir: str | Path | None = None,
    data_root: str | Path = "data",
    model_dir: str | Path = "models",
    k: int = 10,
    n_test: int | None = None,
    n_train: int | None = None,
    device: str = "auto",
    figures: bool = True,
    seed: int = 0,
    splits: Splits | None = None,
) -> dict[str, Any]:
    """Analyse ``robustbench:NAME[@CHECKPOINT]``; write analysis.json (default ``runs/NAME``).

    ``n_test``: the first test examples (default all, as ``afa eval`` of a published model);
    ``n_train``: a seeded random subset of the training set for centroids (default all).
    """
    model, entry, ckpt = load_published(spec, model_dir=model_dir)
    dev = resolve_device(device)
    splits = splits or published_data(entry, data_root)
    n = len(splits.test) if n_test is None else min(n_test, len(splits.test))
    result = analyze(
        model.to(dev),
        torch.from_numpy(splits.train.images[:]),
        torch.from_numpy(splits.train.labels[:]),
        torch.from_numpy(splits.test.images[:n]),
        torch.from_numpy(splits.test.labels[:n]),
        ThreatModel(),
        k=k,
        n_train=n_train,
        device=dev,
        seed=seed,
    )
    result["checkpoint"] = str(ckpt)
    result["method"] = "robustbench"
    result["robustbench"] = entry.name
    write_analysis(
        Path(out_dir if out_dir is not None else Path("runs") / entry.name), result, figures=figures
    )
    return result
