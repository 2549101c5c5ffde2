"""Accuracy under shift: counts per corruption and severity against loop oracles, the official
CIFAR-10-C / CIFAR-10.1 layouts written here, eval mode, seeds, the CA mean."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from afa.data import DatasetInfo, ImageSet
from afa.data.transforms.corruptions import COMMON, corrupt
from afa.errors import ConfigError
from afa.evaluation.shift import (
    GENERATE,
    CorruptionResult,
    count_correct,
    evaluate_shift,
    format_corruption_table,
    generated_corruption_accuracy,
)


def tiny_model(c: int, size: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * size * size, 10),
    )  # fmt: skip


def data(n: int, c: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, c, size, size), dtype=np.uint8), rng.integers(0, 10, n)


def oracle_correct(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> int:
    """One image at a time, in eval mode."""
    model.eval()
    with torch.no_grad():
        return sum(
            int(model(torch.from_numpy(images[i : i + 1]).float() / 255).argmax() == labels[i])
            for i in range(len(labels))
        )


def info(name: str, c: int, size: int) -> DatasetInfo:
    return DatasetInfo(name, 10, (c, size, size), (0.5,) * c, (0.25,) * c, (), "none")


def test_count_correct_is_the_per_image_count_in_eval_mode_and_restores_the_mode():
    model = tiny_model(3, 8)
    model.train()
    with torch.no_grad():  # move the running statistics away from their initial values
        model(torch.rand(16, 3, 8, 8) * 3)
    images, labels = data(13, 3, 8)
    model.train()
    got = count_correct(model, images, labels, batch_size=4, device="cpu")
    want = oracle_correct(model, images, labels)
    assert got == want
    model.train()
    count_correct(model, images, labels, batch_size=4, device="cpu")
    assert model.training and all(m.training for m in model.modules())


def test_generated_counts_match_a_loop_oracle_and_ignore_the_batch_size():
    model = tiny_model(1, 8)
    images, labels = data(11, 1, 8)
    names = ["gaussian_noise", "contrast", "zoom_blur"]
    res = generated_corruption_accuracy(
        model, images, labels, corruptions=names, severities=(1, 5), seed=3, batch_size=4
    )
    for name in names:
        for k, s in enumerate((1, 5)):
            rng = np.random.default_rng([3, zlib.crc32(name.encode()), s, 0])
            x = corrupt(images, name, s, rng)
            assert res.n_correct[name][k] == oracle_correct(model, x, labels), (name, s)
    again = generated_corruption_accuracy(
        model, images, labels, corruptions=names[::-1], severities=(1, 5), seed=3, batch_size=64
    )
    assert again.n_correct == {n: res.n_correct[n] for n in names}
    assert res.clean_n_correct == oracle_correct(model, images, labels)
    assert res.record()["seed"] == 3 and res.record()["severities"] == [1, 5]


def test_default_generated_set_records_what_was_left_out_and_why():
    model = tiny_model(1, 8)
    images, labels = data(5, 1, 8)
    rec = generated_corruption_accuracy(model, images, labels, severities=(2,)).record()
    assert list(rec["per_corruption"]) == [c for c in COMMON if c != "frost"]
    assert set(rec["not_run"]) == {"frost"}
    assert "frost photographs" in rec["not_run"]["frost"]


def test_ca_is_counts_over_all_cells_divided_once():
    r = CorruptionResult(
        source="generated",
        n_examples=4,
        severities=[1, 2, 3, 4, 5],
        n_correct={"a": [4, 3, 2, 1, 0], "b": [4, 4, 4, 4, 3]},
        clean_n_correct=4,
    )
    assert r.mean_acc == pytest.approx(29 / 40)
    assert r.corruption_acc("a") == pytest.approx(0.5)
    assert r.severity_acc(5) == pytest.approx(3 / 8)
    assert r.acc("b", 5) == 0.75
    rec = r.record()
    assert rec["mean_acc"] == pytest.approx(0.725) and rec["clean_acc"] == 1.0
    assert rec["per_corruption"]["a"]["acc"] == [1.0, 0.75, 0.5, 0.25, 0.0]
    table = format_corruption_table(rec)
    assert "| a | 100.00 | 75.00 | 50.00 | 25.00 | 0.00 | 50.00 |" in table
    assert table.splitlines()[-1].endswith("| **72.50** |")


def write_cifar_c(folder: Path, names: tuple[str, ...], per: int) -> dict[str, np.ndarray]:
    """The official layout: ``<name>.npy`` (5 per, 32, 32, 3) uint8, ``labels.npy``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    labels = np.tile(rng.integers(0, 10, per), 5).astype(np.uint8)
    np.save(folder / "labels.npy", labels)
    arrays = {"labels": labels}
    for name in names:
        arrays[name] = rng.integers(0, 256, (5 * per, 32, 32, 3), dtype=np.uint8)
        np.save(folder / f"{name}.npy", arrays[name])
    return arrays


