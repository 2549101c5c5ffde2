"""``afa analyze``: feature-alignment analysis of a trained run, written beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from afa.analysis.analyze import analyze, write_analysis
from afa.data import Splits, load_splits
from afa.runs import load_trained, resolve_device


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
    """Analyse the run's checkpoint under the run's own threat model; write analysis.json.

    ``n_test``: the first test examples (default: the run's ``eval.n_examples``, as
    ``afa eval``); ``n_train``: a seeded random
    subset of the training set for centroids and neighbours (default all).
    """
    model, cfg, ckpt_path = load_trained(path, which=which)
    dev = resolve_device(device)
    splits = splits or load_splits(cfg.data)
    # The first n_test examples, as `afa eval` takes them, so the two reports agree.
    n_test = cfg.eval.n_examples if n_test is None else n_test
    n = len(splits.test) if n_test is None else min(n_test, len(splits.test))
    result = analyze(
        model.to(dev),
        torch.from_numpy(splits.train.images[:]),
        torch.from_numpy(splits.train.labels[:]),
        torch.from_numpy(splits.test.images[:n]),
        torch.from_numpy(splits.test.labels[:n]),
        # The adversary of `afa eval`'s PGD (CE) column, so "under PGD" means one attack.
        cfg.threat.with_(steps=cfg.eval.pgd_steps, bn_mode="eval"),
        k=k,
        n_train=n_train,
        device=dev,
        seed=seed,
    )
    result["checkpoint"] = str(ckpt_path)
    result["method"] = cfg.method_name
    write_analysis(ckpt_path.parent, result, figures=figures)
    return result
