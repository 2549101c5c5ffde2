"""The quickstart's worker processes change its wall time, never its results."""

from __future__ import annotations

import json

from afa.cli.main import main

SMOKE = [
    "--epochs",
    "1",
    "--eval-examples",
    "24",
    "--methods",
    "standard,pgd-at",
    "--attacks",
    "pgd",
]


def _numbers(run_dir) -> dict:
    record = json.loads((run_dir / "eval.json").read_text())
    return {k: record[k] for k in ("clean_acc", "robust_acc", "n_examples")} | {
        label: a["robust_acc"] for label, a in record["attacks"].items()
    }


def test_two_workers_give_the_results_of_one(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["quickstart", "--out", str(one), "--workers", "1", *SMOKE]) == 0
    assert main(["quickstart", "--out", str(two), "--workers", "2", *SMOKE]) == 0
    out = capsys.readouterr().out
    assert out.count("quickstart finished in") == 2 and "| pgd-at |" in out
    for method in ("standard", "pgd-at"):
        assert _numbers(one / method) == _numbers(two / method), method
        assert _epochs(one / method) == _epochs(two / method), method


def _epochs(run_dir) -> list[dict]:
    """metrics.jsonl without its wall times."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in rows]
