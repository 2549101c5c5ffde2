"""``afa export`` end to end: a tiny trained run, its eval, its RobustBench model_info JSON."""

from __future__ import annotations

import json

from afa.cli.main import main


def test_train_eval_export(tmp_path, capsys):
    train = [
        "train",
        "digits-pgd-at",
        f"out_dir={tmp_path}",
        "name=tiny",
        "train.epochs=1",
        "model.options={width: 4}",
    ]
    assert main(train) == 0
    run = tmp_path / "tiny"
    assert main(["eval", str(run), "--n", "24", "--attacks", "pgd,autoattack"]) == 0
    capsys.readouterr()
    assert main(["export", str(run)]) == 0
    out = capsys.readouterr().out
    path = run / "model_info" / "digits" / "Linf" / "tiny.json"
    assert f"model_info: {path}" in out
    assert "left empty (eval.json does not know them): link, name, authors, venue, reported" in out
    info = json.loads(path.read_text())
    ev = json.loads((run / "eval.json").read_text())
    assert info["dataset"] == "digits" and info["architecture"] == "CNN"
    assert info["eps"] == "0.2"  # the digits recipe's radius (not a multiple of 1/255)
    assert info["clean_acc"] == f"{100 * ev['clean_acc']:.2f}"
    aa = ev["attacks"]["AutoAttack (standard)"]["robust_acc"]
    assert info["autoattack_acc"] == f"{100 * aa:.2f}"
    assert info["additional_data"] is False and info["number_forward_passes"] == 1
    assert isinstance(info["unreliable"], bool)
    assert "the first 24" not in info["footnote"]  # digits has no RobustBench test-set size

    # --out and --name, and a run without eval.json is one line with status 2.
    assert main(["export", str(run), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text()) == info
    assert main(["export", str(tmp_path)]) == 2
    assert "eval.json: not found" in capsys.readouterr().err
