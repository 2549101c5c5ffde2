"""``afa analyze``: feature-alignment analysis of a trained run, written beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from afa.analysis.analyze import analyze, write_analysis
from afa.attacks import ThreatModel
from afa.data import Splits, load_splits
from afa.models import Classifier
from afa.runs import EvalConfig, load_trained, resolve_device


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
    return analyze_and_record(
        model,
        splits or load_splits(cfg.data),
        cfg.threat,
        cfg.eval,
        ckpt_path.parent,
        {"checkpoint": str(ckpt_path), "method": cfg.method_name},
        k=k,
        n_test=n_test,
        n_train=n_train,
        device=device,
        figures=figures,
        seed=seed,
    )


def analyze_and_record(
    model: Classifier,
    splits: Splits,
    threat: ThreatModel,
    e: EvalConfig,
    out_dir: Path,
    extra: dict[str, Any],
    *,
    k: int = 10,
    n_test: int | None = None,
    n_train: int | None = None,
    device: str = "auto",
    figures: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """The one body of ``afa analyze`` for runs and published models.

    The test examples are the first ``n_test`` (default ``e.n_examples``), as ``afa eval``
    takes them, and the adversary is ``afa eval``'s PGD (CE) column (``e.pgd_steps`` steps,
    BN in eval mode), so the two reports describe the same points under the same attack.
    ``extra`` is merged into analysis.json, written with its figures into ``out_dir``.
    """
    n_test = e.n_examples if n_test is None else n_test
    n = len(splits.test) if n_test is None else min(n_test, len(splits.test))
    dev = resolve_device(device)
    result = analyze(
        model.to(dev),
        torch.from_numpy(splits.train.images[:]),
        torch.from_numpy(splits.train.labels[:]),
        torch.from_numpy(splits.test.images[:n]),
        torch.from_numpy(splits.test.labels[:n]),
        threat.with_(steps=e.pgd_steps, bn_mode="eval"),
        k=k,
        n_train=n_train,
        device=dev,
        seed=seed,
    )
    result.update(extra)
    write_analysis(out_dir, result, figures=figures)
    return result
