"""docs/configuration.md is the configuration as the code defines it.

* every key the page documents exists: a field of ``RunConfig`` or one of its sections
  (``src/afa/runs/schema.py``), ``method.name``, or an option of a method's ``Config``;
* every documented default (a backticked YAML value: ``8/255``, ``null``, ``[0.5, 0.75]``)
  equals the code's default;
* every key of those dataclasses is documented, itself or as a block (``classifier.optimizer``);
* the datasets table names exactly the registered datasets.

A key table is one whose header is ``| key | default | meaning |``; its keys belong to every
section named in backticks in the heading above it (``### `trades` and `mart```), none for
"Top level".
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_docs import resolve_option, section, table_rows

from afa.data import DATASETS
from afa.methods import METHODS, method_config_class
from afa.runs import RunConfig
from afa.runs.schema import ClassifierConfig

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def documented_keys(text: str) -> dict[str, str]:
    """{dotted key: its default cell} of every key table of ``text``."""
    keys: dict[str, str] = {}
    prefixes: list[str] = []
    in_table = fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced:
            continue
        if m := re.match(r"#{2,6} (.+)", line):
            prefixes = re.findall(r"`([^`]+)`", m.group(1)) or [""]
            in_table = False
        elif re.match(r"\|\s*key\s*\|\s*default\s*\|\s*meaning\s*\|", line):
            in_table = True
        elif in_table and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if re.fullmatch(r"-+", cells[0]):
                continue
            key = re.fullmatch(r"`([\w.]+)`", cells[0])
            assert key, f"docs/configuration.md: a key cell that is not one `key`: {cells[0]!r}"
            for prefix in prefixes:
                full = f"{prefix}.{key.group(1)}" if prefix else key.group(1)
                assert full not in keys, f"docs/configuration.md documents {full} twice"
                keys[full] = cells[1]
        else:
            in_table = False
    return keys


DOCUMENTED = documented_keys(PAGE.read_text())


def literal(text: str) -> Any:
    """A documented default as the config loader reads it (fractions exact, as floats)."""

    def convert(value: Any) -> Any:
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, str):
            try:
                return float(Fraction(value))
            except (ValueError, ZeroDivisionError):
                return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return value

    return convert(yaml.safe_load(text))


def normalised(value: Any) -> Any:
    """A code default in the shape :func:`literal` gives (tuples as lists, numbers as floats)."""
    if isinstance(value, tuple | list):
        return [normalised(v) for v in value]
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def code_keys() -> set[str]:
    """Every leaf key of the run configuration and of every method's options."""

    def walk(obj: Any, prefix: str) -> set[str]:
        out = set()
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name == "classifier" and value is None:
                value = ClassifierConfig()
            if dataclasses.is_dataclass(value):
                out |= walk(value, f"{prefix}{f.name}.")
            elif prefix == "" and f.name == "method":
                out.add("method.name")  # the rest of the section is the method's Config
            else:
                out.add(prefix + f.name)
        return out

    keys = walk(RunConfig(), "")
    for name in METHODS:
        keys |= walk(method_config_class(METHODS.get(name))(), f"{name}.")
    return keys


def code_default(key: str) -> Any:
    if key == "method.name":
        return RunConfig().method["name"]
    head, *rest = key.split(".")
    if head == "classifier":  # an optional section: resolve_option gives its own defaults
        obj: Any = ClassifierConfig()
        for part in rest:
            obj = getattr(obj, part)
        return obj
    return resolve_option(key)[0]


def test_page_is_parsed() -> None:
    # a change of the page's format must not turn these checks into no-ops
    assert len(DOCUMENTED) > 120
    for key in ("threat.eps", "data.contrastive.ratio", "afa.dynacl_swap", "out_dir"):
        assert key in DOCUMENTED


@pytest.mark.parametrize("key", sorted(DOCUMENTED))
def test_documented_key_exists_with_its_default(key: str) -> None:
    default = code_default(key)  # raises (naming the key) when the code has no such option
    cell = DOCUMENTED[key]
    if dataclasses.is_dataclass(default):
        assert "`" not in cell, f"{key} is a section: its default cell names no value"
        return
    values = re.findall(r"`([^`]+)`", cell)
    assert len(values) == 1, f"{key}: the default cell must be one `value`, got {cell!r}"
    assert literal(values[0]) == normalised(default), (
        f"docs/configuration.md says the default of {key} is {values[0]!r}; "
        f"the code has {default!r}"
    )


def test_every_key_of_the_code_is_documented() -> None:
    def covered(key: str) -> bool:
        parts = key.split(".")
        return any(".".join(parts[:i]) in DOCUMENTED for i in range(1, len(parts) + 1))

    missing = sorted(k for k in code_keys() if not covered(k))
    assert not missing, f"docs/configuration.md does not document: {missing}"


def test_checks_catch_drift() -> None:
    with pytest.raises(AssertionError, match="no option"):
        code_default("afa.temprature")
    assert literal("8/255") == normalised(8 / 255)
    assert literal("[3/4, 4/3]") == normalised((3 / 4, 4 / 3))
    assert literal("5e-4") == normalised(5e-4) and literal("null") is None
    assert literal("0.2") != normalised(0.1)
    text = "## `data`\n\n| key | default | meaning |\n|---|---|---|\n| `val_size` | `0.1` | x |\n"
    assert documented_keys(text) == {"data.val_size": "`0.1`"}


def test_datasets_table_is_the_registry() -> None:
    rows = table_rows(section(PAGE, "`data`").split("### Datasets", 1)[1])
    names = {n for row in rows for n in re.findall(r"`([^`]+)`", row[0])}
    assert names == set(DATASETS), f"documented {sorted(names)}, registered {list(DATASETS)}"


def test_model_names_are_the_registry() -> None:
    from afa.models.registry import MODELS

    row = next(line for line in section(PAGE, "`model`").splitlines() if "| `name` |" in line)
    documented = set(re.findall(r"`([\w.-]+)`", row.split("|")[3]))
    assert set(MODELS) <= documented, f"undocumented models: {sorted(set(MODELS) - documented)}"
