"""The commands of ``afa``: one module each, registered by name.

A command is a module with ``add_arguments(parser)`` (its options, on its own argparse
parser) and ``run(args) -> int`` (the exit status), which registers the pair with its
one-line help::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...

    register_command("name", add_arguments, run, help="what it does, in a few words")

Every module of this package is imported when the package is, so a new command is one
file here (the worked example of docs/architecture.md#how-to-add-a-command). A command
parses and calls: its work is a library function, imported inside ``run`` so that
``afa --help`` imports no torch. Arguments that several commands share are declared once
in :mod:`afa.cli.arguments`, checks that name an option in :mod:`afa.cli.checks`.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from afa._registry import Registry


@dataclass(frozen=True)
class Command:
    """One command, ``afa NAME``.

    Attributes:
        name: what follows ``afa`` on the command line.
        help: its line in ``afa --help``.
        add_arguments: declares its options on its parser.
        run: does it with the parsed arguments; returns the exit status. A
            :class:`~afa.errors.UserError` or an ``OSError`` it raises becomes one
            ``afa: error:`` line and status 2 (``afa.cli.main``).
        description: the text of ``afa NAME --help`` (default: ``help``).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


COMMANDS: Registry[Command] = Registry("command")
"""Every command by name; ``afa --help`` lists them in alphabetical order."""


def register_command(
    name: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str | None = None,
) -> Command:
    """Register ``afa NAME`` (see :class:`Command`); returns it.

    Raises:
        ValueError: a command of that name is already registered.
    """
    command = Command(name, help, add_arguments, run, description)
    return COMMANDS.register(name)(command)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["COMMANDS", "Command", "register_command"]
