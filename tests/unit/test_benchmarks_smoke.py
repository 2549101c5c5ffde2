"""The benchmarks run end to end at their smallest settings, and their figures add up.

Each benchmark's ``main(argv)`` runs on CPU with tiny sizes; the tests read the JSON it
writes and check that the figures are the quotients they claim to be and that the memory
measurement sees at least the tensors it must (so a broken profiler trace fails here).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(autouse=True)
def one_thread() -> object:
    """One torch thread: on a loaded CPU several threads make these tiny steps 20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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