def test_official_files_are_scored_per_severity_block(tmp_path):
    per = 6
    files = write_cifar_c(tmp_path / "CIFAR-10-C", ("fog", "brightness"), per)
    model = tiny_model(3, 32)
    test = ImageSet(*data(per, 3, 32))
    out = evaluate_shift(
        model, test, info("cifar10", 3, 32), corruptions=tmp_path, n_examples=4, batch_size=3
    )
    rec = out["corruptions"]
    assert list(rec["per_corruption"]) == ["fog", "brightness"]  # the benchmark's order
    assert rec["n_examples"] == 4 and rec["seed"] is None
    assert set(rec["not_run"]) == set(COMMON) - {"fog", "brightness"}
    for name in ("fog", "brightness"):
        for s in range(1, 6):
            rows = slice((s - 1) * per, (s - 1) * per + 4)
            x = files[name][rows].transpose(0, 3, 1, 2)
            want = oracle_correct(model, np.ascontiguousarray(x), files["labels"][rows])
            assert rec["per_corruption"][name]["n_correct"][s - 1] == want
    assert rec["source"].endswith("CIFAR-10-C")


def test_official_files_only_for_cifar_runs_and_named_files_must_exist(tmp_path):
    write_cifar_c(tmp_path / "CIFAR-10-C", ("fog",), 2)
    model = tiny_model(1, 8)
    with pytest.raises(ConfigError, match="official corrupted files exist for cifar10"):
        evaluate_shift(model, ImageSet(*data(2, 1, 8)), info("digits", 1, 8), corruptions=tmp_path)
    with pytest.raises(ConfigError, match="no snow.npy"):
        evaluate_shift(
            tiny_model(3, 32),
            ImageSet(*data(2, 3, 32)),
            info("cifar10", 3, 32),
            corruptions=tmp_path,
            corruption_names=["fog", "snow"],
        )


def test_cifar10_1_accuracy_and_its_fit_to_the_run(tmp_path):
    images, labels = data(2000, 3, 32, seed=4)
    np.save(tmp_path / "cifar10.1_v6_data.npy", images.transpose(0, 2, 3, 1))
    np.save(tmp_path / "cifar10.1_v6_labels.npy", labels)
    model = tiny_model(3, 32)
    test = ImageSet(*data(4, 3, 32))
    out = evaluate_shift(
        model, test, info("cifar10", 3, 32), shift=["cifar10.1"], shift_root=tmp_path, n_examples=50
    )
    assert set(out) == {"cifar10.1"}
    rec = out["cifar10.1"]
    assert rec["n_examples"] == 50 and rec["version"] == "v6"
    assert rec["n_correct"] == oracle_correct(model, images[:50], labels[:50])
    assert rec["acc"] == rec["n_correct"] / 50
    with pytest.raises(ConfigError, match="CIFAR-10 models"):
        evaluate_shift(
            tiny_model(1, 8), ImageSet(*data(2, 1, 8)), info("digits", 1, 8), shift=["cifar10.1"]
        )
    with pytest.raises(ConfigError, match="unknown shift set"):
        evaluate_shift(model, test, info("cifar10", 3, 32), shift=["cifar10.2"])


