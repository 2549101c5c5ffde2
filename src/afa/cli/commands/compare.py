"""``afa compare RUN [RUN ...]``: one report (markdown + HTML) over several runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from afa.cli.checks import check_output_dir, check_run_dirs
from afa.cli.commands import register_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--out", default=None, help="report directory (default: the runs' parent)")
    parser.add_argument("--title", default="afa report")


def run(args: argparse.Namespace) -> int:
    from afa.report import compare

    runs = check_run_dirs(args.runs)
    out = check_output_dir(Path(args.out) if args.out else runs[0].parent, "--out")
    paths = compare(runs, out, title=args.title)
    print(f"report: {paths['html']}")
    return 0


register_command(
    "compare", add_arguments, run, help="one report (markdown + HTML) over several runs"
)
