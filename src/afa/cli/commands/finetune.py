"""``afa finetune RUN [key=value ...]``: a pre-trained encoder under SLF / ALF / AFF, one
table."""

from __future__ import annotations

import argparse
from pathlib import Path

from afa.cli.arguments import add_evaluation_arguments, add_overrides
from afa.cli.checks import check_attacks
from afa.cli.commands import register_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the pre-training run directory")
    add_overrides(parser, help="for every protocol's run")
    parser.add_argument(
        "--protocols", default="slf,alf,aff", help="comma list (default slf,alf,aff)"
    )
    add_evaluation_arguments(parser, "default: the run's")


def run(args: argparse.Namespace) -> int:
    from afa.finetune import finetune, parse_protocols

    if args.attacks is not None:
        check_attacks(args.attacks, "--attacks")
    result = finetune(
        Path(args.run),
        parse_protocols(args.protocols),
        overrides=args.overrides,
        attacks=args.attacks,
        n_examples=args.n,
        sanity=not args.no_sanity,
    )
    print(result.markdown, end="")
    print(f"table: {result.json_path} and {result.md_path}")
    return 0


register_command(
    "finetune",
    add_arguments,
    run,
    help="a pre-trained encoder under SLF / ALF / AFF, one table",
    description="Trains RUN's pre-trained encoder (method afa, supcon, acl or dynacl) "
    "under each protocol of the robust self-supervised benchmark into RUN-<protocol> "
    "(the protocol's defaults unless overridden, e.g. classifier.epochs=5), evaluates "
    "each and writes RUN/finetune.json and RUN/finetune.md; protocols already done "
    "are skipped, an interrupted one resumes.",
)