def test_generate_through_evaluate_shift_uses_the_first_n_test_images():
    model = tiny_model(1, 8)
    test = ImageSet(*data(9, 1, 8))
    out = evaluate_shift(
        model,
        test,
        info("digits", 1, 8),
        corruptions=GENERATE,
        corruption_names=["brightness"],
        severities=(3,),
        n_examples=5,
        seed=1,
    )
    rec = out["corruptions"]
    assert rec["n_examples"] == 5 and rec["source"] == "generated"
    rng = np.random.default_rng([1, zlib.crc32(b"brightness"), 3, 0])
    x = corrupt(test.images[:5], "brightness", 3, rng)
    assert rec["per_corruption"]["brightness"]["n_correct"] == [
        oracle_correct(model, x, test.labels[:5])
    ]


def test_generated_images_are_seeded_per_cell_and_chunk(monkeypatch):
    from afa.evaluation import shift as shift_mod

    monkeypatch.setattr(shift_mod, "GENERATION_CHUNK", 4)
    images, labels = data(10, 3, 8)
    x, y = shift_mod.generated_source(images, labels, seed=5)("gaussian_noise", 2)
    np.testing.assert_array_equal(y, labels)
    for j, start in enumerate(range(0, 10, 4)):
        rng = np.random.default_rng([5, zlib.crc32(b"gaussian_noise"), 2, j])
        want = corrupt(images[start : start + 4], "gaussian_noise", 2, rng)
        np.testing.assert_array_equal(x[start : start + 4], want)


# --------------------------------------------------------------------------- the report


def write_evaluated_run(root: Path, name: str, clean: float, shift: dict | None) -> Path:
    import json

    run = root / name
    run.mkdir(parents=True)
    ev = {
        "dataset": "digits",
        "model": "cnn",
        "method": name,
        "threat_model": {"norm": "linf", "eps": 0.1, "description": "Linf eps=0.1"},
        "n_examples": 4,
        "clean_acc": clean,
        "attacks": {"PGD-20 (CE)": {"robust_acc": clean / 2}},
        "robust_acc": clean / 2,
        "sanity": {},
    }
    if shift is not None:
        ev["shift"] = shift
    (run / "eval.json").write_text(json.dumps(ev))
    return run


def test_compare_shows_shift_columns_a_corruption_table_and_the_severity_plot(tmp_path):
    import json

    from afa.report import compare

    r = CorruptionResult(
        source="generated",
        n_examples=4,
        severities=[1, 2, 3, 4, 5],
        n_correct={"gaussian_noise": [4, 3, 2, 1, 0], "contrast": [4, 4, 4, 4, 3]},
        clean_n_correct=4,
        not_run={"frost": "needs Hendrycks' frost photographs"},
        seed=0,
    )
    shift = {
        "cifar10.1": {"acc": 0.625, "n_correct": 5, "n_examples": 8},
        "corruptions": r.record(),
    }
    runs = [
        write_evaluated_run(tmp_path, "with-shift", 1.0, shift),
        write_evaluated_run(tmp_path, "without", 0.5, None),
    ]
    paths = compare(runs, tmp_path / "report")
    md = paths["md"].read_text()
    head = next(line for line in md.splitlines() if line.startswith("| #"))
    assert "CIFAR-10.1 (%)" in head and "Corruptions CA (%)" in head
    row = next(line for line in md.splitlines() if line.startswith("| 1 | with-shift"))
    assert "| 62.50 |" in row and "| 72.50 |" in row
    other = next(line for line in md.splitlines() if line.startswith("| 2 | without"))
    assert other.count("—") >= 2
    assert "## Common corruptions" in md
    assert "| gaussian noise | 50.00 |" in md and "| severity 5 (mean) | 37.50 |" in md
    assert "| CA (mean) | 72.50 |" in md
    assert "frost (needs Hendrycks' frost photographs)" in md
    assert (tmp_path / "report" / "report_figures" / "corruption_severity.png").is_file()
    assert "Accuracy under common corruptions" not in md  # the title is inside the PNG
    html = paths["html"].read_text()
    assert "Common corruptions" in html and html.count("data:image/png;base64") >= 2
    data = json.loads(paths["json"].read_text())
    by_name = {row["name"]: row for row in data["runs"]}
    assert by_name["with-shift"]["corruption_acc"] == pytest.approx(0.725)
    assert by_name["with-shift"]["shift"] == {"cifar10.1": 0.625}
    assert data["shift"] == ["cifar10.1"]


