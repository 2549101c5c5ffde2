"""The documentation cannot silently drift from the code.

* every repository path named in ``docs/*.md`` exists (globs match at least one file), and
  every relative link and its ``#section`` resolves;
* every ``docs/<page>.md#section`` cited by the code, the recipes, the tests or the README
  names a heading of that page, and nothing cites a method card outside the repository;
* the table "Readings the paper leaves open" of ``docs/method.md``: each option exists in
  the code (a method's ``Config`` dataclass or a section of the run configuration), every
  value listed is one the option accepts, and the first value is the code's default;
* the sanity flags of the evaluation protocol are the names the evaluation code writes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import typing
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from afa.attacks.threat import ThreatModel
from afa.methods import METHODS, method_config_class
from afa.runs import RunConfig

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
METHOD_CARD = DOCS / "method.md"
PAGES = sorted(DOCS.glob("*.md"))


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to -."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of every heading of ``page`` (outside code blocks)."""
    found, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            found.add(slug(m.group(1)))
    return found


def section(page: Path, heading: str) -> str:
    """The text of the ``## heading`` section of ``page`` (up to the next ``## ``)."""
    text = page.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def table_rows(text: str) -> list[list[str]]:
    """Body rows of the markdown tables in ``text``, as lists of stripped cells."""
    rows = []
    lines = text.splitlines()
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        is_rule = re.match(r"\|\s*-", line)
        is_header = re.match(r"\|\s*-", after)
        if line.startswith("|") and not is_rule and not is_header:
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return [r for r in rows if r and r[0].startswith("`")]


def backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_slug_follows_github() -> None:
    assert slug("The joint AFA and TRADES objective") == "the-joint-afa-and-trades-objective"
    assert slug("Stage 2: the classifier") == "stage-2-the-classifier"
    assert slug("AFA on real images (5,085 CIFAR-10 training images)") == (
        "afa-on-real-images-5085-cifar-10-training-images"
    )
    assert slug("The quickstart (`make quickstart`)") == "the-quickstart-make-quickstart"


def test_docs_exist() -> None:
    assert METHOD_CARD.is_file()
    assert len(PAGES) >= 1


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_repository_paths_in_docs_exist(page: Path) -> None:
    paths = re.findall(r"(?<![\w/.])((?:src|tests|benchmarks|docs)/[\w./*-]*\w)", page.read_text())
    assert paths, f"{page.name} names no repository path"
    missing = [p for p in sorted(set(paths)) if not any(ROOT.glob(p))]
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.is_file():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{page.name}: links that do not resolve: {broken}"


def _citing_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for top in ("src", "tests", "benchmarks"):
        files += [
            p
            for p in (ROOT / top).rglob("*")
            if p.is_file() and p.suffix in (".py", ".yaml", ".yml", ".md", ".toml")
        ]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def test_citations_name_existing_sections() -> None:
    bad = []
    outside_card = "METHOD" + ".md"  # spelled apart so this file does not cite it
    for path in _citing_files():
        text = path.read_text(errors="replace")
        if outside_card in text:
            bad.append(
                f"{path.relative_to(ROOT)} cites {outside_card}, which is not in the repository"
            )
        for page, anchor in re.findall(r"docs/([\w-]+\.md)(?:#([\w-]+))?", text):
            target = DOCS / page
            if not target.is_file():
                bad.append(f"{path.relative_to(ROOT)} cites docs/{page}, which does not exist")
            elif anchor and anchor not in anchors(target):
                bad.append(f"{path.relative_to(ROOT)} cites docs/{page}#{anchor}: no such section")
    assert not bad, "\n".join(bad)


