"""``afa analyze robustbench:NAME@CHECKPOINT``: feature-alignment analysis of a published model.

The same analysis as for a run (:func:`afa.analysis.runs.analyze_run`), under RobustBench's
CIFAR-10 Linf threat model (the schema's default, eps = 8/255), with centroids from the whole
CIFAR-10 training set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from afa.analysis.runs import analyze_and_record, with_test_data
from afa.attacks import ThreatModel
from afa.data import DataConfig, Splits
from afa.evaluation.published import published_data
from afa.models.robustbench import load_published
from afa.runs import EvalConfig


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
    test_data: DataConfig | None = None,
) -> dict[str, Any]:
    """Analyse ``robustbench:NAME[@CHECKPOINT]``; write analysis.json (default ``runs/NAME``).

    ``n_test``: the first test examples (default all, as ``afa eval`` of a published model);
    ``n_train``: a seeded random subset of the training set for centroids (default all);
    ``test_data``: another test set, as for a run.
    """
    model, entry, ckpt = load_published(spec, model_dir=model_dir)
    splits = splits or published_data(entry, data_root)
    own = DataConfig(name=entry.dataset, root=str(data_root))
    splits, tested = with_test_data(splits, own, test_data, splits.info)
    return analyze_and_record(
        model,
        splits,
        ThreatModel(),
        EvalConfig(),
        Path(out_dir if out_dir is not None else Path("runs") / entry.name),
        {
            "checkpoint": str(ckpt),
            "method": "robustbench",
            "robustbench": entry.name,
            "test_data": tested,
        },
        k=k,
        n_test=n_test,
        n_train=n_train,
        device=device,
        figures=figures,
        seed=seed,
    )
