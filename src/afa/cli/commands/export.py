"""``afa export RUN``: a run's eval.json as RobustBench's model_info JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from afa._io import check_file_name
from afa.cli.commands import register_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory holding eval.json")
    parser.add_argument("--out", default=None, help="the JSON file to write instead")
    parser.add_argument(
        "--name", default=None, help="model ID of the file name (default: RUN's name)"
    )


def run(args: argparse.Namespace) -> int:
    from afa.report.export import export_run

    if args.name is not None:
        check_file_name(args.name, "--name")
    path, _, empty, notes = export_run(Path(args.run), args.out, name=args.name)
    print(f"model_info: {path}")
    if empty:
        print(f"left empty (eval.json does not know them): {', '.join(empty)}")
    for note in notes:
        print(f"note: {note}")
    return 0


register_command(
    "export",
    add_arguments,
    run,
    help="a run's eval.json as RobustBench's model_info JSON",
    description="Writes RUN/model_info/<dataset>/<Linf|L2>/<name>.json in RobustBench's "
    "format from RUN/eval.json (and RUN/config.yaml); the paper's fields (link, name, "
    "authors, venue, reported) are left empty and listed.",
)
