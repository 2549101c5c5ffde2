"""``afa export``: eval.json -> RobustBench model_info JSON, field by field."""

from __future__ import annotations

import json

import pytest

from afa.errors import DataError
from afa.report.export import MODEL_INFO_FIELDS, architecture_label, export_run, model_info

# The keys of RobustBench's model_info/cifar10/Linf/*.json (e.g. Rebuffi2021Fixing_28_10_cutmix_ddpm)
THEIRS = [
    "link",
    "name",
    "authors",
    "additional_data",
    "number_forward_passes",
    "dataset",
    "venue",
    "architecture",
    "eps",
    "clean_acc",
    "reported",
    "autoattack_acc",
    "external",
    "footnote",
    "unreliable",
]


def record(**kw):
    rec = {
        "dataset": "cifar10",
        "model": "wrn-28-10",
        "method": "trades",
        "threat_model": {"norm": "linf", "eps": 8 / 255},
        "n_examples": 10_000,
        "clean_acc": 0.87331,
        "attacks": {
            "PGD-20 (CE, BN eval)": {"robust_acc": 0.6312, "name": "pgd"},
            "AutoAttack (standard)": {
                "robust_acc": 0.6075,
                "name": "autoattack",
                "version": "standard",
                "attacks_to_run": [],
            },
        },
        "robust_acc": 0.6075,
        "sanity": {"large_eps": {"passed": True}, "pgd_below_clean": {"passed": True}},
        "threat_overrides": {},
    }
    rec.update(kw)
    return rec


def test_fields_as_robustbench_writes_them():
    info, empty, notes = model_info(record(), {"data": {"name": "cifar10", "generated": []}})
    assert MODEL_INFO_FIELDS == tuple(THEIRS)
    assert list(info) == [k for k in THEIRS if k != "external"]  # external: only when it differs
    assert info["eps"] == "8/255"
    assert info["clean_acc"] == "87.33" and info["autoattack_acc"] == "60.75"  # percent strings
    assert info["number_forward_passes"] == 1 and info["additional_data"] is False
    assert info["unreliable"] is False
    assert info["dataset"] == "cifar10" and info["architecture"] == "WideResNet-28-10"
    assert empty == ["link", "name", "authors", "venue", "reported"]
    assert notes == []
    assert "10000 cifar10 test images" in info["footnote"]
    assert "PGD-20 (CE, BN eval), AutoAttack (standard) in this order" in info["footnote"]


def test_what_the_evaluation_departs_from_is_said():
    rec = record(n_examples=500, threat_model={"norm": "linf", "eps": 4 / 255})
    rec["threat_overrides"] = {"eps": 4 / 255}
    rec["sanity"]["large_eps"]["passed"] = False
    del rec["attacks"]["AutoAttack (standard)"]
    info, empty, notes = model_info(rec)
    assert info["autoattack_acc"] == "" and "autoattack_acc" in empty
    assert info["additional_data"] == "" and "additional_data" in empty  # no config.yaml
    assert info["unreliable"] is True and "large_eps" in info["footnote"]
    assert "the first 500 of 10000" in info["footnote"]
    joined = " | ".join(notes)
    assert "no standard AutoAttack" in joined
    assert "500 of the 10000" in joined
    assert "eps = 4/255" in joined and "8/255" in joined
    assert "changed the threat model" in joined


def test_a_component_of_autoattack_is_not_autoattack():
    rec = record()
    rec["attacks"] = {
        "AutoAttack (apgd-ce)": {
            "robust_acc": 0.65,
            "name": "apgd-ce",
            "version": "standard",
            "attacks_to_run": ["apgd-ce"],
        }
    }
    assert model_info(rec)[0]["autoattack_acc"] == ""


def test_external_when_a_later_attack_found_more():
    info, _, _ = model_info(record(robust_acc=0.6001))
    assert info["autoattack_acc"] == "60.75" and info["external"] == "60.01"
    assert list(info) == THEIRS


def test_generated_data_and_architectures():
    cfg = {
        "data": {"name": "cifar10", "generated": ["a.npz", "b.npz"]},
        "model": {"name": "wrn", "options": {"depth": 34, "widen_factor": 10}},
    }
    info, _, _ = model_info(record(), cfg)
    assert info["additional_data"] is False  # synthetic data is not additional for RobustBench
    assert "synthetic images" in info["footnote"] and info["architecture"] == "WideResNet-34-10"
    published = record(robustbench={"name": "Carmon2019Unlabeled", "architecture": "WRN-X"})
    assert model_info(published)[0]["architecture"] == "WRN-X"
    assert architecture_label("dm-preact-resnet", {"depth": 18}) == "PreActResNet-18"
    assert architecture_label("dm-wrn", {"depth": 70, "widen_factor": 16}) == "WideResNet-70-16"
    assert architecture_label("resnet18", {"width": 32}) == "ResNet-18 (width 32)"
    assert architecture_label("cnn", {"width": 4}) == "CNN"


def test_export_run_writes_their_tree(tmp_path):
    run = tmp_path / "my-run"
    run.mkdir()
    (run / "eval.json").write_text(json.dumps(record()))
    path, info, empty, _ = export_run(run)
    assert path == run / "model_info" / "cifar10" / "Linf" / "my-run.json"
    assert json.loads(path.read_text()) == info
    out = tmp_path / "x.json"
    assert export_run(run, out)[0] == out and out.is_file()


def test_export_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="eval.json: not found; run `afa eval"):
        export_run(tmp_path)
    (tmp_path / "eval.json").write_text("{not json")
    with pytest.raises(DataError, match="eval.json: not readable as JSON"):
        export_run(tmp_path)
    (tmp_path / "eval.json").write_text("[]")
    with pytest.raises(DataError, match="not an afa eval.json"):
        export_run(tmp_path)