def test_compare_without_shift_results_has_no_shift_columns(tmp_path):
    from afa.report import compare

    paths = compare([write_evaluated_run(tmp_path, "plain", 0.9, None)], tmp_path / "report")
    md = paths["md"].read_text()
    assert "CA (%)" not in md and "CIFAR-10.1" not in md and "Common corruptions" not in md


def test_requests_that_cannot_run_are_refused_before_any_work():
    from afa.evaluation.shift import check_shift_request

    grey, cifar = info("digits", 1, 8), info("cifar10", 3, 32)
    with pytest.raises(ConfigError, match="1..5"):
        check_shift_request(grey, corruptions=GENERATE, severities=(0, 3))
    with pytest.raises(ConfigError, match="needs RGB"):
        check_shift_request(grey, corruptions=GENERATE, corruption_names=["saturate"])
    with pytest.raises(ConfigError, match="did you mean 'snow'"):
        check_shift_request(cifar, corruptions="/data/CIFAR-10-C", corruption_names=["snaw"])
    check_shift_request(cifar, corruptions="/data/CIFAR-10-C", corruption_names=["frost"])
    check_shift_request(grey)  # nothing asked: nothing to refuse


# --------------------------------------------------------------------------- the CLI end to end


def test_cli_eval_records_and_compare_shows_generated_corruptions_on_a_tiny_digits_run(
    tmp_path, capsys
):
    import json

    from afa.cli.main import main

    args = ["train.epochs=1", "eval.n_examples=24", "eval.attacks=[pgd]"]
    args += ["model.options={width: 4}", f"out_dir={tmp_path}", "name=run"]
    assert main(["train", "digits-standard", *args]) == 0
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["eval", str(run), "--corruptions", "--severities", "1,5", "--no-sanity"]) == 0
    printed = capsys.readouterr().out
    assert "gaussian_noise" in printed and "mean (CA)" in printed
    record = json.loads((run / "eval.json").read_text())
    corr = record["shift"]["corruptions"]
    assert corr["source"] == "generated" and corr["n_examples"] == 24
    assert corr["severities"] == [1, 5] and len(corr["per_corruption"]) == 14
    assert set(corr["not_run"]) == {"frost"}
    counts = [c for row in corr["per_corruption"].values() for c in row["n_correct"]]
    assert corr["mean_acc"] == pytest.approx(sum(counts) / (24 * len(counts)))
    assert "robust_acc" in record  # the adversarial evaluation is still there

    assert main(["compare", str(run), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Corruptions CA (%)" in md and "## Common corruptions" in md
    assert f"| {100 * corr['mean_acc']:.2f} |" in md

    # official files need a CIFAR run; a bad severity is one line and status 2
    assert main(["eval", str(run), "--corruptions", str(tmp_path)]) == 2
    assert "official corrupted files exist for cifar10" in capsys.readouterr().err
    assert main(["eval", str(run), "--corruptions", "--severities", "0"]) == 2
    assert "1..5" in capsys.readouterr().err
    assert main(["eval", str(run), "--corruptions", "--corruption-names", "frost"]) == 2
    assert "frost photographs" in capsys.readouterr().err
