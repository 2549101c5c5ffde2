"""The command line end to end on digits: train, resume, eval, analyze, compare, quickstart.

Tiny budgets keep this fast; the documented quickstart itself is the ``slow`` test.
"""

from __future__ import annotations

import json

import pytest

from afa.cli.main import main

TINY = [
    "train.epochs=1",
    "eval.n_examples=24",
    "eval.attacks=[pgd,apgd-ce]",
    "model.options={width: 8}",
]


def _train(tmp_path, recipe: str, *extra: str) -> int:
    return main(["train", recipe, f"out_dir={tmp_path}", "name=run", *TINY, *extra])


def test_train_resume_eval_analyze_compare(tmp_path, capsys):
    assert _train(tmp_path, "digits-pgd-at") == 0
    run = tmp_path / "run"
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt"} <= {p.name for p in run.iterdir()}

    # a second train into the same directory must not overwrite it
    assert _train(tmp_path, "digits-pgd-at") == 2
    assert "--resume" in capsys.readouterr().err
    # resuming a finished run is a no-op that succeeds
    assert _train(tmp_path, "digits-pgd-at", "--resume") == 0

    assert main(["eval", str(run), "--eps", "0.1"]) == 0
    record = json.loads((run / "eval.json").read_text())
    assert record["method"] == "pgd-at" and record["n_examples"] == 24
    assert record["threat_overrides"] == {"eps": 0.1} and record["threat_model"]["eps"] == 0.1
    assert set(record["attacks"]) == {"PGD-20 (CE, BN eval)", "AutoAttack (apgd-ce)"}
    assert 0 <= record["robust_acc"] <= record["clean_acc"] <= 1

    assert main(["analyze", str(run), "--n-test", "40", "--no-figures"]) == 0
    analysis = json.loads((run / "analysis.json").read_text())
    assert analysis["method"] == "pgd-at"

    assert main(["compare", str(run), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.html").is_file()


def test_user_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert main(["train", "digits-pgd-at", "threat.epss=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "threat.epss" in err and "threat.eps" in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["eval", str(tmp_path / "bad.pt")]) == 2
    assert "bad.pt" in capsys.readouterr().err


def test_quickstart_smoke(tmp_path):
    args = ["quickstart", "--out", str(tmp_path), "--epochs", "1", "--eval-examples", "24"]
    assert main([*args, "--methods", "standard,afa", "--attacks", "pgd"]) == 0
    table = json.loads((tmp_path / "report.json").read_text())
    assert table and (tmp_path / "report.html").is_file() and (tmp_path / "report.md").is_file()


@pytest.mark.slow
def test_documented_quickstart(tmp_path):
    """The README's main job, at its real budget (several minutes on 2 CPU cores)."""
    assert main(["quickstart", "--out", str(tmp_path)]) == 0
    for method in ("standard", "pgd-at", "trades", "afa", "afa-trades"):
        record = json.loads((tmp_path / method / "eval.json").read_text())
        assert all(check["passed"] for check in record["sanity"].values()), method
