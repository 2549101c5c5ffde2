"""``afa eval``: evaluate a trained run under its own threat model and write eval.json."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from afa.data import Splits, load_splits
from afa.evaluation.robust import EvalResult, evaluate, format_table, write_eval_json
from afa.training.plan import adversarial_epochs, load_trained, resolve_device

log = logging.getLogger("afa")


def evaluate_run(
    path: Path,
    *,
    which: Literal["best", "last"] = "best",
    ema: bool | None = None,
    n_examples: int | None = None,
    batch_size: int | None = None,
    attacks: Sequence[str] | None = None,
    threat_overrides: dict[str, Any] | None = None,
    device: str = "auto",
    seed: int | None = None,
    sanity: bool = True,
    splits: Splits | None = None,
) -> EvalResult:
    """Evaluate the run's checkpoint on its test set; write ``eval.json`` beside it.

    The threat model is rebuilt from the run's config; every change asked here is
    applied explicitly, logged, and recorded under ``threat_overrides`` in eval.json.
    """
    model, cfg, ckpt_path = load_trained(path, which=which, ema=ema)
    dev = resolve_device(device)
    threat = cfg.threat
    overrides = dict(threat_overrides or {})
    if overrides:
        threat = threat.with_(**overrides)
        log.warning("eval: threat model changed from the run's: %s", overrides)
    splits = splits or load_splits(cfg.data)
    e = cfg.eval
    result = evaluate(
        model.to(dev),
        torch.from_numpy(splits.test.images[:]),
        torch.from_numpy(splits.test.labels[:]),
        threat,
        attacks=list(attacks or e.attacks),
        pgd_steps=e.pgd_steps,
        cw_steps=e.cw_steps,
        batch_size=batch_size or e.batch_size,
        device=dev,
        seed=e.seed if seed is None else seed,
        n_examples=n_examples if n_examples is not None else e.n_examples,
        sanity=sanity,
    )
    out = ckpt_path.parent / "eval.json"
    write_eval_json(
        result,
        out,
        extra={
            "dataset": cfg.data.name,
            "model": cfg.model.name,
            "method": cfg.method_name,
            "checkpoint": str(ckpt_path),
            "which": which,
            "ema": bool(ema)
            if ema is not None
            else cfg.train.ema.use_for_eval and cfg.train.ema.decay > 0,
            "threat_overrides": overrides,
            "adversarial_epochs": adversarial_epochs(cfg),
        },
    )
    print(format_table([(cfg.method_name, result)]))
    print(f"eval.json: {out}")
    return result
