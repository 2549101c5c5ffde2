"""The shipped YAML recipes (``src/afa/configs``), addressable by name."""

from __future__ import annotations

from pathlib import Path

from afa._registry import unknown_name_message
from afa.errors import ConfigError

RECIPE_DIR = Path(__file__).parent / "configs"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A path to an existing file, or the shipped recipe of that name (``cifar10-afa``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix in ("", ".yaml") and path.parent == Path("."):
        candidate = RECIPE_DIR / f"{path.stem}.yaml"
        if candidate.is_file():
            return candidate
        raise ConfigError(
            f"{name_or_path}: no such file, and "
            + unknown_name_message("recipe", path.stem, recipe_names())
        )
    raise ConfigError(f"{name_or_path}: config file not found")


def list_recipes() -> list[tuple[str, str]]:
    """(name, first comment line) of every shipped recipe."""
    out = []
    for name in recipe_names():
        first = (RECIPE_DIR / f"{name}.yaml").read_text().splitlines()[:1]
        summary = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        out.append((name, summary))
    return out
