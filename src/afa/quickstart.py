"""The main job on the embedded default data: every method on digits, one report.

Each method trains from its shipped ``digits-<method>`` recipe at the same budget of
adversarial epochs, is evaluated with the run's own threat model (clean, PGD-20 (CE),
AutoAttack) and analysed for feature alignment; ``afa compare`` then writes the report.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from afa._registry import unknown_name_message
from afa.analysis.runs import analyze_run
from afa.config import load_yaml
from afa.data import load_splits
from afa.errors import ConfigError
from afa.evaluation.runs import evaluate_run
from afa.recipes import resolve_recipe
from afa.report import compare
from afa.runs import adversarial_epochs, load_run_config, resolve_device
from afa.training.plan import train_run

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


@dataclass(frozen=True)
class _Job:
    """One method of the quickstart: everything a worker process needs to run it."""

    name: str
    recipe: str
    overrides: tuple[str, ...]
    device: str
    seed: int
    eval_examples: int | None
    threads: int
    bars: bool = True


def quickstart(
    out: Path,
    *,
    methods: Sequence[str] | None = None,
    device: str = "auto",
    seed: int = 0,
    epochs: int | None = None,
    eval_examples: int | None = None,
    attacks: Sequence[str] | None = None,
    workers: int | None = None,
    threads: int = 1,
) -> dict[str, Path]:
    """Train, evaluate and analyse each method on digits; write and return the report paths.

    ``epochs`` replaces every method's adversarial budget (a pre-training method's
    classifier stage gets half of it); ``eval_examples`` and ``attacks`` shrink the
    evaluation. They exist for smoke runs: the defaults are the documented quickstart.

    Every method's config is built and validated before the first one trains. Methods run
    in ``workers`` processes of ``threads`` torch threads each (default: two on a CPU with
    two cores or more, one on a GPU), the costliest first so the workers finish together;
    each run is seeded on its own, so the results do not depend on the number of workers.
    """
    check_quickstart_args(
        methods=methods, epochs=epochs, eval_examples=eval_examples, attacks=attacks
    )
    jobs = [
        _job(name, out, device, seed, epochs, eval_examples, attacks, threads)
        for name in (methods or QUICKSTART_METHODS)
    ]
    if workers is None:
        workers = 1 if resolve_device(device).type == "cuda" else min(2, os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"--workers: expected >= 1, got {workers}")
    costliest_first = sorted(jobs, key=lambda j: -COST.get(j.name, 1.0))
    if workers == 1 or len(jobs) == 1:
        for job in costliest_first:
            _run(job)
    else:
        # Two workers' progress bars would overwrite each other: epoch lines only.
        costliest_first = [dataclasses.replace(j, bars=False) for j in costliest_first]
        context = multiprocessing.get_context("spawn")  # no fork of a process running torch
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            for _ in pool.map(_run, costliest_first):
                pass
    runs = [out / job.name for job in jobs]
    return compare(runs, out, title="afa quickstart: every method on digits")


COST = {"afa-trades": 3.0, "afa": 2.0, "trades": 1.7, "pgd-at": 1.6, "standard": 0.3}
"""Relative wall time of each method's train + eval + analysis (measured on this job)."""


def _job(
    name: str,
    out: Path,
    device: str,
    seed: int,
    epochs: int | None,
    eval_examples: int | None,
    attacks: Sequence[str] | None,
    threads: int,
) -> _Job:
    recipe = str(resolve_recipe(f"digits-{name}"))
    overrides = [f"out_dir={out}", f"name={name}", f"train.seed={seed}", f"device={device}"]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
        if "classifier" in load_yaml(recipe):
            overrides.append(f"classifier.epochs={max(1, epochs // 2)}")
    if eval_examples is not None:
        overrides.append(f"eval.n_examples={eval_examples}")
    if attacks is not None:
        overrides.append(f"eval.attacks=[{','.join(attacks)}]")
    load_run_config(recipe, overrides)  # validated now, before anything trains
    return _Job(name, recipe, tuple(overrides), device, seed, eval_examples, threads)


def _run(job: _Job) -> Path:
    """Train, evaluate and analyse one method (in this process or a worker's)."""
    import torch

    torch.set_num_threads(job.threads)
    if not job.bars:
        os.environ["TQDM_DISABLE"] = "1"  # tqdm's own switch; this is a worker process
    with _log_prefix(job.name):
        cfg = load_run_config(job.recipe, list(job.overrides))
        splits = load_splits(cfg.data)
        log.info(
            "quickstart: %s (%d epochs of adversarial training)",
            job.name,
            adversarial_epochs(cfg),
        )
        train_run(cfg, splits=splits)
        evaluate_run(cfg.run_dir, device=job.device, seed=job.seed, splits=splits)
        analyze_run(cfg.run_dir, device=job.device, splits=splits, n_test=job.eval_examples)
        log.info("quickstart: %s done", job.name)
    return cfg.run_dir


@contextmanager
def _log_prefix(name: str) -> Iterator[None]:
    """Start each log line with the method's name (two workers' lines interleave); the
    handlers' formatters are restored on exit. A spawned worker starts with no logging
    configuration, so one is made for it."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
        )
    before = [(h, h.formatter) for h in root.handlers]
    fmt = logging.Formatter(f"%(asctime)s [{name}] %(message)s", datefmt="%H:%M:%S")
    for handler, _ in before:
        handler.setFormatter(fmt)
    try:
        yield
    finally:
        for handler, formatter in before:
            handler.setFormatter(formatter)
