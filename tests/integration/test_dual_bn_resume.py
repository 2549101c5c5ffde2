"""Dual BN through the loop: both branches' statistics and affine parameters are in every
checkpoint and in the EMA, and a resumed run equals the uninterrupted one; a run config's
``model.dual_bn`` builds and reloads a dual model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from test_resume import BATCH, INFO, THREAT, TinyNet, assert_same_weights, toy_data, val_split

from afa.data import BatchLoader, DatasetInfo, make_augment
from afa.methods.base import Batch, Method, StepOutput
from afa.models.dual_bn import convert_dual_bn
from afa.runs import build_model, load_checkpoint, parse_run_config
from afa.training import EMAConfig, LoopOptions, OptimConfig, RunSpec, ScheduleConfig, Stage, fit


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
    stages = [Stage("train", DualCE(model), 4, OptimConfig(lr=0.05), ScheduleConfig())]
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
