"""The alignment table: the encoders of finished runs, measured one way on held-out images.

For each run directory (a finished run with ``best.pt``; ``--which last`` for ``last.pt``)
the run's model is loaded with its own configuration (for a pre-training run, the model of
its checkpoint: ``model.features`` is the pre-trained encoder) and measured by
:func:`afa.analysis.measure_alignment` (``docs/method.md#the-alignment-protocol``) on the
first ``--n`` images of the run's own test split (the harness's 5,000 images held out of
train, taken class by class in turn): the AFA loss over its chance level, ``cos_gap``, the
class separation and the aligned fractions, clean, under PGD (CE) and under the AFA
adversary (PGD on each image's own AFA term), both with the run's threat model and
``--steps`` steps, BN in eval mode; a logistic-regression probe fitted on the clean
features of ``--n-train`` training images of the run (a seeded subset) and scored on the
clean held-out images; and the collapse indicator against a randomly initialised copy of
the encoder.

Writes the JSON and the markdown beside it atomically (default
``benchmarks/results/alignment-table.json`` and ``.md``) and prints the table. ``--tiny``
(tests) measures 48 images with PGD-1 and 200 training images.

    python benchmarks/alignment_table.py --threads 2 \\
        --runs 'runs/cifar-contrastive-10k/adversarial/*' --n 512
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from afa._io import atomic_write_text, write_json  # noqa: E402
from afa.analysis.measure import alignment_markdown, measure_alignment  # noqa: E402
from afa.data import load_splits  # noqa: E402
from afa.runs import load_trained, resolve_device  # noqa: E402

BENCH = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH / "results" / "alignment-table.json"
log = logging.getLogger("alignment_table")


def run_dirs(patterns: Sequence[str], which: str) -> list[Path]:
    """The run directories named or matched by ``patterns`` that hold ``<which>.pt``.

    Raises:
        SystemExit: a pattern matches no such directory.
    """
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) or [pattern]
        runs = [Path(m) for m in matches if (Path(m) / f"{which}.pt").is_file()]
        if not runs:
            raise SystemExit(f"--runs {pattern}: no run directory with {which}.pt")
        found += [r for r in runs if r not in found]
    return found


def measure_run(
    path: Path,
    *,
    which: str,
    n: int,
    n_train: int,
    steps: int,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> dict[str, Any]:
    """One row: the run's encoder measured on its own test split."""
    model, cfg, ckpt = load_trained(path, which=which)  # type: ignore[arg-type]
    splits = load_splits(cfg.data)
    m = min(n, len(splits.test))
    gen = np.random.default_rng(seed)
    train_idx = np.sort(gen.permutation(len(splits.train))[: min(n_train, len(splits.train))])
    threat = cfg.threat.with_(steps=steps, bn_mode="eval")
    report = measure_alignment(
        model.to(device),
        np.asarray(splits.train.images[train_idx]),
        np.asarray(splits.train.labels[train_idx]),
        np.asarray(splits.test.images[:m]),
        np.asarray(splits.test.labels[:m]),
        threat,
        batch_size=batch_size,
        device=device,
        seed=seed,
    )
    classifier = cfg.classifier
    return {
        "run": path.name,
        "path": str(path),
        "checkpoint": str(ckpt),
        "method": cfg.method_name,
        "stage2": classifier.protocol if classifier is not None else None,
        "model": cfg.model.name,
        "width": cfg.model.options.get("width"),
        "data": cfg.data.name,
        **report.to_dict(),
    }


def markdown(record: dict[str, Any]) -> str:
    """The table and what it was measured on."""
    rows = [
        (f"{r['run']} ({r['method']}{', ' + r['stage2'] if r['stage2'] else ''})", r)
        for r in record["runs"]
    ]
    lines = [
        "# The alignment table",
        "",
        record["header"],
        "",
        alignment_markdown(rows),
    ]
    if record["failed"]:
        lines += ["Failed: " + ", ".join(f"{f['run']} ({f['error']})" for f in record["failed"])]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="run directories or glob patterns")
    p.add_argument("--which", choices=["best", "last"], default="best")
    p.add_argument("--n", type=int, default=512, help="held-out images measured")
    p.add_argument("--n-train", type=int, default=5000, help="training images of the probe")
    p.add_argument("--steps", type=int, default=10, help="PGD steps of both adversaries")
    p.add_argument(
        "--batch-size",
        type=int,
        default=512,
        help="images per attack batch (the AFA adversary's contrast set while crafting)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON (markdown beside it)")
    p.add_argument("--tiny", action="store_true", help="smoke mode (tests)")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        args.n, args.n_train, args.steps, args.batch_size = 48, 200, 1, 48
    device = resolve_device(args.device)
    runs = run_dirs(args.runs, args.which)
    out = Path(args.out)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for path in runs:
        log.info("%s: measuring %s.pt on %d held-out images", path, args.which, args.n)
        try:
            rows.append(
                measure_run(
                    path,
                    which=args.which,
                    n=args.n,
                    n_train=args.n_train,
                    steps=args.steps,
                    batch_size=args.batch_size,
                    device=device,
                    seed=args.seed,
                )
            )
        except Exception as exc:  # one broken run must not lose the others' rows
            log.exception("%s failed", path)
            failed.append({"run": str(path), "error": f"{type(exc).__name__}: {exc}"})
    header = (
        f"{'TINY SMOKE RUN: ' if args.tiny else ''}each run's {args.which}.pt on the first "
        f"{args.n} images of its own test split; adversaries with {args.steps} PGD steps "
        f"of the run's threat model; probe fitted on {args.n_train} training images."
    )
    record = {
        "header": header,
        "settings": {
            k: getattr(args, k) for k in ("which", "n", "n_train", "steps", "batch_size", "seed")
        },
        "runs": rows,
        "failed": failed,
        "wall_s": time.perf_counter() - t0,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)
    text = markdown(record)
    atomic_write_text(out.with_suffix(".md"), text)
    print(text)
    return 1 if failed and not rows else 0


if __name__ == "__main__":
    raise SystemExit(main())
