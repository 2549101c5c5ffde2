"""``afa recipes``: list the shipped recipes."""

from __future__ import annotations

import argparse

from afa.cli.commands import register_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    from afa.recipes import list_recipes

    for name, summary in list_recipes():
        print(f"{name:28s} {summary}")
    return 0


register_command("recipes", add_arguments, run, help="list the shipped recipes")
