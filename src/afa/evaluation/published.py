"""``afa eval robustbench:NAME@CHECKPOINT``: evaluate a published RobustBench model like a run.

A published model has no afa run behind it, so its evaluation settings are the schema's
defaults: RobustBench's CIFAR-10 Linf threat model (eps = 8/255; PGD step 2/255), the
default attacks of ``eval`` (PGD-20 (CE), PGD-30 (CW margin), AutoAttack) and the CIFAR-10
test set read through the usual data config (``data.name: cifar10`` under ``data_root``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from afa.attacks import ThreatModel
from afa.data import DataConfig, Splits, load_splits
from afa.data.pipeline.testset import load_test_data, own_test_record, test_only_splits
from afa.evaluation.result import EvalResult
from afa.evaluation.runs import check_overrides, evaluate_and_record
from afa.evaluation.shift import ShiftRequest
from afa.models.robustbench import PublishedModel, load_published
from afa.runs import EvalConfig

log = logging.getLogger("afa")


def published_data(entry: PublishedModel, data_root: str | Path) -> Splits:
    """The dataset a published model was trained on (the whole training set, no validation
    split: centroids of ``afa analyze`` use all of it)."""
    return load_splits(DataConfig(name=entry.dataset, root=str(data_root), val_size=0))


def evaluate_published(
    spec: str,
    *,
    out_dir: str | Path | None = None,
    data_root: str | Path = "data",
    model_dir: str | Path = "models",
    n_examples: int | None = None,
    batch_size: int | None = None,
    attacks: Sequence[str] | None = None,
    threat_overrides: dict[str, Any] | None = None,
    steps: int | None = None,
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str = "auto",
    seed: int | None = None,
    sanity: bool = True,
    splits: Splits | None = None,
    shift: ShiftRequest | None = None,
    test_data: DataConfig | None = None,
) -> tuple[EvalResult, Path]:
    """Evaluate ``robustbench:NAME[@CHECKPOINT]`` on its test set; write ``eval.json``.

    Args:
        spec: ``robustbench:NAME@CHECKPOINT`` (a local file) or ``robustbench:NAME``
            (``<model_dir>/cifar10/Linf/NAME.pt``, downloaded when absent).
        out_dir: where eval.json goes (default ``runs/NAME``), so that ``afa compare`` and
            ``afa export`` read it like a run's.
        data_root: the data config's ``root`` holding CIFAR-10.
        threat_overrides, steps, attack_options: changes to the default threat model,
            the attacks' steps and the attacks' own settings, applied and recorded as
            ``afa eval`` does for a run.
        test_data: another test set (its test split), checked against the model's dataset
            (read from ``data_root`` for its facts).
        Other arguments as :func:`afa.evaluation.runs.evaluate_run`.

    Returns:
        The result and the path of the eval.json written.

    Raises:
        ConfigError: an unknown model or override. CheckpointError: see
            :func:`afa.models.robustbench.load_robustbench`.
    """
    check_overrides(threat_overrides)
    if shift and shift.shift_root is None:
        shift = dataclasses.replace(shift, shift_root=str(data_root))
    model, entry, ckpt = load_published(spec, model_dir=model_dir)
    out = Path(out_dir if out_dir is not None else Path("runs") / entry.name) / "eval.json"
    splits = splits or published_data(entry, data_root)
    if test_data is not None:
        chosen = load_test_data(test_data, splits.info)
        splits, tested = test_only_splits(chosen.data, splits.info), chosen.record
    else:
        own = DataConfig(name=entry.dataset, root=str(data_root))
        tested = own_test_record(own, splits.info, splits.test)
    return evaluate_and_record(
        model,
        splits,
        ThreatModel(),
        EvalConfig(),
        out,
        {
            "dataset": entry.dataset,
            "model": entry.model,
            "method": "robustbench",
            "checkpoint": str(ckpt),
            "robustbench": {
                "name": entry.name,
                "architecture": entry.architecture,
                "threat": entry.threat,
                "model_options": dict(entry.options),
            },
            "test_data": tested,
        },
        threat_overrides=threat_overrides,
        steps=steps,
        attack_options=attack_options,
        attacks=attacks,
        n_examples=n_examples,
        batch_size=batch_size,
        device=device,
        seed=seed,
        sanity=sanity,
        shift=shift,
    )
