"""``afa eval``: evaluate a trained run under its own threat model and write eval.json."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from torch import nn

from afa.attacks import ThreatModel
from afa.data import DataConfig, Splits, as_tensor, load_splits
from afa.data.pipeline.testset import load_test_data, own_test_record, test_only_splits
from afa.errors import ConfigError, NonFiniteError
from afa.evaluation.attacks import OPTIONS_KEY, EvalSettings
from afa.evaluation.record import write_eval_json
from afa.evaluation.result import EvalResult
from afa.evaluation.robust import evaluate
from afa.evaluation.shift import ShiftRequest, check_shift_request, evaluate_shift
from afa.runs import EvalConfig, adversarial_epochs, load_trained_run, resolve_device

log = logging.getLogger("afa")

OVERRIDABLE = frozenset({"eps", "step_size", "restarts", "random_start"})
"""Threat-model fields ``afa eval`` may change; ``steps`` is per attack (``steps=``) and
BN is always in eval mode at evaluation."""

CONFIG_STEPS = {"pgd": "pgd_steps", "cw": "cw_steps"}
"""The two PGD attacks' ``steps``, spelled in a run's ``eval`` section as they always were;
every other setting of an attack is ``eval.attack_options.<attack>.<key>``."""


def eval_settings(
    e: EvalConfig,
    *,
    steps: int | None = None,
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
) -> EvalSettings:
    """The evaluation attacks' settings of a run's ``eval`` section, with the command
    line's changes over them: ``attack_options`` (``--attack-option``) over the section's
    own per attack and key, ``steps`` (``--steps``) over every attack's ``steps``.

    Raises:
        ConfigError: an unknown attack, setting or value type; or the section setting
            ``pgd``'s or ``cw``'s steps under ``attack_options`` (their key is
            ``eval.pgd_steps`` / ``eval.cw_steps``).
    """
    options: dict[str, dict[str, Any]] = {
        name: {"steps": getattr(e, key)} for name, key in CONFIG_STEPS.items()
    }
    for name, given in e.attack_options.items():
        if name in CONFIG_STEPS and "steps" in (given or {}):
            raise ConfigError(f"{OPTIONS_KEY}.{name}.steps: set eval.{CONFIG_STEPS[name]} instead")
        options[name] = {**options.get(name, {}), **(given or {})}
    for name, changes in (attack_options or {}).items():
        if not isinstance(changes, Mapping):
            raise ConfigError(f"{OPTIONS_KEY}.{name}: expected a mapping, got {changes!r}")
        options[name] = {**options.get(name, {}), **changes}
    return EvalSettings(
        options,
        steps=steps,
        batch_size=batch_size or e.batch_size,
        seed=e.seed if seed is None else seed,
    )


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
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str = "auto",
    seed: int | None = None,
    sanity: bool = True,
    splits: Splits | None = None,
    out: str | Path | None = None,
    shift: ShiftRequest | None = None,
    test_data: DataConfig | None = None,
) -> tuple[EvalResult, Path]:
    """Evaluate the run's checkpoint on its test set; write ``eval.json`` beside it.

    The threat model is rebuilt from the run's config. Every change asked here takes
    effect and is recorded: ``threat_overrides`` (``eps``, ``step_size``, ``restarts``,
    ``random_start``) replace those fields for every attack; ``steps`` replaces the steps
    of every attack that has them (``eval.pgd_steps`` and ``eval.cw_steps`` for the PGD
    attacks) and of the sanity checks; ``attack_options`` (``{attack: {setting: value}}``)
    replace those settings of those attacks (:func:`eval_settings`). eval.json holds each
    attack's full settings, every attack's own settings under ``settings``, the run's own
    threat model under ``training_threat_model`` and the changes under ``threat_overrides``. ``out`` writes
    the record elsewhere than ``eval.json`` (e.g. a second evaluation kept beside the first).
    ``shift`` adds accuracy under distribution shift (CIFAR-10.1, common corruptions) on the
    same first test examples, recorded under ``shift`` (:mod:`afa.evaluation.shift`); its
    files are looked for in the run's ``data.root`` unless it names a folder.
    ``test_data`` evaluates on the test split of that data instead of the run's own
    (:mod:`afa.data.pipeline.testset`), checked against the model before any attack runs; the
    test set is recorded under ``test_data`` either way.

    Returns:
        The result and the path of the eval.json written.
    """
    check_overrides(threat_overrides)
    run = load_trained_run(path, which=which, ema=ema)
    model, cfg, ckpt_path = run.model, run.config, run.checkpoint
    if shift and shift.shift_root is None:
        shift = dataclasses.replace(shift, shift_root=cfg.data.root)
    if test_data is not None:
        chosen = load_test_data(test_data, run.info)
        splits, tested = test_only_splits(chosen.data, run.info), chosen.record
    else:
        splits = splits or load_splits(cfg.data)
        tested = own_test_record(cfg.data, splits.info, splits.test)
    return evaluate_and_record(
        model,
        splits,
        cfg.threat,
        cfg.eval,
        Path(out) if out is not None else ckpt_path.parent / "eval.json",
        {
            "dataset": cfg.data.name,
            "model": cfg.model.name,
            "method": cfg.method_name,
            "checkpoint": str(ckpt_path),
            # epoch, step and sha256: `afa compare` and `afa export` tell a later best.pt
            "checkpoint_identity": run.identity.record() if run.identity else None,
            "which": which,
            "ema": cfg.train.ema.evaluated(ema),
            "training_threat_model": dataclasses.asdict(cfg.threat),
            "adversarial_epochs": adversarial_epochs(cfg),
            "bn_branch": cfg.model.bn_branch if cfg.model.dual_bn else None,
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
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
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
    of every attack that has steps, ``attack_options`` the settings named), and the
    changes are logged and recorded under ``threat_overrides`` beside ``extra``.
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
    settings = eval_settings(
        e, steps=steps, attack_options=attack_options, batch_size=batch_size, seed=seed
    )
    if steps is not None:
        overrides["steps"] = steps
    if attack_options:
        overrides["attack_options"] = {k: dict(v) for k, v in attack_options.items()}
    if overrides:
        log.warning("eval: settings changed from the model's own: %s", overrides)
    dev = resolve_device(device)
    n = n_examples if n_examples is not None else e.n_examples
    # Only the examples evaluated are read (and copied, from a read-only memory map).
    k = n if n is not None and n >= 1 else len(splits.test)
    try:
        result = evaluate(
            model.to(dev),
            as_tensor(splits.test.images[:k]),
            as_tensor(splits.test.labels[:k]),
            threat,
            attacks=list(attacks or e.attacks),
            settings=settings,
            device=dev,
            n_examples=n,
            sanity=sanity,
        )
    except NonFiniteError as exc:  # name the model's file: the error is the checkpoint's
        raise NonFiniteError(f"{extra.get('checkpoint', 'model')}: {exc}") from None
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
            batch_size=settings.batch_size,
            device=dev,
            seed=settings.seed,
        )
    write_eval_json(result, out, extra=extra)
    return result, out
