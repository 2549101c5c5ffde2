"""The architecture holds: each layer imports only from itself and the layers before it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "afa"

LAYERS = {
    "afa": 0,
    "afa.errors": 0,
    "afa._registry": 0,
    "afa._io": 0,
    "afa.config": 0,
    "afa.recipes": 0,
    "afa.data": 1,
    "afa.models": 2,
    "afa.attacks": 3,
    "afa.losses": 3,
    "afa.methods": 4,
    "afa.runs": 5,  # the run schema, run directories, loading a trained run
    "afa.training": 6,
    "afa.evaluation": 7,
    "afa.analysis": 7,
    "afa.report": 8,
    "afa.quickstart": 8,
    "afa.finetune": 8,
    "afa.cli": 9,  # the command line: nothing below it imports a command
    "afa.__main__": 9,
}


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(module)


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("afa")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("afa"):
                found.append(node.module)
    return found


FILES = sorted(SRC.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    for path in FILES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_respect_layers(path: Path) -> None:
    mine = layer_of(module_name(path))
    for target in imports(path):
        assert layer_of(target) <= mine, (
            f"{module_name(path)} (L{mine}) imports {target} (L{layer_of(target)})"
        )


#: Packages that read trained runs: they load them through ``afa.runs``, never the trainer.
READERS = ("afa.evaluation", "afa.analysis", "afa.report")


@pytest.mark.parametrize(
    "path",
    [p for p in FILES if module_name(p).startswith(READERS)],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_evaluation_analysis_and_report_never_import_training(path: Path) -> None:
    trainer = [t for t in imports(path) if t == "afa.training" or t.startswith("afa.training.")]
    assert not trainer, f"{module_name(path)} imports {trainer}; load runs through afa.runs"


def test_runs_sit_after_methods_and_before_training() -> None:
    assert layer_of("afa.methods") < layer_of("afa.runs") < layer_of("afa.training")
    assert layer_of("afa.runs") < min(layer_of(r) for r in READERS)


FORBIDDEN = ("torchvision", "timm", "robustbench")  # their wheels do not import here


def third_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_cuda_calls_and_no_forbidden_packages() -> None:
    for path in FILES:
        assert ".cuda()" not in path.read_text(), path
        assert not third_party_imports(path) & set(FORBIDDEN), path
