"""The README and the pages of docs/ read as product documentation, and their links hold.

* every relative link of the README (and its ``#section``) resolves, as those of ``docs/*.md``
  do (``tests/unit/test_docs.py``);
* the README stays a front door: short, with the two commands CI and newcomers rely on;
* no page speaks of how the project is run (work items, their numbers, sessions).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_docs import PAGES, ROOT, anchors

README = ROOT / "README.md"


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.is_file() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    return broken


def test_readme_links_resolve() -> None:
    assert "](docs/" in README.read_text()
    assert not broken_links(README), f"README.md: links that do not resolve: {broken_links(README)}"


def test_readme_is_a_front_door() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 250
    assert "make quickstart" in text and "make test" in text  # .ci/run calls `make test`
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", text))
    assert linked == {p.name for p in PAGES}, "the README links every page of docs/"


PROCESS_WORDS = re.compile(
    r"\bissues? #?\d+|\bissue\b|\bsessions?\b|done[ -]criterion|\bTODO\b", re.IGNORECASE
)


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_no_words_of_the_process(page: Path) -> None:
    found = sorted({m.group(0) for m in PROCESS_WORDS.finditer(page.read_text())})
    assert not found, f"{page.name} speaks of the project's process: {found}"
