"""The benchmarks run end to end at their smallest settings, and their figures add up.

Each benchmark's ``main(argv)`` runs on CPU with tiny sizes; the tests read the JSON it
writes and check that the figures are the quotients they claim to be and that the memory
measurement sees at least the tensors it must (so a broken profiler trace fails here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from benchmark_modules import load_benchmark  # tests/benchmark_modules.py

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str) -> ModuleType:
    return load_benchmark(name)


def test_training_step_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load("bench_training_step")
    out = tmp_path / "step.json"
    batch = 8
    argv = (
        f"--device cpu --model cnn --width 4 --data digits --batch-size {batch} "
        "--attack-steps 2 --warmup 1 --steps 2 --min-sample-time 0"
    )
    payload = bench.main([*argv.split(), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| method |" in printed and "ATTACK COST" in printed
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))

    methods = payload["methods"]
    assert list(methods) == ["standard", "pgd-at", "trades", "mart", "afa", "afa-trades"]
    t_std, t_pgd = methods["standard"]["step_s"], methods["pgd-at"]["step_s"]
    for name, r in methods.items():
        assert r["step_s"] > 0 and len(r["samples_s"]) == 2
        assert r["step_s"] == pytest.approx(sum(r["samples_s"]) / 2)  # median of two
        assert r["images_per_s"] == pytest.approx(batch / r["step_s"])
        assert r["epoch_s"] == pytest.approx(50_000 / r["images_per_s"])
        assert r["vs_standard"] == pytest.approx(r["step_s"] / t_std)
        assert r["vs_pgd_at"] == pytest.approx(r["step_s"] / t_pgd)
        assert r["final_loss"] is not None and math.isfinite(r["final_loss"]), name
        # a step allocates at least the parameter gradients (set to None after each step)
        assert r["peak_bytes"] >= 4 * methods["standard"]["parameters"] * 0.5, name
    std = methods["standard"]
    # parameters + SGD momentum of every parameter (+ BN buffers): optimizer state is counted
    assert std["state_bytes"] >= 2 * 4 * std["parameters"]

    cost = payload["attack_cost"]
    per_round = [
        p / (3 * s) for p, s in zip(methods["pgd-at"]["samples_s"], std["samples_s"], strict=True)
    ]
    assert cost["ratio_per_round"] == pytest.approx(per_round)
    assert cost["ratio"] == pytest.approx(sum(per_round) / 2)
    assert cost["meets_goal"] == (cost["ratio"] < 0.9)
    assert cost["attack_step_vs_train_step"] == pytest.approx((3 * cost["ratio"] - 1) / 2)


def test_training_step_without_standard_has_no_attack_cost(tmp_path: Path) -> None:
    bench = load("bench_training_step")
    argv = (
        "--device cpu --model cnn --width 4 --methods pgd-at --batch-size 4 --attack-steps 1 "
        "--warmup 0 --steps 1 --min-sample-time 0 --no-memory"
    )
    payload = bench.main(argv.split())
    assert payload["attack_cost"] is None
    r = payload["methods"]["pgd-at"]
    assert r["vs_standard"] is None and r["vs_pgd_at"] == pytest.approx(1.0)
    assert r["peak_bytes"] is None


def test_training_step_rejects_unknown_method() -> None:
    bench = load("bench_training_step")
    with pytest.raises(SystemExit):
        bench.main(["--methods", "standard,nope"])


def test_afa_loss_smoke(tmp_path: Path) -> None:
    bench = load("bench_afa_loss")
    out = tmp_path / "loss.json"
    argv = "--device cpu --batch-sizes 32,64 --warmup 0 --reps 1 --min-sample-time 0"
    payload = bench.main([*argv.split(), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    results = payload["results"]
    assert [(r["denominator"], r["batch_size"]) for r in results] == [
        ("negatives", 32),
        ("negatives", 64),
        ("supcon", 32),
        ("supcon", 64),
    ]
    for r in results:
        b = r["batch_size"]
        assert r["anchors"] == b and r["features"] == 2 * b
        assert r["sim_matrix_bytes"] == 4 * b * 2 * b
        # the float32 A x R similarity matrix is allocated, so the measured peak holds it
        assert r["peak_bytes"] >= r["sim_matrix_bytes"]
        assert r["largest_allocation_bytes"] >= r["sim_matrix_bytes"]
        assert r["allocations_at_least_sim"] >= 1
        assert r["peak_over_sim"] == pytest.approx(r["peak_bytes"] / r["sim_matrix_bytes"])
        # random features carry no class information: the loss is near its chance level
        # (log(1 + |N|) ~ log(1 + 0.9 * 2B) for negatives), never NaN
        assert 0.5 * math.log(1 + 0.9 * 2 * b) < r["loss"] < 2 * math.log(2 * b)
    assert results[0]["time_vs_previous"] is None
    assert results[1]["time_vs_previous"] == pytest.approx(
        results[1]["time_s"] / results[0]["time_s"]
    )


def _cnn_and_batch(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from afa.models import create_model

    torch.manual_seed(seed)
    model = create_model("cnn", 10, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,), width=4)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(16, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    return model, x, y


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
@pytest.mark.parametrize("name", ["pgd-at", "trades"])
def test_reference_steps_train_the_same_model_as_afa(name: str, bn_mode: str) -> None:
    """A reference-style step and afa's method, from the same weights, seed and batch, end at
    the same weights: the benchmark compares two ways of computing one step, not two steps.

    It would fail if the reference's attack-step weight gradients leaked into the update
    (no zero_grad), if its attack took a different path (sign, projection, start, BN mode),
    or if its outer loss differed from afa's (TRADES' KL direction, beta, the batch mean).
    """
    load("bench_training_step")  # puts benchmarks/ on sys.path
    import reference_steps

    from afa.attacks.threat import ThreatModel
    from afa.methods.base import Batch
    from afa.methods.pgd_at import PGDAT
    from afa.methods.trades import TRADES

    threat = ThreatModel(eps=0.1, step_size=0.03, steps=3, bn_mode=bn_mode)  # type: ignore[arg-type]
    finals = []
    for variant in ("afa", "reference"):
        model, x, y = _cnn_and_batch()
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
        torch.manual_seed(123)  # the random start: both draw U[-eps, eps] from the global RNG
        if variant == "afa":
            method = (PGDAT if name == "pgd-at" else TRADES)(model, threat, None)
            loss = method(Batch(x, y)).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            fn = (
                reference_steps.pgd_at_step_reference
                if name == "pgd-at"
                else reference_steps.trades_step_reference
            )
            loss = fn(model, opt, x, y, threat)
        finals.append((float(loss.detach()), [p.detach().clone() for p in model.parameters()]))
        assert model.training  # both leave the model in train mode
    (loss_a, params_a), (loss_r, params_r) = finals
    assert loss_r == pytest.approx(loss_a, rel=1e-4)
    for pa, pr in zip(params_a, params_r, strict=True):
        torch.testing.assert_close(pr, pa, rtol=1e-4, atol=1e-5)
    # the step did move the weights (lr 0.5): equal because both trained, not because neither did
    init, _, _ = _cnn_and_batch()
    pairs = zip(init.parameters(), params_a, strict=True)
    assert max(float((p0.detach() - p).abs().max()) for p0, p in pairs) > 1e-3


def test_reference_pgd_at_step_computes_weight_gradients_in_the_attack() -> None:
    """What the comparison is about: the reference-style attack fills the weights' .grad
    (robust_overfitting's ``loss.backward()``); afa's ``perturb`` leaves it untouched."""
    load("bench_training_step")
    import reference_steps

    from afa.attacks import cross_entropy, perturb
    from afa.attacks.threat import ThreatModel

    threat = ThreatModel(eps=0.1, step_size=0.03, steps=2)
    model, x, y = _cnn_and_batch()
    perturb(model, x, y, threat, cross_entropy)
    assert all(p.grad is None for p in model.parameters())

    seen: list[bool] = []

    class Spy(torch.optim.SGD):
        def zero_grad(self, set_to_none: bool = True) -> None:
            seen.append(any(p.grad is not None for g in self.param_groups for p in g["params"]))
            super().zero_grad(set_to_none)

    opt = Spy(model.parameters(), lr=0.0)
    reference_steps.pgd_at_step_reference(model, opt, x, y, threat)
    assert seen[0]  # the first zero_grad (before the training backward) found attack gradients


def test_training_step_reference_preset(tmp_path: Path) -> None:
    bench = load("bench_training_step")
    argv = (
        "--device cpu --model cnn --width 4 --methods reference --batch-size 8 "
        "--attack-steps 2 --warmup 0 --steps 3 --min-sample-time 0 --no-memory"
    )
    payload = bench.main(argv.split())
    methods = payload["methods"]
    try:
        import torchattacks  # noqa: F401

        has_ta = True
    except Exception:
        has_ta = False
    expected = ["standard", "pgd-at", "ref-pgd-at", "trades", "ref-trades", "pgd-afa"]
    assert list(methods) == expected + (["pgd-torchattacks"] if has_ta else [])
    if not has_ta:
        assert "torchattacks" in payload["skipped"]["pgd-torchattacks"]
    comps = payload["comparisons"]
    assert set(comps) == {"pgd-at / ref-pgd-at", "trades / ref-trades"} | (
        {"pgd-afa / pgd-torchattacks"} if has_ta else set()
    )
    for c in comps.values():
        a, r = methods[c["afa"]]["samples_s"], methods[c["reference"]]["samples_s"]
        per_round = [ai / ri for ai, ri in zip(a, r, strict=True)]
        assert c["ratio_per_round"] == pytest.approx(per_round)
        assert c["ratio"] == pytest.approx(sorted(per_round)[1])  # median of three
        assert c["speedup"] == pytest.approx(1 / c["ratio"])
        assert c["ratio_of_medians"] == pytest.approx(
            methods[c["afa"]]["step_s"] / methods[c["reference"]]["step_s"]
        )
    eps = 8 / 255
    for name in ("pgd-afa", "pgd-torchattacks"):
        if name in methods:
            assert methods[name]["final_loss"] is None
            assert eps * 0.5 < methods[name]["linf_distance"] <= eps + 1e-6
    for name in ("ref-pgd-at", "ref-trades"):
        assert math.isfinite(methods[name]["final_loss"])


def test_afa_pgd_equals_torchattacks_pgd_without_random_start() -> None:
    """The two PGDs the benchmark times craft the same points (no random start, BN eval)."""
    ta = pytest.importorskip("torchattacks", reason="torchattacks is not installed (optional)")
    from afa.attacks import cross_entropy, perturb
    from afa.attacks.threat import ThreatModel

    model, x, y = _cnn_and_batch()
    model.train()
    threat = ThreatModel(eps=0.1, step_size=0.03, steps=4, random_start=False)
    ours = perturb(model, x, y, threat, cross_entropy)
    theirs = ta.PGD(model, eps=0.1, alpha=0.03, steps=4, random_start=False)(x, y)
    assert model.training
    assert (ours - x).abs().max() > 0.05
    close = (ours - theirs).abs() < 1e-6
    assert close.float().mean() > 0.99  # a gradient sign may flip where it is ~0


# --- gpu_check.sh and its helpers -------------------------------------------------------------

CLASSES = ("airplane", "automobile", "bird")


def _image_tarball(path: Path, per_class: int, suffix: str = ".png") -> dict[str, np.ndarray]:
    """A tarball in the real layout, train/<class>/NNNN<suffix>, of random 32x32 RGB images."""
    import io
    import tarfile

    from PIL import Image

    rng = np.random.default_rng(0)
    images = {}
    with tarfile.open(path, "w:gz") as tar:
        for cls in CLASSES:
            for i in range(per_class):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="PNG" if suffix == ".png" else "JPEG")
                name = f"train/{cls}/{i:04d}{suffix}"
                info = tarfile.TarInfo(name)
                info.size = len(buf.getvalue())
                buf.seek(0)
                tar.addfile(info, buf)
                images[name] = arr
    return images


def test_gpu_check_data_reads_a_balanced_slice_exactly(tmp_path: Path) -> None:
    data = load("gpu_check_data")
    tarball = tmp_path / "train.tar.gz"
    originals = _image_tarball(tarball, per_class=7)
    out = tmp_path / "data.json"
    summary = data.main(
        [
            str(tarball),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--test-size",
            "3",
            "--val-size",
            "3",
            "--limit",
            "13",  # ceil(13 / 3) = 5 of each class
            "--slice-dir",
            str(tmp_path / "slice"),
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))
    assert summary["classes"] == list(CLASSES)
    assert (summary["train"], summary["val"], summary["test"]) == (9, 3, 3)
    assert summary["image_shape"] == [3, 32, 32]
    sliced = sorted(
        p.relative_to(tmp_path / "slice").as_posix() for p in (tmp_path / "slice").rglob("*.png")
    )
    assert sliced == sorted(f"train/{c}/{i:04d}.png" for c in CLASSES for i in range(5))

    # the runs read the same splits from the cache, pixel for pixel (PNG is lossless)
    from afa.data import load_splits
    from afa.data.base import DataConfig

    splits = load_splits(
        DataConfig(
            name="imagefolder",
            root=str(tmp_path / "slice"),
            cache_dir=str(tmp_path / "cache"),
            test_size=3,
            val_size=3,
        )
    )
    got = np.concatenate([splits.train.images, splits.val.images, splits.test.images])
    want = np.stack([originals[n].transpose(2, 0, 1) for n in sliced])
    key = lambda a: a.reshape(len(a), -1).tobytes()  # noqa: E731
    assert sorted(key(g[None]) for g in got) == sorted(key(w[None]) for w in want)
    assert np.bincount(splits.test.labels, minlength=3).tolist() == [1, 1, 1]  # stratified


def _summary_work(tmp_path: Path, parts: list[str]) -> Path:
    work = tmp_path / "work"
    (work / "bench").mkdir(parents=True)
    (work / "runs" / "train-pgd-at").mkdir(parents=True)
    (work / "parts.tsv").write_text("\n".join(parts) + "\n")
    return work


def test_gpu_check_summary_reports_failures_and_exits_1(tmp_path: Path) -> None:
    summ = load("gpu_check_summary")
    work = _summary_work(
        tmp_path,
        [
            "env\tok\t0\t1.5\t60\tnvidia-smi",
            "bench-resnet18-fp32\tfailed\t1\t3.25\t60\tpython bench",
            "train-pgd-at\ttimeout\t124\t150.0\t150\tpython -m afa train",
            "bench-compile\tskipped\t\t0\t0\tno time left",
        ],
    )
    (work / "bench" / "bench-resnet18-fp32.json").write_text("{not json")
    metrics = {"stage": "train", "epoch": 1, "time_s": 12.5, "train/loss": 2.0, "val/pgd_acc": 0.25}
    (work / "runs" / "train-pgd-at" / "metrics.jsonl").write_text(json.dumps(metrics) + "\n")
    out = tmp_path / "out"
    rc = summ.main(["--work", str(work), "--out", str(out), "--mode", "gpu", "--total", "155"])
    assert rc == 1
    s = json.loads((out / "summary.json").read_text())
    assert [(p["name"], p["status"], p["exit_code"]) for p in s["parts"]] == [
        ("env", "ok", 0),
        ("bench-resnet18-fp32", "failed", 1),
        ("train-pgd-at", "timeout", 124),
        ("bench-compile", "skipped", None),
    ]
    assert s["parts"][1]["wall_s"] == 3.25 and s["total_s"] == 155
    assert s["train"]["train-pgd-at"]["metrics"] == [metrics]
    assert any("bench-resnet18-fp32.json" in n for n in s["notes"])  # broken file noted
    md = (out / "summary.md").read_text()
    assert "| bench-resnet18-fp32 | failed (exit 1) |" in md and "no time left" in md
    assert "| train 1 | 12.5 | 2 | 0.25 |" in md

    work_ok = _summary_work(tmp_path / "ok", ["env\tok\t0\t1.0\t60\tx"])
    assert summ.main(["--work", str(work_ok), "--out", str(tmp_path / "out2")]) == 0


SCRIPT = BENCH / "gpu_check.sh"


def _run_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=600
    )


def test_gpu_check_usage_errors(tmp_path: Path) -> None:
    r = _run_check(str(tmp_path / "out"))
    assert r.returncode == 2 and "usage" in r.stderr
    r = _run_check(str(tmp_path / "out"), str(tmp_path / "missing.tar.gz"))
    assert r.returncode == 2 and "missing.tar.gz: file not found" in r.stderr


def test_gpu_check_keeps_to_its_time_budget(tmp_path: Path) -> None:
    """With no time budget every part is skipped, and the summary still comes out."""
    tarball = tmp_path / "t.tar.gz"
    _image_tarball(tarball, per_class=1)
    out = tmp_path / "out"
    r = _run_check(
        "--cpu-smoke",
        str(out),
        str(tarball),
        env={"GPU_CHECK_BUDGET_S": "0", "GPU_CHECK_WORK": str(tmp_path / "w")},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((out / "summary.json").read_text())
    names = [p["name"] for p in s["parts"]]
    assert names[:3] == ["env", "pytest-gpu", "data"] and "bench-compile" in names
    assert {p["status"] for p in s["parts"]} == {"skipped"}
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "summary.json", "summary.md"]


@pytest.mark.slow
def test_gpu_check_cpu_smoke_dry_run(tmp_path: Path) -> None:
    """The whole check as a dry run on the CPU (tiny sizes): every part runs and succeeds."""
    tarball = tmp_path / "cifar10-jpeg-train.tar.gz"
    _image_tarball(tarball, per_class=400, suffix=".jpg")  # 1,200 images; the slice takes 1,002
    out = tmp_path / "out"
    r = _run_check(
        "--cpu-smoke", str(out), str(tarball), env={"GPU_CHECK_WORK": str(tmp_path / "w")}
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    status = {p["name"]: p["status"] for p in s["parts"]}
    assert status == {
        "env": "ok",
        "pytest-gpu": "ok",
        "data": "ok",
        "bench-cnn-fp32": "ok",
        "bench-cnn-bf16": "ok",
        "bench-cnn-bf16-cl": "ok",
        "train-pgd-at": "ok",
        "train-afa-trades": "ok",
        "bench-compile": "skipped",
    }
    assert all(p["wall_s"] > 0 for p in s["parts"] if p["status"] == "ok")
    assert (s["data"]["train"], s["data"]["val"], s["data"]["test"]) == (1002 - 150, 50, 100)
    assert set(s["bench"]) == {"bench-cnn-fp32", "bench-cnn-bf16", "bench-cnn-bf16-cl"}
    assert s["bench"]["bench-cnn-bf16"]["config"]["precision"] == "bf16"
    for run in ("train-pgd-at", "train-afa-trades"):
        (last,) = [m for m in s["train"][run]["metrics"] if "epoch" in m]
        assert math.isfinite(last["train/loss"])
    assert "| train-afa-trades | ok |" in (out / "summary.md").read_text()


def test_step_benchmark_times_a_method_variant_with_its_own_options():
    bench = load("bench_training_step")
    entry = "afa-trades:afa_steps=1:afa_init=trades:afa_step_size=8/255"
    assert bench.parse_methods(f"trades,{entry}") == ["trades", entry]
    assert bench.split_entry(entry) == (
        "afa-trades",
        {"afa_steps": 1, "afa_init": "trades", "afa_step_size": "8/255"},
    )
    for bad in ("afa-trades:afa_steps", "pgd-afa:steps=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_methods(bad)
    args = bench.build_parser().parse_args(
        ["--model", "cnn", "--width", "4", "--data", "digits", "--batch-size", "4"]
    )
    batch = bench.Batch(torch.rand(4, 1, 8, 8), torch.arange(4) % 10, lambda x: x)
    _, method, _ = bench.build_step(entry, args, torch.device("cpu"), batch)
    assert (method.config.afa_steps, method.config.afa_init) == (1, "trades")
    assert method.config.afa_step_size == pytest.approx(8 / 255)
