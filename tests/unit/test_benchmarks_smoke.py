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
    assert max(float((p0 - p).abs().max()) for p0, p in pairs) > 1e-3


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
