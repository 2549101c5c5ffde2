"""benchmarks/alignment_table.py end to end in its ``--tiny`` mode on two tiny digits runs.

An end-to-end run (PGD-AT) and a two-stage run (AFA pre-training + SLF probe, whose
checkpoint's model holds the pre-trained encoder), matched by a glob; the JSON and the
markdown are written and the table printed, one row per run.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from benchmark_modules import load_benchmark  # tests/benchmark_modules.py

from afa.recipes import resolve_recipe
from afa.runs import load_run_config
from afa.training.plan import train_run


def load() -> ModuleType:
    return load_benchmark("alignment_table")


def tiny_run(out: Path, recipe: str, *extra: str) -> Path:
    cfg = load_run_config(
        resolve_recipe(recipe),
        [
            f"out_dir={out}",
            "train.epochs=1",
            "model.options.width=4",
            "threat.steps=1",
            "device=cpu",
            *extra,
        ],
    )
    train_run(cfg)
    return cfg.run_dir


def test_tiny_table_of_two_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    tiny_run(runs, "digits-pgd-at")
    tiny_run(runs, "digits-afa", "classifier.epochs=1")
    out = tmp_path / "results" / "table.json"
    bench = load()
    argv = ["--runs", str(runs / "*"), "--tiny", "--device", "cpu", "--out", str(out)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["failed"] == [] and "TINY SMOKE RUN" in record["header"]
    rows = {r["method"]: r for r in record["runs"]}
    assert set(rows) == {"pgd-at", "afa"}
    assert rows["afa"]["stage2"] == "slf" and rows["pgd-at"]["stage2"] is None
    for r in rows.values():
        assert r["n"] == 48 and r["n_train"] == 200  # --tiny
        assert set(r["inputs"]) == {"clean", "pgd", "afa"}
        for kind in r["inputs"].values():
            assert kind["loss_over_chance"] > 0 and isinstance(kind["separation"], float)
        assert 0.0 <= r["probe"]["accuracy"] <= 1.0
        assert r["collapse"]["separation_init"] is not None
        assert r["inputs"]["pgd"]["label"] == "PGD-1 (CE, BN eval)"
    md = out.with_suffix(".md").read_text()
    assert md.count("\n| digits-") == 2 and md in printed + "\n"
    # one bad directory is refused by name
    with pytest.raises(SystemExit, match="no run directory"):
        bench.main(["--runs", str(tmp_path / "nothing"), "--tiny", "--out", str(out)])
