"""``afa analyze``: feature-alignment analysis of a trained run, written beside it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from afa.analysis.analyze import analyze, write_analysis
from afa.attacks import ThreatModel
from afa.data import DataConfig, DatasetInfo, Splits, as_tensor, load_splits
from afa.data.pipeline.testset import load_test_data, own_test_record
from afa.models import Classifier
from afa.runs import EvalConfig, load_trained_run, resolve_device


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
    test_data: DataConfig | None = None,
) -> dict[str, Any]:
    """Analyse the run's checkpoint under the run's own threat model; write analysis.json.

    ``n_test``: the first test examples (default: the run's ``eval.n_examples``, as
    ``afa eval``); ``n_train``: a seeded random
    subset of the training set for centroids and neighbours (default all).
    ``test_data``: analyse the test split of that data instead of the run's own (checked
    against the model first; centroids still come from the run's training set); the test
    set is recorded under ``test_data`` either way.
    """
    run = load_trained_run(path, which=which)
    model, cfg, ckpt_path = run.model, run.config, run.checkpoint
    splits, tested = with_test_data(splits or load_splits(cfg.data), cfg.data, test_data, run.info)
    return analyze_and_record(
        model,
        splits,
        cfg.threat,
        cfg.eval,
        ckpt_path.parent,
        {
            "checkpoint": str(ckpt_path),
            # epoch, step and sha256: `afa compare` tells when the run has moved on since
            "checkpoint_identity": run.identity.record() if run.identity else None,
            "method": cfg.method_name,
            "test_data": tested,
        },
        k=k,
        n_test=n_test,
        n_train=n_train,
        device=device,
        figures=figures,
        seed=seed,
    )


def with_test_data(
    splits: Splits, data: DataConfig, test_data: DataConfig | None, info: DatasetInfo
) -> tuple[Splits, dict[str, Any]]:
    """``splits`` with the test split of ``test_data`` (checked against ``info``, the
    model's facts) in place of its own, and the record of the test set analysed."""
    if test_data is None:
        return splits, own_test_record(data, splits.info, splits.test)
    chosen = load_test_data(test_data, info)
    return dataclasses.replace(splits, test=chosen.data), chosen.record


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
        as_tensor(splits.train.images[:]),
        as_tensor(splits.train.labels[:]),
        as_tensor(splits.test.images[:n]),
        as_tensor(splits.test.labels[:n]),
        threat.with_(steps=e.pgd_steps, bn_mode="eval"),
        k=k,
        n_train=n_train,
        device=dev,
        seed=seed,
    )
    result.update(extra)
    write_analysis(out_dir, result, figures=figures)
    return result
