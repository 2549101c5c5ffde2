"""Speed and memory of the exact L∞ separation (``afa.analysis.separation``).

Workloads (each with ``brute`` and ``pruned``, see the module's docstring):

* ``digits``: scikit-learn's 8x8 digits (1,797 images), train-train and test-train on the
  project's fixed split; the figures of Yang et al.'s Table 1 style for this dataset.
* ``random``: ``--n`` uniformly random CIFAR-shaped uint8 images (3x32x32) with random
  labels of 10 classes, train-train (``--n`` x ``--n`` pairs; 50,000 by default, CIFAR-10's
  training set size). Noise is the worst case of the pruned search (its bound is loose, so it
  falls back to the dense scan).
* ``npz`` (``--npz FILE``, optional): real images from an ``.npz`` with ``x_train``/``y_train``
  (e.g. a CIFAR-10 subset), train-train: where the pruning pays.

Timing: a run whose estimated time exceeds ``--budget`` seconds is not run in full. Its
time is *extrapolated* from a pilot of ``--pilot`` query points against the full reference
set: every query costs the same scan of the references (per-query work is independent),
so full time = pilot time x N / pilot. The pilot queries are a random subset, so data-
dependent pruning is sampled fairly. Such rows say ``estimated``. Both methods' pilot answers
are compared (they must be identical). Peak memory is the growth of tensor memory during
one query block (``benchmarks/_common.py``), measured in an extra untimed call.

Run:
    python benchmarks/bench_separation.py                      # digits + 50,000 random
    python benchmarks/bench_separation.py --n 5000 --budget 60
    python benchmarks/bench_separation.py --npz cifar10-5k-train.npz --out results/sep.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MiB,
    environment,
    markdown_table,
    peak_memory,
    resolve_device,
    synchronize,
    warn_if_busy,
    write_json,
)

from afa.analysis.separation import input_separation, min_linf_to_other_label  # noqa: E402

METHODS = ("brute", "pruned")


def _time(fn, device: torch.device) -> tuple[float, Any]:
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


def bench_digits(device: torch.device) -> list[dict[str, Any]]:
    from afa.data import DataConfig, load_splits

    splits = load_splits(DataConfig(name="digits", val_size=0))
    rows = []
    for method in METHODS:
        seconds, out = _time(
            lambda m=method: input_separation(
                splits.train.images,
                splits.train.labels,
                splits.test.images,
                splits.test.labels,
                eps=0.2,
                num_classes=10,
                device=device,
                method=m,
            ),
            device,
        )
        rows.append(
            {
                "workload": "digits train-train + test-train",
                "method": method,
                "n_query": len(splits.train) + len(splits.test),
                "n_ref": len(splits.train),
                "seconds": seconds,
                "estimated": False,
                "two_r_train_train": out["train_train"]["min_distance"],
                "two_r_test_train": out["test_train"]["min_distance"],
            }
        )
    return rows


def bench_pairs(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    device: torch.device,
    *,
    pilot: int,
    budget: float,
    memory: bool,
    seed: int,
) -> list[dict[str, Any]]:
    """Train-train on (x, y): the full run when it fits ``budget``, else a pilot + estimate."""
    n = len(y)
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(n, size=min(pilot, n), replace=False))
    rows, answers = [], {}
    for method in METHODS:
        seconds, (dist, idx) = _time(
            lambda m=method: min_linf_to_other_label(x[sub], y[sub], x, y, device=device, method=m),
            device,
        )
        answers[method] = (dist, idx)
        estimate = seconds * n / len(sub)
        row: dict[str, Any] = {
            "workload": f"{name} train-train",
            "method": method,
            "n_query": n,
            "n_ref": n,
            "pilot_queries": len(sub),
            "pilot_seconds": seconds,
        }
        if len(sub) == n or estimate <= budget:
            if len(sub) < n:
                seconds, (dist, _) = _time(
                    lambda m=method: min_linf_to_other_label(x, y, x, y, device=device, method=m),
                    device,
                )
            row.update(seconds=seconds, estimated=False, two_r=float(dist.min()))
        else:
            row.update(seconds=estimate, estimated=True, two_r_pilot_upper_bound=float(dist.min()))
        if memory:
            peak, source = peak_memory(
                lambda m=method, b=sub[:256]: min_linf_to_other_label(
                    x[b], y[b], x, y, device=device, method=m
                ),
                device,
            )
            row.update(peak_mib=peak / MiB, memory_source=source)
        rows.append(row)
        print(
            f"  {name} {method}: {'estimated ' if row['estimated'] else ''}{row['seconds']:.1f} s",
            flush=True,
        )
    same = all(torch.equal(a, b) for a, b in zip(answers["brute"], answers["pruned"], strict=True))
    for row in rows:
        row["pilot_answers_identical"] = same
    return rows


def _two_r(row: dict[str, Any]) -> str | float | None:
    if "two_r_pilot_upper_bound" in row:  # the pilot's minimum bounds the full one from above
        return f"<= {row['two_r_pilot_upper_bound']:.3g} (pilot)"
    if "two_r_train_train" in row:
        return f"{row['two_r_train_train']:.3g} / {row['two_r_test_train']:.3g} (test-train)"
    return row.get("two_r")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--n", type=int, default=50_000, help="random CIFAR-shaped images (train-train)")
    p.add_argument("--pilot", type=int, default=512, help="query points timed for an estimate")
    p.add_argument("--budget", type=float, default=600.0, help="seconds a full run may take")
    p.add_argument(
        "--npz", type=Path, default=None, help="real images: x_train (N,C,H,W) uint8, y_train"
    )
    p.add_argument("--npz-n", type=int, default=None, help="use the first N images of --npz")
    p.add_argument("--no-digits", action="store_true")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory calls")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    warn_if_busy(device)
    rows: list[dict[str, Any]] = []
    if not args.no_digits:
        print("digits ...", flush=True)
        rows += bench_digits(device)
    if args.n > 0:
        print(f"random: {args.n} CIFAR-shaped images ...", flush=True)
        rng = np.random.default_rng(args.seed)
        x = rng.integers(0, 256, (args.n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, args.n)
        rows += bench_pairs(
            "random",
            x,
            y,
            device,
            pilot=args.pilot,
            budget=args.budget,
            memory=not args.no_memory,
            seed=args.seed,
        )
    if args.npz:
        data = np.load(args.npz)
        x, y = data["x_train"][: args.npz_n], data["y_train"][: args.npz_n]
        print(f"npz: {len(y)} images from {args.npz.name} ...", flush=True)
        rows += bench_pairs(
            args.npz.stem,
            np.ascontiguousarray(x),
            y,
            device,
            pilot=args.pilot,
            budget=args.budget,
            memory=not args.no_memory,
            seed=args.seed,
        )
    table = markdown_table(
        ["workload", "method", "queries x refs", "seconds", "how", "2r (min Linf)", "peak MiB"],
        [
            [
                r["workload"],
                r["method"],
                f"{r['n_query']:,} x {r['n_ref']:,}",
                r["seconds"],
                (
                    f"estimated from {r['pilot_queries']} queries"
                    if r.get("estimated")
                    else "measured"
                ),
                _two_r(r),
                r.get("peak_mib"),
            ]
            for r in rows
        ],
    )
    print(table)
    payload = {"environment": environment(device), "rows": rows}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
