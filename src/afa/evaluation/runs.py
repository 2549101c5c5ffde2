"""``afa eval``: evaluate a trained run under its own threat model and write eval.json."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from afa.attacks import ThreatModel
from afa.data import Splits, load_splits
from afa.errors import ConfigError
from afa.evaluation.record import write_eval_json
from afa.evaluation.robust import EvalResult, evaluate
from afa.evaluation.shift import ShiftRequest, check_shift_request, evaluate_shift
from afa.runs import EvalConfig, adversarial_epochs, load_trained, resolve_device

log = logging.getLogger("afa")

OVERRIDABLE = frozenset({"eps", "step_size", "restarts", "random_start"})
"""Threat-model fields ``afa eval`` may change; ``steps`` is per attack (``steps=``) and
BN is always in eval mode at evaluation."""


def evaluate_run(
    path: Path,
    *,
    which: Literal["best", "last"] = "best",
    ema: bool | None = None,
    n_examples: int | None = None,
    batch_size: int | None = None,
    attacks: Sequence[str] | None = None,
    threat_overrides: dict[str, Any] | None = None,
    steps: int | None = None,
    device: str = "auto",
    seed: int | None = None,
    sanity: bool = True,
    splits: Splits | None = None,
    out: str | Path | None = None,
    shift: ShiftRequest | None = None,
) -> tuple[EvalResult, Path]:
    """Evaluate the run's checkpoint on its test set; write ``eval.json`` beside it.

    The threat model is rebuilt from the run's config. Every change asked here takes
    effect and is recorded: ``threat_overrides`` (``eps``, ``step_size``, ``restarts``,
    ``random_start``) replace those fields for every attack; ``steps`` replaces the steps
    of every PGD attack (``eval.pgd_steps`` and ``eval.cw_steps``) and of the sanity
    checks. eval.json holds each attack's full settings, the run's own threat model under
    ``training_threat_model`` and the changes under ``threat_overrides``. ``out`` writes
    the record elsewhere than ``eval.json`` (e.g. a second evaluation kept beside the first).
    ``shift`` adds accuracy under distribution shift (CIFAR-10.1, common corruptions) on the
    same first test examples, recorded under ``shift`` (:mod:`afa.evaluation.shift`); its
    files are looked for in the run's ``data.root`` unless it names a folder.

    Returns:
        The result and the path of the eval.json written.
    """
    check_overrides(threat_overrides)
    model, cfg, ckpt_path = load_trained(path, which=which, ema=ema)
    if shift and shift.shift_root is None:
        shift = dataclasses.replace(shift, shift_root=cfg.data.root)
    return evaluate_and_record(
        model,
        splits or load_splits(cfg.data),
        cfg.threat,
        cfg.eval,
        Path(out) if out is not None else ckpt_path.parent / "eval.json",
        {
            "dataset": cfg.data.name,
            "model": cfg.model.name,
            "method": cfg.method_name,
            "checkpoint": str(ckpt_path),
            "which": which,
            "ema": cfg.train.ema.evaluated(ema),
            "training_threat_model": dataclasses.asdict(cfg.threat),
            "adversarial_epochs": adversarial_epochs(cfg),
            "bn_branch": cfg.model.bn_branch if cfg.model.dual_bn else None,
        },
        threat_overrides=threat_overrides,
        steps=steps,
        attacks=attacks,
        n_examples=n_examples,
        batch_size=batch_size,
        device=device,
        seed=seed,
        sanity=sanity,
        shift=shift,
    )


def check_overrides(threat_overrides: Mapping[str, Any] | None) -> None:
    """Refuse a threat-model change ``afa eval`` cannot make, before anything is loaded."""
    bad = sorted(set(threat_overrides or {}) - OVERRIDABLE)
    if bad:
        raise ConfigError(f"eval: cannot override {bad}; choose from {sorted(OVERRIDABLE)}")


def evaluate_and_record(
    model: nn.Module,
    splits: Splits,
    threat: ThreatModel,
    e: EvalConfig,
    out: Path,
    extra: Mapping[str, Any],
    *,
    threat_overrides: Mapping[str, Any] | None = None,
    steps: int | None = None,
    attacks: Sequence[str] | None = None,
    n_examples: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    seed: int | None = None,
    sanity: bool = True,
    shift: ShiftRequest | None = None,
) -> tuple[EvalResult, Path]:
    """Evaluate ``model`` on ``splits.test`` and write the record to ``out``.

    The one body of ``afa eval`` for runs and published models: ``threat`` and ``e`` are
    the model's own settings, every argument given here overrides them (``steps`` those
    of every PGD attack), and the changes are logged and recorded under
    ``threat_overrides`` beside ``extra``.
    """
    check_overrides(threat_overrides)
    if shift:
        check_shift_request(
            splits.info,
            shift=shift.shift,
            corruptions=shift.corruptions,
            corruption_names=shift.corruption_names,
            severities=shift.severities,
        )
    overrides = dict(threat_overrides or {})
    threat = threat.with_(**overrides)
    if steps is not None:
        overrides["steps"] = steps
    if overrides:
        log.warning("eval: settings changed from the model's own: %s", overrides)
    dev = resolve_device(device)
    n = n_examples if n_examples is not None else e.n_examples
    seed = e.seed if seed is None else seed
    result = evaluate(
        model.to(dev),
        torch.from_numpy(splits.test.images[:]),
        torch.from_numpy(splits.test.labels[:]),
        threat,
        attacks=list(attacks or e.attacks),
        pgd_steps=e.pgd_steps if steps is None else steps,
        cw_steps=e.cw_steps if steps is None else steps,
        batch_size=batch_size or e.batch_size,
        device=dev,
        seed=seed,
        n_examples=n,
        sanity=sanity,
    )
    extra = {**extra, "threat_overrides": overrides}
    if shift:
        extra["shift"] = evaluate_shift(
            model,
            splits.test,
            splits.info,
            shift=shift.shift,
            shift_root=shift.shift_root or "data",
            corruptions=shift.corruptions,
            corruption_names=shift.corruption_names,
            severities=shift.severities,
            n_examples=n,
            batch_size=batch_size or e.batch_size,
            device=dev,
            seed=seed,
        )
    write_eval_json(result, out, extra=extra)
    return result, out
