"""Per-step LR schedules: values at known steps, and the scheduler object."""

from __future__ import annotations

import math

import pytest
import torch

from afa.training import LRSchedule, OptimConfig, ScheduleConfig, build_optimizer, lr_at

LR = 0.1


def test_warmup_starts_at_zero_and_reaches_the_peak():
    cfg = ScheduleConfig(name="constant", warmup_epochs=2)
    w = 20  # 2 epochs x 10 steps
    assert lr_at(cfg, LR, 0, 100, w) == 0.0
    assert lr_at(cfg, LR, 5, 100, w) == pytest.approx(LR * 5 / 20)
    assert lr_at(cfg, LR, w, 100, w) == LR
    assert lr_at(cfg, LR, 99, 100, w) == LR


def test_piecewise_decays_at_fractions_of_training():
    cfg = ScheduleConfig(name="piecewise", milestones=(0.5, 0.75), gamma=0.1)
    values = {s: lr_at(cfg, LR, s, 200, 0) for s in (0, 99, 100, 149, 150, 199)}
    assert values == pytest.approx(
        {0: LR, 99: LR, 100: LR * 0.1, 149: LR * 0.1, 150: LR * 0.01, 199: LR * 0.01}
    )


def test_cosine_after_warmup():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1, min_lr=0.001)
    total, w = 110, 10
    assert lr_at(cfg, LR, w, total, w) == pytest.approx(LR)
    assert lr_at(cfg, LR, 60, total, w) == pytest.approx((LR + 0.001) / 2)  # midpoint
    assert lr_at(cfg, LR, 35, total, w) == pytest.approx(
        0.001 + (LR - 0.001) * (1 + math.cos(math.pi / 4)) / 2
    )
    assert lr_at(cfg, LR, total, total, w) == pytest.approx(0.001)
    assert lr_at(cfg, LR, total + 5, total, w) == pytest.approx(0.001)  # held at the end


def _optimizer(lr: float = LR) -> torch.optim.Optimizer:
    return build_optimizer([torch.nn.Parameter(torch.zeros(2))], OptimConfig(lr=lr))


def test_schedule_sets_the_optimizer_lr_per_step_and_resumes():
    cfg = ScheduleConfig(name="piecewise", warmup_epochs=1, milestones=(0.5,))
    opt = _optimizer()
    sched = LRSchedule(opt, cfg, steps_per_epoch=4, epochs=4)  # 16 steps, warm-up 4, decay at 8
    seen = []
    for _ in range(16):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0, 0.025, 0.05, 0.075] + [LR] * 4 + [LR * 0.1] * 8)

    state = sched.state_dict()
    other = LRSchedule(_optimizer(), cfg, steps_per_epoch=4, epochs=4)
    other.load_state_dict(state)
    assert other.last_step == 16 and other.get_last_lr() == sched.get_last_lr()
    with pytest.raises(ValueError, match="16 steps"):
        LRSchedule(_optimizer(), cfg, steps_per_epoch=5, epochs=3).load_state_dict(state)


def test_resume_with_other_steps_per_epoch_keeps_the_epoch():
    """A resume with another world size changes steps per epoch, not the stage's epoch."""
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1)
    sched = LRSchedule(_optimizer(), cfg, steps_per_epoch=9, epochs=6)
    for _ in range(18):  # two epochs
        sched.step()
    wider = LRSchedule(_optimizer(), cfg, steps_per_epoch=18, epochs=6)
    wider.load_state_dict(sched.state_dict())
    assert wider.last_step == 36
    assert wider.get_last_lr() == pytest.approx(sched.get_last_lr())
    sched.step()  # mid-epoch: the position cannot be mapped
    with pytest.raises(ValueError, match="not at an epoch boundary"):
        LRSchedule(_optimizer(), cfg, steps_per_epoch=18, epochs=6).load_state_dict(
            sched.state_dict()
        )


def test_warmup_longer_than_the_stage_is_refused():
    with pytest.raises(ValueError, match="warmup_epochs=5"):
        LRSchedule(_optimizer(), ScheduleConfig(warmup_epochs=5), steps_per_epoch=3, epochs=4)


def test_optimizers():
    p = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(p, OptimConfig(nesterov=True))
    assert (
        isinstance(sgd, torch.optim.SGD)
        and sgd.defaults["nesterov"]
        and sgd.defaults["weight_decay"] == 5e-4
    )
    adamw = build_optimizer(
        p, OptimConfig(name="adamw", lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    )
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.95)
    frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer([frozen], OptimConfig())
