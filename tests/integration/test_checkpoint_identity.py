"""Which checkpoint a result describes, and a model that is not finite, through the CLI.

* eval.json and analysis.json record the checkpoint they measured (epoch, step, sha256);
  ``afa compare`` and ``afa export`` warn, and mark their output, once the run's
  checkpoint is another one.
* a checkpoint with a NaN or infinite weight, or one whose logits are not finite, makes
  ``afa eval`` fail with one line naming the file (exit 2), never score chance accuracy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch

from afa.cli.main import main

TINY = ["train.epochs=1", "model.options={width: 4}", "eval.n_examples=24", "eval.attacks=[pgd]"]
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d ")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """``run`` (1 epoch) and ``later`` (2 epochs, another seed): a checkpoint to move on to."""
    root = tmp_path_factory.mktemp("identity")
    assert main(["train", "digits-pgd-at", f"out_dir={root}", "name=run", *TINY]) == 0
    later = [*TINY[1:], "train.epochs=2", "train.seed=1"]
    assert main(["train", "digits-pgd-at", f"out_dir={root}", "name=later", *later]) == 0
    return root


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_run(runs: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(runs / "run", run)
    return run


def test_eval_and_analysis_record_the_checkpoint(runs, tmp_path):
    run = _copy_run(runs, tmp_path)
    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert main(["eval", str(run), "--no-sanity"]) == 0
    assert main(["analyze", str(run), "--n-test", "24", "--n-train", "100", "--no-figures"]) == 0
    for name in ("eval.json", "analysis.json"):
        identity = json.loads((run / name).read_text())["checkpoint_identity"]
        assert identity["sha256"] == _sha256(run / "best.pt"), name
        assert identity["epoch"] == ckpt["global_epoch"] == 1, name
        assert identity["step"] == ckpt["global_step"] > 0, name
        assert identity["path"].endswith("best.pt") and identity["stage"] == "train", name


def test_compare_and_export_say_when_the_run_has_moved_on(runs, tmp_path, caplog):
    run = _copy_run(runs, tmp_path)
    assert main(["eval", str(run), "--no-sanity"]) == 0
    assert main(["analyze", str(run), "--n-test", "24", "--n-train", "100", "--no-figures"]) == 0

    # still the same checkpoint: nothing to say
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="afa"):
        assert main(["compare", str(run), "--out", str(tmp_path / "same")]) == 0
        assert main(["export", str(run), "--out", str(tmp_path / "same.json")]) == 0
    assert not [r for r in caplog.records if "moved on" in r.getMessage()]
    same = json.loads((tmp_path / "same" / "report.json").read_text())
    assert same["runs"][0]["checkpoint_moved_on"] == []
    assert "Stale" not in json.loads((tmp_path / "same.json").read_text())["footnote"]

    # the run trains on: best.pt is now a later epoch's
    shutil.copyfile(runs / "later" / "last.pt", run / "best.pt")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="afa"):
        assert main(["compare", str(run), "--out", str(tmp_path / "moved")]) == 0
    warned = [r.getMessage() for r in caplog.records if "moved on" in r.getMessage()]
    assert len(warned) == 2  # eval.json and analysis.json
    assert any("eval.json describes best.pt at epoch 1" in w for w in warned)
    assert all("is now epoch 2" in w for w in warned)
    report = json.loads((tmp_path / "moved" / "report.json").read_text())
    moved = report["runs"][0]["checkpoint_moved_on"]
    assert len(moved) == 2 and "analysis.json" in moved[1]
    md = (tmp_path / "moved" / "report.md").read_text()
    assert "| run ‡ |" in md and "‡ the run's checkpoint has changed" in md

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="afa"):
        assert main(["export", str(run), "--out", str(tmp_path / "moved.json")]) == 0
    assert [r for r in caplog.records if "eval.json describes best.pt" in r.getMessage()]
    footnote = json.loads((tmp_path / "moved.json").read_text())["footnote"]
    assert "Stale: eval.json describes best.pt at epoch 1" in footnote


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line and not LOG_LINE.match(line)]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_eval_refuses_a_non_finite_weight(runs, tmp_path, capsys, value):
    ckpt = torch.load(runs / "run" / "best.pt", map_location="cpu", weights_only=True)
    key = next(k for k, v in ckpt["model"].items() if v.is_floating_point() and v.dim() > 1)
    ckpt["model"][key].view(-1)[0] = value
    bad = tmp_path / "diverged.pt"
    torch.save(ckpt, bad)
    capsys.readouterr()
    assert main(["eval", str(bad), "--no-sanity"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("afa: error: ")
    assert str(bad) in lines[0] and repr(key) in lines[0] and "NaN/inf" in lines[0]
    assert not (tmp_path / "eval.json").exists()


def test_eval_refuses_non_finite_logits(runs, tmp_path, capsys):
    """Finite weights whose logits are NaN (a negative BN running variance): one line
    naming the file, no eval.json."""
    ckpt = torch.load(runs / "run" / "best.pt", map_location="cpu", weights_only=True)
    key = next(k for k in ckpt["model"] if k.endswith("running_var"))
    ckpt["model"][key].fill_(-1.0)
    bad = tmp_path / "negative_var.pt"
    torch.save(ckpt, bad)
    capsys.readouterr()
    assert main(["eval", str(bad), "--no-sanity"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(bad) in lines[0] and "logits are NaN or infinite" in lines[0]
    assert not (tmp_path / "eval.json").exists()
