"""``afa analyze MODEL``: feature-alignment analysis of a trained run (or a published
model), into analysis.json and figures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from afa.cli.arguments import (
    add_model_arguments,
    check_model_arguments,
    is_published,
    positive_int,
    read_test_data,
)
from afa.cli.commands import register_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--k", type=positive_int, default=10, help="neighbours of the kNN alignment"
    )
    parser.add_argument(
        "--n-test",
        type=positive_int,
        default=None,
        help="first test examples analysed (default: the run's eval.n_examples)",
    )
    parser.add_argument(
        "--n-train", type=positive_int, default=None, help="training examples for centroids"
    )
    parser.add_argument("--no-figures", action="store_true")


def run(args: argparse.Namespace) -> int:
    check_model_arguments(args, "analysis.json")
    settings: dict[str, Any] = {
        "k": args.k,
        "n_test": args.n_test,
        "n_train": args.n_train,
        "device": args.device,
        "figures": not args.no_figures,
        "test_data": read_test_data(args),
    }
    if is_published(args):
        from afa.analysis.published import analyze_published

        analyze_published(args.path, out_dir=args.out, data_root=args.data_root, **settings)
    else:
        from afa.analysis.runs import analyze_run

        analyze_run(Path(args.path), which=args.which, **settings)
    return 0


register_command(
    "analyze",
    add_arguments,
    run,
    help="feature-alignment analysis of a trained run",
    description="Alignment (centroid and kNN), feature geometry, input separation and "
    "local Lipschitzness; writes analysis.json and figures into the run directory.",
)
