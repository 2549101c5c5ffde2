"""The main job on the embedded default data: every method on digits, one report.

Each method trains from its shipped ``digits-<method>`` recipe at the same budget of
adversarial epochs, is evaluated with the run's own threat model (clean, PGD-20 (CE),
AutoAttack) and analysed for feature alignment; ``afa compare`` then writes the report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from afa._registry import unknown_name_message
from afa.analysis.runs import analyze_run
from afa.config import load_yaml
from afa.data import load_splits
from afa.errors import ConfigError
from afa.evaluation.runs import evaluate_run
from afa.recipes import resolve_recipe
from afa.report import compare
from afa.training.plan import adversarial_epochs, load_run_config, train_run

log = logging.getLogger("afa")

QUICKSTART_METHODS = ("standard", "pgd-at", "trades", "afa", "afa-trades")


def check_quickstart_args(
    *,
    methods: Sequence[str] | None = None,
    epochs: int | None = None,
    eval_examples: int | None = None,
    attacks: Sequence[str] | None = None,
) -> None:
    """Refuse a bad quickstart argument before the first method trains.

    Raises:
        ConfigError: naming the option and the value (an unknown method or attack, a
            repeated one, a count below 1).
    """
    from afa.evaluation.attacks import EVAL_ATTACKS

    for option, value in (("--epochs", epochs), ("--eval-examples", eval_examples)):
        if value is not None and value < 1:
            raise ConfigError(f"{option}: expected a whole number >= 1, got {value}")
    checks = (
        ("--methods", "method", methods, QUICKSTART_METHODS),
        ("--attacks", "attack", attacks, EVAL_ATTACKS.names()),
    )
    for option, kind, names, known in checks:
        if names is None:
            continue
        if not names or any(not n for n in names):
            raise ConfigError(f"{option}: expected a comma list of names, got {','.join(names)!r}")
        for name in names:
            if name not in known:
                raise ConfigError(f"{option}: " + unknown_name_message(kind, name, known))
        if len(set(names)) != len(names):
            raise ConfigError(f"{option}: each name once, got {','.join(names)!r}")


def quickstart(
    out: Path,
    *,
    methods: Sequence[str] | None = None,
    device: str = "auto",
    seed: int = 0,
    epochs: int | None = None,
    eval_examples: int | None = None,
    attacks: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Train, evaluate and analyse each method on digits; write and return the report paths.

    ``epochs`` replaces every method's adversarial budget (a pre-training method's
    classifier stage gets half of it); ``eval_examples`` and ``attacks`` shrink the
    evaluation. They exist for smoke runs: the defaults are the documented quickstart.
    """
    start = time.perf_counter()
    methods = list(methods or QUICKSTART_METHODS)
    runs = []
    splits = None
    for name in methods:
        path = resolve_recipe(f"digits-{name}")
        overrides = [f"out_dir={out}", f"name={name}", f"train.seed={seed}", f"device={device}"]
        if epochs is not None:
            overrides.append(f"train.epochs={epochs}")
            if "classifier" in load_yaml(path):
                overrides.append(f"classifier.epochs={max(1, epochs // 2)}")
        if eval_examples is not None:
            overrides.append(f"eval.n_examples={eval_examples}")
        if attacks is not None:
            overrides.append(f"eval.attacks=[{','.join(attacks)}]")
        cfg = load_run_config(path, overrides)
        splits = splits or load_splits(cfg.data)
        log.info(
            "quickstart: %s (%d epochs of adversarial training)", name, adversarial_epochs(cfg)
        )
        train_run(cfg, splits=splits)
        evaluate_run(cfg.run_dir, device=device, seed=seed, splits=splits)
        analyze_run(cfg.run_dir, device=device, splits=splits, n_test=eval_examples)
        runs.append(cfg.run_dir)
    paths = compare(runs, out, title="afa quickstart: every method on digits")
    elapsed = time.perf_counter() - start
    print(Path(paths["md"]).read_text())
    print(f"quickstart finished in {elapsed:.0f} s; report: {paths['html']}")
    return paths
