"""``afa quickstart``: every method on digits, trained, evaluated, analysed, one report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from afa.cli.arguments import comma_list, positive_int
from afa.cli.checks import check_device, check_output_dir
from afa.cli.commands import register_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="output directory")
    parser.add_argument(
        "--methods", type=comma_list, default=None, help="comma list (default: all)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="smoke runs: adversarial epochs per method",
    )
    parser.add_argument(
        "--eval-examples",
        type=positive_int,
        default=None,
        help="smoke runs: test examples evaluated",
    )
    parser.add_argument(
        "--attacks",
        type=comma_list,
        default=None,
        help="smoke runs: comma list (default pgd,cw,autoattack)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="methods run in this many processes of one thread each "
        "(default: 2 on a CPU with 2+ cores, 1 on a GPU)",
    )


def run(args: argparse.Namespace) -> int:
    from afa.quickstart import check_quickstart_args, quickstart

    check_quickstart_args(
        methods=args.methods,
        epochs=args.epochs,
        eval_examples=args.eval_examples,
        attacks=args.attacks,
    )
    check_device(args.device, "--device")
    check_output_dir(args.out, "--out")
    start = time.perf_counter()
    paths = quickstart(
        Path(args.out),
        methods=args.methods,
        device=args.device,
        seed=args.seed,
        epochs=args.epochs,
        eval_examples=args.eval_examples,
        attacks=args.attacks,
        workers=args.workers,
        # Tiny 8x8 models: one intra-op thread is as fast as two on an idle machine and
        # up to 10x faster on a busy one (benchmarks/README.md).
        threads=args.threads or 1,
    )
    # The methods table and the sanity checks; alignment and figures are in the report.
    print(Path(paths["md"]).read_text().split("\n## Feature alignment")[0].rstrip() + "\n")
    print(f"quickstart finished in {time.perf_counter() - start:.0f} s; report: {paths['html']}")
    return 0


register_command(
    "quickstart",
    add_arguments,
    run,
    help="train every method on digits, evaluate, analyse, report",
    description="Trains standard, PGD-AT, TRADES, AFA and AFA+TRADES on scikit-learn's "
    "digits at one budget, evaluates each (clean, PGD, AutoAttack), analyses alignment "
    "and writes a comparison report.",
)
