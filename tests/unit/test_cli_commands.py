"""The command line is a table of commands, one module each, that imports no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from afa.cli.arguments import comma_list
from afa.cli.commands import COMMANDS
from afa.cli.main import _parser

COMMANDS_DIR = Path(__file__).resolve().parents[2] / "src" / "afa" / "cli" / "commands"


def test_every_module_of_the_package_is_a_command_and_every_command_is_parsed() -> None:
    modules = sorted(p.stem for p in COMMANDS_DIR.glob("*.py") if p.stem != "__init__")
    assert COMMANDS.names() == modules
    assert sorted(_parser().commands) == modules
    for name in COMMANDS:
        assert COMMANDS.get(name).run.__module__ == f"afa.cli.commands.{name}"


def test_eval_and_analyze_declare_the_model_arguments_once() -> None:
    commands = _parser().commands

    def options(name: str) -> set[str]:
        return {s for a in commands[name]._actions for s in a.option_strings or [a.dest]}

    shared = {"path", "--which", "--device", "--test-data", "--data-root", "--out", "-h"}
    assert options("eval") & options("analyze") == shared | {"--help"}


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ("pgd,cw", ["pgd", "cw"]),
        ("pgd, cw ", ["pgd", "cw"]),
        ("", [""]),
        ("pgd,,cw", ["pgd", "", "cw"]),
    ],
)
def test_a_comma_list_drops_nothing(text: str, items: list[str]) -> None:
    """An empty item reaches the reader, which refuses it like any unknown name."""
    assert comma_list(text) == items


def test_the_command_line_imports_no_torch() -> None:
    """``afa --help`` and argument errors answer before torch would load."""
    code = "import sys, afa.cli.main; afa.cli.main._parser(); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
