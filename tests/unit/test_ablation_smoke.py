"""benchmarks/ablation.py end to end at its smallest: two variants, one epoch, a tiny CNN.

Checks the machinery, not the numbers of the study: every row is reproducible from its
``afa train`` command, the budget column is ``adversarial_epochs``, the contrastive
indicators are kept, the summary's mean/std are those of the rows, and a finished run is
reused from its cache.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import ModuleType

import pytest
from benchmark_modules import load_benchmark  # tests/benchmark_modules.py

from afa.config import to_dict
from afa.runs import load_run_config

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load() -> ModuleType:
    return load_benchmark("ablation")


def tiny_suite(ab: ModuleType) -> object:
    """pgd-at and afa (+ clean linear probe), 1 epoch each, width-4 CNN, PGD-1."""
    return ab.Suite(
        "tiny",
        (
            ab.Variant("pgd-at", "digits-pgd-at.yaml"),
            # classifier.* exists only for pre-training recipes
            ab.Variant("afa", "digits-afa.yaml", ("method.head_dim=8", "classifier.epochs=1")),
        ),
        common=(
            "model.options={width: 4}",
            "threat.steps=1",
            "train.epochs=1",
            "train.batch_size=256",
            "train.val_examples=32",
        ),
        attacks=("pgd",),
        n_eval=24,
    )


def test_ablation_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ab = load()
    suite = tiny_suite(ab)
    monkeypatch.setitem(ab.SUITES, "tiny", lambda data=None: suite)
    out = tmp_path / "res.json"
    argv = [
        "--suite",
        "tiny",
        "--seeds",
        "0",
        "1",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--out",
        str(out),
    ]
    assert ab.main(argv) == 0
    rec = json.loads(out.read_text())
    assert out.with_suffix(".md").read_text().count("\n| ") == 2 + 1  # header rule + 2 rows
    runs = rec["runs"]
    assert [(r["variant"], r["seed"]) for r in runs] == [
        ("pgd-at", 0),
        ("pgd-at", 1),
        ("afa", 0),
        ("afa", 1),
    ]
    by = {s["variant"]: s for s in rec["summary"]}
    # budget: pgd-at 1 adversarial epoch; afa 1 (pre-training) + 0 (clean linear probe)
    assert by["pgd-at"]["adv_epochs"] == [1] and by["afa"]["adv_epochs"] == [1]
    assert rec["warnings"] == []
    for r in runs:
        assert r["n_eval"] == 24
        assert 0.0 <= r["robust_acc"] <= r["clean_acc"] <= 1.0
        # the command reproduces the run's config exactly
        args = shlex.split(r["command"])
        assert args[:2] == ["afa", "train"]
        cfg = load_run_config(Path(BENCH.parent) / args[2], args[3:])
        again = load_run_config(Path(BENCH.parent) / args[2], args[3:])
        assert to_dict(cfg) == to_dict(again)
        assert cfg.train.seed == r["seed"]
    afa_rows = [r for r in runs if r["variant"] == "afa"]
    assert all("cos_gap" in r and isinstance(r["collapse_warning"], bool) for r in afa_rows)
    assert all("cos_gap" not in r for r in runs if r["variant"] == "pgd-at")
    clean = [100 * r["clean_acc"] for r in afa_rows]
    assert by["afa"]["clean_mean"] == pytest.approx(sum(clean) / 2)
    assert by["afa"]["clean_std"] == pytest.approx(abs(clean[0] - clean[1]) / 2**0.5)

    # a second call reuses every finished run (same numbers, no training)
    assert ab.main(argv) == 0
    again = json.loads(out.read_text())
    assert [r["robust_acc"] for r in again["runs"]] == [r["robust_acc"] for r in runs]
    assert [r["train_s"] for r in again["runs"]] == [r["train_s"] for r in runs]


def test_budget_warning_and_mean_std() -> None:
    ab = load()
    assert ab.mean_std([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert ab.mean_std([5.0]) == (5.0, 0.0)
    rows = [
        {"method": "pgd-at", "adv_epochs": 20},
        {"method": "afa", "adv_epochs": 15},
        {"method": "supcon", "adv_epochs": 0},
    ]
    assert ab.check_budget([], rows) == [
        "adversarial methods differ in adversarial epochs: [15, 20]"
    ]
    assert ab.check_budget([], rows[:1] + rows[2:]) == []
