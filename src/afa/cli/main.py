"""The ``afa`` command line: one parser over the commands of :mod:`afa.cli.commands`.

It parses, sets logging and threads, and calls the command; each command parses and calls
the library. User errors (bad config, missing file, bad checkpoint) print one line and exit
with 2; so do the file system's (a full disk, a read-only directory: the path and the
reason).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from collections.abc import Mapping, Sequence

from afa.cli.commands import COMMANDS
from afa.errors import UserError, os_error_line


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line, like every other user error (status 2)."""

    commands: Mapping[str, argparse.ArgumentParser]  # the top parser's, set by _parser

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> _Parser:
    p = _Parser(
        prog="afa",
        description="Adversarial Feature Alignment and an honest adversarial-training toolkit.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op CPU threads (default: torch's; the quickstart uses 1 on CPU)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        command = COMMANDS.get(name)
        command.add_arguments(
            sub.add_parser(name, help=command.help, description=command.description)
        )
    p.commands = sub.choices  # each command's parser, for its own error line
    return p


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with ``key=value`` overrides accepted anywhere on the line.

    argparse reads a command's positionals in one run, so an override after an option
    (``afa train RECIPE --resume train.epochs=3``) comes back unrecognised: it is taken
    here, in its order, by every command that has overrides
    (:func:`afa.cli.arguments.add_overrides`); anything else unrecognised is still refused,
    by the command's parser.
    """
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    takes_overrides = isinstance(getattr(args, "overrides", None), list)
    unknown = [a for a in extra if not (takes_overrides and _is_override(a))]
    if unknown:
        command = parser.commands.get(getattr(args, "command", None) or "", parser)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if takes_overrides:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parse(argv)
    except SystemExit as exc:  # --help, or a bad option (one line already printed)
        return int(exc.code or 0)
    # Under torchrun only rank 0 reports progress; other ranks still print warnings.
    quiet_rank = int(os.environ.get("RANK", "0")) > 0
    logging.basicConfig(
        level=logging.WARNING if quiet_rank else logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.threads is not None:
        import torch

        if args.threads < 1:
            print(f"afa: error: --threads: expected >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        return COMMANDS.get(args.command).run(args)
    except UserError as exc:
        print(f"afa: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only directory: the path and the reason
        print(f"afa: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("afa: interrupted (resume with `afa train ... --resume`)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
