"""``afa eval / analyze / export robustbench:NAME@CHECKPOINT`` end to end, on CIFAR-10 files
made here (the official pickle layout) and a RobustBench-layout checkpoint of a tiny DM WRN
registered for the test (a real zoo entry is a 36M+ parameter network)."""

from __future__ import annotations

import json

import torch
from cifar_files import write_cifar_like  # tests/cifar_files.py

from afa.cli.main import main
from afa.models import robustbench as rb
from afa.models.robustbench import PublishedModel, load_robustbench


def _dm_wrn_10_1_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A RobustBench DMWideResNet-10-1 state dict (their names), random weights."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {"init_conv.weight": 0.3 * torch.randn(16, 3, 3, 3, generator=g)}

    def bn(p: str, c: int) -> None:
        sd[p + "weight"], sd[p + "bias"] = torch.ones(c), torch.zeros(c)
        sd[p + "running_mean"], sd[p + "running_var"] = torch.zeros(c), torch.ones(c)
        sd[p + "num_batches_tracked"] = torch.tensor(0)

    widths = [16, 16, 32, 64]
    for grp in range(3):
        cin, cout, p = widths[grp], widths[grp + 1], f"layer.{grp}.block.0."
        bn(p + "batchnorm_0.", cin)
        sd[p + "conv_0.weight"] = 0.1 * torch.randn(cout, cin, 3, 3, generator=g)
        bn(p + "batchnorm_1.", cout)
        sd[p + "conv_1.weight"] = 0.1 * torch.randn(cout, cout, 3, 3, generator=g)
        if cin != cout:
            sd[p + "shortcut.weight"] = 0.3 * torch.randn(cout, cin, 1, 1, generator=g)
    bn("batchnorm.", 64)
    sd["logits.weight"], sd["logits.bias"] = 0.3 * torch.randn(10, 64, generator=g), torch.zeros(10)
    return sd


def test_eval_analyze_export_a_published_model(tmp_path, monkeypatch, capsys):
    name = "Tiny2026Test"
    entry = PublishedModel(
        name, "dm-wrn", {"depth": 10, "widen_factor": 1}, "dm", "no-such-id", "WideResNet-10-1"
    )
    monkeypatch.setitem(rb.PUBLISHED, name, entry)
    write_cifar_like(tmp_path / "data", "cifar10", n_train=30, n_test=20, seed=0)
    ckpt = tmp_path / f"{name}.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in _dm_wrn_10_1_state().items()}}, ckpt)
    spec, out = f"robustbench:{name}@{ckpt}", tmp_path / "rb"
    common = ["--data-root", str(tmp_path / "data"), "--out", str(out)]

    assert main(["eval", spec, "--n", "8", "--attacks", "pgd", *common]) == 0
    assert f"eval.json: {out / 'eval.json'}" in capsys.readouterr().out
    ev = json.loads((out / "eval.json").read_text())
    assert ev["dataset"] == "cifar10" and ev["n_examples"] == 8
    assert ev["robustbench"]["name"] == name and ev["checkpoint"] == str(ckpt)
    assert abs(ev["threat_model"]["eps"] - 8 / 255) < 1e-12  # RobustBench's Linf radius
    # The recorded clean accuracy is the loaded model's on the first 8 test images.
    from afa.data import DataConfig, load_splits, to_float

    test = load_splits(DataConfig(name="cifar10", root=str(tmp_path / "data"), val_size=0)).test
    model = load_robustbench(ckpt, entry)
    with torch.no_grad():
        pred = model(to_float(torch.from_numpy(test.images[:8]), "cpu")).argmax(1)
    assert ev["clean_acc"] == (pred == torch.from_numpy(test.labels[:8])).float().mean().item()

    # corruption accuracy of a published model, generated on the fly (no CIFAR-10-C files)
    shifted = ["--corruptions", "--corruption-names", "brightness,contrast", "--severities", "1"]
    assert main(["eval", spec, *shifted, "--n", "8", "--attacks", "pgd", *common]) == 0
    cells = json.loads((out / "eval.json").read_text())["shift"]["corruptions"]
    assert set(cells["per_corruption"]) == {"brightness", "contrast"} and cells["n_examples"] == 8

    assert main(["analyze", spec, "--n-test", "8", "--no-figures", *common]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["robustbench"] == name

    assert main(["export", str(out), "--name", name]) == 0
    info = json.loads((out / "model_info" / "cifar10" / "Linf" / f"{name}.json").read_text())
    assert info["architecture"] == "WideResNet-10-1" and info["eps"] == "8/255"
    assert "the first 8 of 10000" in info["footnote"] and info["autoattack_acc"] == ""

    # No file and no network: one line naming the Drive address, status 2.
    capsys.readouterr()
    missing = ["eval", f"robustbench:{name}", "--n", "8", *common]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "urllib.request.urlopen",
        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")),
    )
    assert main(missing) == 2
    err = capsys.readouterr().err
    assert "id=no-such-id" in err and "offline" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "robustbench:Carmon2019Unlabelled@x.pt", *common]) == 2
    assert "did you mean 'Carmon2019Unlabeled'" in capsys.readouterr().err
