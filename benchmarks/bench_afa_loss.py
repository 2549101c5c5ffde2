"""Time and peak memory of the AFA loss alone (forward + backward) against the batch size.

The loss of ``afa.losses.AFALoss`` on random normalised features: ``B`` samples with 2
views each (1 clean + 1 adversarial, stacked as ``Views.stack(y, 1, 1)``), feature
dimension ``--dim`` (128, the projection head's output), ``--classes`` (10) random labels,
temperature 0.1, the adversarial views as anchors. One call is ``AFALoss(z, views)``
followed by ``loss.backward()`` to the features (no network).

With ``A = B`` anchors against a contrast set of ``R = 2B`` rows the loss builds
similarity-sized (A x R) matrices: the similarity matrix itself, the masks (bool, 1 byte
per entry), the masked logits of the logsumexp, the per-pair terms and their gradients.
Both time and memory therefore grow as B^2.

Figures per batch size and denominator (``negatives``: AFA; ``supcon``: Khosla et al.):

* ``ms``: median time of one forward + backward (``--reps`` samples after ``--warmup``
  calls; a sample repeats the call until it lasts ``--min-sample-time``);
* ``x prev``: time relative to the previous (half) batch size (4 for pure B^2 cost);
* ``sim MiB``: analytic size of ONE float32 A x R similarity matrix, ``4 * A * R`` bytes;
* ``peak MiB``: measured peak growth of tensor memory during one call (CUDA:
  ``max_memory_allocated``; CPU: the profiler's allocator trace, see ``_common.py``);
* ``peak / sim``: the peak in units of one similarity matrix (how many A x R float32
  matrices are live at once, bool masks counting a quarter each);
* ``allocs >= sim`` and ``largest MiB`` (CPU only): the allocations of at least one
  similarity matrix's size during the call, and the largest allocation.

Run:
    python benchmarks/bench_afa_loss.py --threads 1 --out results/afa_loss.json
    python benchmarks/bench_afa_loss.py --device cuda --batch-sizes 1024,4096,16384
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MiB,
    environment,
    markdown_table,
    median,
    memory_profile,
    reps_for,
    resolve_device,
    timed,
    warn_if_busy,
    write_json,
)

from afa.losses import AFALoss, Views  # noqa: E402

DEFAULT_BATCH_SIZES = (128, 256, 512, 1024, 2048, 4096)
DENOMINATORS = ("negatives", "supcon")


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from err
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def str_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in DENOMINATORS]
    if bad or not values:
        raise argparse.ArgumentTypeError(
            f"denominators: expected {' and/or '.join(DENOMINATORS)}, got {text!r}"
        )
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda")
    p.add_argument(
        "--batch-sizes",
        type=int_list,
        default=list(DEFAULT_BATCH_SIZES),
        help="comma-separated B (samples; 2B features)",
    )
    p.add_argument("--denominators", type=str_list, default=list(DENOMINATORS))
    p.add_argument("--dim", type=int, default=128, help="feature dimension D")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reps", type=int, default=3, help="timed samples (median)")
    p.add_argument("--min-sample-time", type=float, default=0.2)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory call")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p


def loss_call(
    batch: int, args: argparse.Namespace, denominator: str, device: torch.device
) -> Callable[[], torch.Tensor]:
    """A closure computing the AFA loss of ``2 * batch`` random features and its gradient."""
    gen = torch.Generator().manual_seed(args.seed)
    y = torch.randint(0, args.classes, (batch,), generator=gen).to(device)
    z0 = F.normalize(torch.randn(2 * batch, args.dim, generator=gen), dim=1)
    z = z0.to(device).requires_grad_(True)
    views = Views.stack(y, 1, 1)
    criterion = AFALoss(temperature=args.temperature, denominator=denominator, gather=False)  # type: ignore[arg-type]

    def call() -> torch.Tensor:
        z.grad = None
        out = criterion(z, views)
        out.loss.backward()
        return out.loss.detach()

    return call


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.reps < 1 or args.warmup < 0 or args.dim < 1 or args.classes < 2:
        raise SystemExit("--reps >= 1, --warmup >= 0, --dim >= 1 and --classes >= 2 are needed")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    warn_if_busy(device)
    print(
        f"AFA loss forward + backward: 1 clean + 1 adversarial view, D={args.dim}, "
        f"{args.classes} classes, temperature {args.temperature}, adversarial anchors, "
        f"device {device}, {torch.get_num_threads()} CPU threads"
    )

    results: list[dict[str, Any]] = []
    source = None
    for denominator in args.denominators:
        previous: float | None = None
        for b in args.batch_sizes:
            call = loss_call(b, args, denominator, device)
            for _ in range(args.warmup):
                call()
            reps = reps_for(timed(call, device), args.min_sample_time)
            seconds = median([timed(call, device, reps) for _ in range(args.reps)])
            anchors, rows = b, 2 * b
            sim_bytes = 4 * anchors * rows
            peak, sizes = None, []
            if not args.no_memory:
                peak, source, sizes = memory_profile(call, device)
            loss = float(call())
            results.append(
                {
                    "denominator": denominator,
                    "batch_size": b,
                    "features": rows,
                    "anchors": anchors,
                    "time_s": seconds,
                    "reps_per_sample": reps,
                    "time_vs_previous": seconds / previous if previous else None,
                    "sim_matrix_bytes": sim_bytes,
                    "peak_bytes": peak,
                    "peak_over_sim": peak / sim_bytes if peak is not None else None,
                    "allocations_at_least_sim": (
                        sum(1 for s in sizes if s >= sim_bytes) if sizes else None
                    ),
                    "largest_allocation_bytes": sizes[0] if sizes else None,
                    "loss": loss,
                }
            )
            previous = seconds
            print(f"  {denominator:>9} B={b:>5}: {1e3 * seconds:9.2f} ms", flush=True)

    headers = [
        "denominator",
        "B",
        "ms",
        "x prev",
        "sim MiB",
        "peak MiB",
        "peak / sim",
        "allocs >= sim",
        "largest MiB",
    ]
    rows = [
        [
            r["denominator"],
            r["batch_size"],
            1e3 * r["time_s"],
            r["time_vs_previous"],
            r["sim_matrix_bytes"] / MiB,
            None if r["peak_bytes"] is None else r["peak_bytes"] / MiB,
            r["peak_over_sim"],
            r["allocations_at_least_sim"],
            None if r["largest_allocation_bytes"] is None else r["largest_allocation_bytes"] / MiB,
        ]
        for r in results
    ]
    print()
    print(markdown_table(headers, rows))
    print(
        f"\nA = B adversarial anchors x R = 2B contrast rows; sim = one float32 A x R matrix; "
        f"peak memory: {source or 'not measured'}, growth above the features"
    )
    payload = {
        "benchmark": "afa_loss",
        "config": {
            "batch_sizes": args.batch_sizes,
            "denominators": args.denominators,
            "dim": args.dim,
            "classes": args.classes,
            "temperature": args.temperature,
            "views": {"clean": 1, "adversarial": 1},
            "anchors": "adversarial",
            "warmup": args.warmup,
            "reps": args.reps,
            "min_sample_time_s": args.min_sample_time,
            "seed": args.seed,
        },
        "environment": environment(device),
        "memory_source": source,
        "results": results,
    }
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