def _source_words(page: Path) -> tuple[set[str], str]:
    """Words of src/, tests/ and pyproject.toml, and of the page's own example files."""
    sources = [p for top in ("src", "tests") for p in (ROOT / top).rglob("*")]
    texts = [p.read_text() for p in sources if p.suffix in (".py", ".yaml")]
    texts += [(ROOT / "pyproject.toml").read_text(), *example_blocks(page)[0].values()]
    text = "\n".join(texts)
    return set(re.findall(r"\w+", text)), text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_backticked_names_exist_in_the_code(page: Path) -> None:
    """Every backticked name (``AFALoss``, ``Classifier.features``, ``linear-adv``) occurs in
    the code (or in the page's own example files).

    A renamed function, class, option or value then fails here instead of leaving the page
    pointing at nothing.
    """
    words, text = _source_words(page)
    names = set(re.findall(r"`([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)`", page.read_text()))
    assert len(names) > 20
    missing = sorted(
        name
        for name in names
        if not all((part in text) if "-" in part else (part in words) for part in name.split("."))
    )
    assert not missing, f"{page.name} names what src/ never mentions: {missing}"


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass in ``tp`` or ``X | None``."""
    for t in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(t):
            return t  # type: ignore[return-value]
    return None


def resolve_option(key: str) -> tuple[Any, Any]:
    """(default, type) of ``method.option`` (a method's Config) or ``section.key...``."""
    head, *rest = key.split(".")
    if head in METHODS:
        obj: Any = method_config_class(METHODS.get(head))()
        parts = rest
    else:
        obj, parts = RunConfig(), [head, *rest]
    assert parts, f"{key}: names a method or section, not an option"
    for i, part in enumerate(parts):
        cls = type(obj)
        names = {f.name for f in dataclasses.fields(cls)}
        assert part in names, f"{key}: {cls.__name__} has no option {part!r} ({sorted(names)})"
        tp = _field_type(cls, part)
        obj = getattr(obj, part)
        if obj is None and i < len(parts) - 1:  # an optional section: its own defaults
            sub = _dataclass_in(tp)
            assert sub is not None, f"{key}: {part!r} is not a section"
            obj = sub()
    return obj, tp


def parse_value(text: str, tp: Any) -> Any:
    """A documented value as the option's type would hold it."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if text == "null" and type(None) in typing.get_args(tp):
        return None
    if typing.get_origin(tp) is typing.Literal:
        assert text in args, f"{text!r} is not one of {args}"
        return text
    if tp is bool or bool in args:
        assert text in ("true", "false"), f"{text!r} is not a boolean"
        return text == "true"
    if tp in (int, float) or int in args or float in args:
        return float(Fraction(text))
    return text


def _normalised(value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


READINGS = table_rows(section(METHOD_CARD, "Readings the paper leaves open"))


def test_readings_table_is_parsed() -> None:
    keys = [backticked(r[0])[0] for r in READINGS]
    # a change of the table's format must not turn the drift check into a no-op
    assert len(keys) >= 20 and "afa.denominator" in keys and "classifier.protocol" in keys


@pytest.mark.parametrize("row", READINGS, ids=lambda r: backticked(r[0])[0])
def test_reading_option_exists_with_documented_default(row: list[str]) -> None:
    (key,) = backticked(row[0])
    values = backticked(row[1])
    assert values, f"{key}: no values listed"
    default, tp = resolve_option(key)
    parsed = [parse_value(v, tp) for v in values]
    assert _normalised(default) == parsed[0], (
        f"docs/method.md says the default of {key} is {values[0]!r}; the code has {default!r}"
    )
    assert len(set(map(str, parsed))) == len(parsed), f"{key}: a value listed twice"


def test_resolve_option_rejects_what_the_code_lacks() -> None:
    with pytest.raises(AssertionError, match="no option"):
        resolve_option("afa.denominatr")
    with pytest.raises(AssertionError, match="no option"):
        resolve_option("classifier.protocols")
    with pytest.raises(AssertionError, match="not one of"):
        parse_value("supconn", resolve_option("afa.denominator")[1])
    assert resolve_option("threat.eps")[0] == ThreatModel().eps
    assert resolve_option("train.ema.decay")[0] == 0


def test_evaluation_flags_are_the_codes() -> None:
    flags = [backticked(r[0])[0] for r in table_rows(section(METHOD_CARD, "Evaluation protocol"))]
    assert len(flags) == 5
    code = "\n".join(p.read_text() for p in (ROOT / "src/afa/evaluation").rglob("*.py"))
    missing = [f for f in flags if f'"{f}"' not in code]
    assert not missing, f"docs/method.md lists sanity flags the evaluation never writes: {missing}"


def test_stage_two_protocols_are_the_codes() -> None:
    rows = table_rows(section(METHOD_CARD, "Training pipeline"))
    protocols = [backticked(r[0])[0] for r in rows]
    _, tp = resolve_option("classifier.protocol")
    assert sorted(protocols) == sorted(typing.get_args(tp))


# ----------------------------------------------------------------------- docs/architecture.md

ARCHITECTURE = DOCS / "architecture.md"


def test_layer_table_is_the_layer_tests() -> None:
    """The layers of docs/architecture.md are those tests/unit/test_layers.py enforces."""
    spec = importlib.util.spec_from_file_location("_layers", ROOT / "tests/unit/test_layers.py")
    assert spec is not None and spec.loader is not None
    layers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layers)
    documented = {}
    for line in section(ARCHITECTURE, "Layers").splitlines():
        if m := re.match(r"\|\s*L(\d+)\s*\|([^|]*)\|", line):
            for package in backticked(m.group(2)):
                documented[package] = int(m.group(1))
    assert documented == layers.LAYERS


def example_blocks(page: Path) -> tuple[dict[str, str], list[str]]:
    """The page's ```python file=NAME blocks (by name) and its ```python run blocks."""
    files, runs = {}, []
    for info, body in re.findall(r"```python ([^\n]+)\n(.*?)```", page.read_text(), re.S):
        if info.startswith("file="):
            files[info.removeprefix("file=")] = body
        elif info == "run":
            runs.append(body)
    return files, runs


def test_worked_examples_run(tmp_path: Path) -> None:
    """Every worked example of docs/architecture.md runs against the current code, and the
    example method keeps the method contract.

    In a fresh interpreter, so the example's registrations stay out of this test session's
    registries.
    """
    files, runs = example_blocks(ARCHITECTURE)
    assert set(files) == {"fgsm_at.py", "mlp.py", "stripes.py", "fgsm.py", "budget.py"}
    assert len(runs) == 5
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    script = "\n\n".join(
        f"def example_{i}():\n" + textwrap.indent(body, "    ") + f"\n\nexample_{i}()"
        for i, body in enumerate(runs)
    )
    # The documented method keeps the contract every registered method is tested against.
    script += (
        f"\n\nimport sys\nsys.path.insert(0, {str(ROOT / 'tests' / 'unit')!r})\n"
        "from test_method_contract import check_resume_contract, check_step_contract\n"
        "from fgsm_at import FGSMAT\n"
        "check_step_contract(FGSMAT)\ncheck_resume_contract(FGSMAT)\n"
    )
    (tmp_path / "examples.py").write_text(script)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "examples.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "FGSM (CE)" in proc.stdout


def test_an_evaluation_attack_with_a_setting_is_one_file() -> None:
    """The worked evaluation attack's setting reached ``evaluate``, a run's config, ``afa
    eval`` and eval.json (:func:`test_worked_examples_run`) with no file of the tree
    naming it: its own file is the whole change."""
    files, _ = example_blocks(ARCHITECTURE)
    assert "step_fraction: float = 1.0" in files["fgsm.py"]
    tree = [p for p in (ROOT / "src").rglob("*") if p.suffix in (".py", ".yaml")]
    naming = [str(p.relative_to(ROOT)) for p in tree if "step_fraction" in p.read_text()]
    assert not naming, f"the tree names the example's setting: {naming}"


def test_a_command_is_one_file() -> None:
    """The worked command ran as ``afa budget`` (:func:`test_worked_examples_run`) with no
    file of the command line naming it: its own file is the whole change."""
    files, _ = example_blocks(ARCHITECTURE)
    assert 'register_command("budget"' in files["budget.py"]
    cli = sorted((ROOT / "src" / "afa" / "cli").rglob("*.py"))
    naming = [str(p.relative_to(ROOT)) for p in cli if '"budget"' in p.read_text()]
    assert not naming, f"the command line names the example's command: {naming}"
