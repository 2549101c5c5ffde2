"""``afa eval`` / ``afa analyze`` ``--test-data``: a tiny digits run scored on an ``.npz`` test
set written here in the real layout; the test set is checked against the model before any
attack runs, recorded in eval.json / analysis.json, and named in the report's table."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import afa.analysis.runs as analysis_runs
import afa.evaluation.runs as eval_runs
from afa.cli.main import main
from afa.data import DataConfig, load_splits
from afa.runs import load_trained

TINY = ["train.epochs=1", "model.options={width: 4}", "eval.n_examples=16"]
EVAL = ["--attacks", "pgd", "--no-sanity", "--steps", "2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("test-data")
    assert main(["train", "digits-pgd-at", f"out_dir={out}", "name=run", *TINY]) == 0
    return out / "run"


@pytest.fixture(scope="module")
def digits_test():
    test = load_splits(DataConfig(name="digits")).test
    # Reversed, so that its first examples are not the run's own first test examples.
    return test.images[::-1].copy(), test.labels[::-1].copy()


def _write(path, images, labels):
    """An ``.npz`` test set as users save one: NHWC uint8 ``x_test`` and int ``y_test``."""
    np.savez(path, x_test=np.ascontiguousarray(images.transpose(0, 2, 3, 1)), y_test=labels)
    return path


@pytest.fixture(scope="module")
def held(run, digits_test):
    return _write(run.parent / "held.npz", *digits_test)


@pytest.fixture
def attacked(monkeypatch):
    """The evaluations and analyses that started (each attacks the model)."""
    calls = []
    for module, name in ((eval_runs, "evaluate"), (analysis_runs, "analyze")):
        real = getattr(module, name)

        def spy(*args, _real=real, _name=name, **kw):
            calls.append(_name)
            return _real(*args, **kw)

        monkeypatch.setattr(module, name, spy)
    return calls


def _clean_acc(run, images: np.ndarray, labels: np.ndarray) -> float:
    model, _, _ = load_trained(run)
    with torch.no_grad():
        pred = model(torch.from_numpy(images).float() / 255).argmax(1)
    return float((pred == torch.from_numpy(labels)).float().mean())


def test_eval_scores_and_records_the_npz_test_set(run, held, digits_test, capsys):
    assert main(["eval", str(run), *EVAL, "--test-data", f"npz:{held}"]) == 0
    record = json.loads((run / "eval.json").read_text())
    images, labels = digits_test
    assert record["test_data"] == {
        "label": f"npz:{held}",
        "own": False,
        "dataset": "npz",
        "path": str(held.resolve()),
        "name": "held",
        "n": len(labels),
        "options": {"image_key": "x_test", "label_key": "y_test"},
    }
    assert record["n_examples"] == 16
    assert record["clean_acc"] == pytest.approx(_clean_acc(run, images[:16], labels[:16]))
    assert f"test set: npz:{held} ({len(labels)} images)" in capsys.readouterr().out

    # The data-section form names the same test set.
    argv = ["eval", str(run), *EVAL, "--test-data", "data.name=npz", "--test-data"]
    assert main([*argv, f"data.path={held}"]) == 0
    assert json.loads((run / "eval.json").read_text())["test_data"] == record["test_data"]


def test_without_test_data_the_runs_own_test_split_is_recorded(run, digits_test):
    assert main(["eval", str(run), *EVAL]) == 0
    record = json.loads((run / "eval.json").read_text())
    assert record["test_data"] == {
        "label": "digits test split",
        "own": True,
        "dataset": "digits",
        "path": None,
        "name": "digits",
        "n": len(digits_test[1]),
    }
    own = load_splits(DataConfig(name="digits")).test
    assert record["clean_acc"] == pytest.approx(_clean_acc(run, own.images[:16], own.labels[:16]))


def _nine_classes(images, labels):
    return images, labels % 9


def _three_channels(images, labels):
    return np.repeat(images, 3, axis=1), labels


def _larger(images, labels):
    return np.repeat(np.repeat(images, 2, axis=2), 2, axis=3), labels


def _twelve_classes(images, labels):
    return images, np.where(labels == 9, 11, labels)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_nine_classes, "9 classes, the model has 10"),
        (_twelve_classes, "12 classes, the model has 10"),
        (_three_channels, "images have 3 channel(s), the model takes 1"),
        (_larger, "images are 16x16, the model takes 8x8"),
    ],
)
def test_a_mismatching_test_set_exits_2_in_one_line_before_any_attack(
    run, digits_test, tmp_path, capsys, attacked, change, message
):
    bad = _write(tmp_path / "bad.npz", *change(*digits_test))
    before = (run / "eval.json").read_bytes() if (run / "eval.json").exists() else None
    for command in (["eval", str(run), *EVAL], ["analyze", str(run), "--no-figures"]):
        assert main([*command, "--test-data", f"npz:{bad}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"afa: error: test data npz:{bad}: ") and err.count("\n") == 1
        assert message in err and "digits" in err
    assert attacked == []
    after = (run / "eval.json").read_bytes() if (run / "eval.json").exists() else None
    assert after == before


def test_a_bad_test_data_spec_exits_2_naming_it(run, capsys):
    for items, words in (
        (["npz"], "npz needs its file"),
        (["mnist:data"], "unknown dataset 'mnist'"),
        (["npz:x.npz", "pth=y.npz"], "unknown key 'data.pth' (did you mean 'data.path'?)"),
        (["npz:x.npz", "augment=none"], "data.augment shapes training only"),
        (["test_image_key=images"], "name the data"),
    ):
        argv = ["eval", str(run), *EVAL]
        for item in items:
            argv += ["--test-data", item]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err


def test_analyze_records_the_test_set_and_compare_names_it(run, held, digits_test, tmp_path):
    argv = ["analyze", str(run), "--no-figures", "--n-test", "20", "--test-data", f"npz:{held}"]
    assert main(argv) == 0
    analysis = json.loads((run / "analysis.json").read_text())
    assert analysis["test_data"]["label"] == f"npz:{held}" and analysis["test_data"]["own"] is False
    assert analysis["n_test"] == 20

    assert main(["eval", str(run), *EVAL, "--test-data", f"npz:{held}"]) == 0
    assert main(["compare", str(run), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    (row,) = report["runs"]
    assert row["test_set"] == f"npz:{held}" and row["own_test_set"] is False
    md = (tmp_path / "report" / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| #"))
    assert "Test set" in header
    assert f"samples of the test set npz:{held}" in md


def test_eval_of_a_memory_mapped_test_set_prints_no_numpy_warning(run, held):
    """A fresh process: torch warns about a read-only array once per process only."""
    argv = [sys.executable, "-m", "afa", "eval", str(run), *EVAL, "--n", "8"]
    done = subprocess.run(
        [*argv, "--test-data", f"npz:{held}"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "not writable" not in done.stderr + done.stdout


def test_a_published_model_on_another_test_set(tmp_path, monkeypatch, held, capsys):
    from cifar_files import write_cifar_like
    from test_cli_robustbench import _dm_wrn_10_1_state

    from afa.models import robustbench as rb
    from afa.models.robustbench import PublishedModel

    name = "Tiny2026TestData"
    entry = PublishedModel(
        name, "dm-wrn", {"depth": 10, "widen_factor": 1}, "dm", "no-such-id", "WideResNet-10-1"
    )
    monkeypatch.setitem(rb.PUBLISHED, name, entry)
    write_cifar_like(tmp_path / "data", "cifar10", n_train=30, n_test=20, seed=0)
    write_cifar_like(tmp_path / "other", "cifar10", n_train=10, n_test=12, seed=1)
    ckpt = tmp_path / f"{name}.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in _dm_wrn_10_1_state().items()}}, ckpt)
    spec, out = f"robustbench:{name}@{ckpt}", tmp_path / "rb"
    common = ["--data-root", str(tmp_path / "data"), "--out", str(out)]

    other = f"cifar10:{tmp_path / 'other'}"
    assert main(["eval", spec, *EVAL, *common, "--test-data", other]) == 0
    record = json.loads((out / "eval.json").read_text())
    assert record["test_data"]["label"] == other and record["test_data"]["n"] == 12
    assert record["n_examples"] == 12
    assert main(["export", str(out), "--name", name]) == 0
    assert "not the test split of the training data (cifar10)" in capsys.readouterr().out

    assert main(["eval", spec, *EVAL, *common, "--test-data", f"npz:{held}"]) == 2
    assert "1 channel(s), the model takes 3" in capsys.readouterr().err
