"""Dual BN through the loop: both branches' statistics and affine parameters are in every
checkpoint and in the EMA, and a resumed run equals the uninterrupted one; a run config's
``model.dual_bn`` builds and reloads a dual model; TRADES with dual BN through ``train_run``
trains both branches and resumes from a checkpoint written before its ``split_bn`` option."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from test_resume import BATCH, INFO, THREAT, TinyNet, assert_same_weights, toy_data, val_split

import afa.training.plan as plan
from afa.data import BatchLoader, DatasetInfo, make_augment
from afa.methods.base import Batch, Method, StepOutput
from afa.models.dual_bn import convert_dual_bn
from afa.runs import build_model, load_checkpoint, parse_run_config
from afa.training import EMAConfig, LoopOptions, OptimConfig, RunSpec, ScheduleConfig, Stage, fit
from afa.training.checkpoint import save_checkpoint
from afa.training.plan import train_run


class DualCE(Method):
    """CE on a clean view through the clean branch + CE on a noisy view through the adv one."""

    name = "dual-ce"

    def forward(self, batch: Batch) -> StepOutput:
        x = batch.view()
        clean = F.cross_entropy(self.model(x), batch.y)
        noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
        with self.model.bn_branch("adv"):
            adv = F.cross_entropy(self.model(noisy), batch.y)
        return StepOutput((clean + adv) / 2, {})


def _run(run_dir, *, resume=False, stop_after=None, init_seed=0):
    torch.manual_seed(init_seed)
    model = convert_dual_bn(TinyNet())
    stages = [Stage("train", DualCE(model, THREAT), 4, OptimConfig(lr=0.05), ScheduleConfig())]
    state = fit(
        stages,
        BatchLoader(toy_data(), BATCH, shuffle=True, drop_last=True, seed=0),
        RunSpec(run_dir, {"model": {"name": "tiny", "dual_bn": True}}),
        options=LoopOptions(val_batch_size=BATCH, log_every=100, ema=EMAConfig(decay=0.9)),
        val=val_split(),
        threat=THREAT,
        augment=make_augment(INFO, padding=1),
        device="cpu",
        resume=resume,
        stop_after=stop_after,
    )
    return state, model


def test_resume_with_dual_bn_equals_uninterrupted(tmp_path):
    full, full_model = _run(tmp_path / "full")
    _run(tmp_path / "part", stop_after=2)
    resumed, model = _run(tmp_path / "part", resume=True, init_seed=7)
    assert resumed.completed
    assert_same_weights(full_model.state_dict(), model.state_dict())
    ckpt = load_checkpoint(full.last_path)
    for part in ("model", "ema"):
        keys = set(ckpt[part])
        assert {"body.2.clean.running_mean", "body.2.adv.running_mean"} <= keys, part
        assert {"body.2.clean.weight", "body.2.adv.weight"} <= keys, part
    # Both branches trained, each on its own inputs.
    state = full_model.state_dict()
    assert not torch.equal(state["body.2.clean.running_mean"], state["body.2.adv.running_mean"])
    assert not torch.equal(state["body.2.clean.weight"], state["body.2.adv.weight"])
    assert_same_weights(ckpt["ema"], load_checkpoint(resumed.last_path)["ema"])


def test_run_config_builds_and_reloads_a_dual_model():
    info = DatasetInfo("toy", 3, (1, 8, 8), (0.5,), (0.25,), ("a", "b", "c"), "none")
    cfg = parse_run_config({"model": {"name": "cnn", "options": {"width": 4}, "dual_bn": True}})
    model = build_model(cfg, info)
    assert cfg.model.dual_bn and model.dual_bn
    assert not build_model(parse_run_config({}), info).dual_bn
    again = build_model(cfg, info)
    again.load_state_dict(model.state_dict())  # strict: the same keys


def _trades_cfg(out):
    return parse_run_config(
        {
            "data": {"name": "digits", "val_size": 60},
            "model": {"name": "cnn", "options": {"width": 4}, "dual_bn": True},
            "threat": {"eps": 0.1, "step_size": 0.05, "steps": 2},
            "method": {"name": "trades"},
            "train": {"epochs": 2, "batch_size": 256, "val_examples": 60, "log_every": 100},
            "eval": {"attacks": ["pgd"]},
            "out_dir": str(out),
        }
    )


def test_trades_with_dual_bn_resumes_a_checkpoint_older_than_split_bn(tmp_path, monkeypatch):
    full = train_run(_trades_cfg(tmp_path / "full"))
    weights = load_checkpoint(full.last_path)["model"]
    bn = sorted(
        k[: -len(".clean.running_mean")] for k in weights if k.endswith(".clean.running_mean")
    )
    assert bn and all(
        not torch.equal(weights[f"{b}.clean.running_mean"], weights[f"{b}.adv.running_mean"])
        for b in bn
    )  # clean and adversarial inputs normalised apart

    real_fit = plan.fit
    monkeypatch.setattr(plan, "fit", functools.partial(real_fit, stop_after=1))
    part = _trades_cfg(tmp_path / "part")
    assert not train_run(part).completed
    monkeypatch.setattr(plan, "fit", real_fit)
    # What a run started before the option existed has in its checkpoint: no method.split_bn.
    last = load_checkpoint(part.run_dir / "last.pt")
    del last["config"]["method"]["split_bn"]
    save_checkpoint(part.run_dir / "last.pt", last)
    resumed = train_run(part, resume=True)
    assert resumed.completed
    again = load_checkpoint(resumed.last_path)["model"]
    for k in weights:
        assert torch.equal(weights[k], again[k]), k
