"""The loop and the contrastive augmentation: per-stage augmentation, the strength schedule
told each epoch (also after a resume), and ``data.augment: contrastive`` in a run config."""

from __future__ import annotations

import torch
from test_resume import BATCH, THREAT, CleanCE, ProjectionCE, TinyNet, toy_data, val_split

from afa.data import BatchLoader, DatasetInfo, make_augment
from afa.data.transforms.contrastive_augment import ContrastiveAugment, ContrastiveAugmentConfig
from afa.runs import parse_run_config
from afa.training import LoopOptions, OptimConfig, RunSpec, ScheduleConfig, Stage, fit

INFO = DatasetInfo("toy", 3, (1, 8, 8), (0.5,), (0.25,), ("a", "b", "c"), "crop-flip")


class Recording(ContrastiveAugment):
    """Records the strength of every call (one call per training step here)."""

    def __init__(self, config: ContrastiveAugmentConfig) -> None:
        super().__init__(config)
        self.seen: list[float] = []

    def __call__(self, x, generator=None):
        self.seen.append(self.strength)
        return super().__call__(x, generator)


class RecordingCropFlip:
    def __init__(self) -> None:
        self.calls = 0
        self.inner = make_augment(INFO, 1)

    def __call__(self, x):
        self.calls += 1
        return self.inner(x)


def _fit(run_dir, pre, post, *, resume=False, stop_after=None):
    torch.manual_seed(0)
    model = TinyNet()
    sgd = OptimConfig(lr=0.05)
    stages = [
        Stage("pretrain", ProjectionCE(model), 4, sgd, ScheduleConfig(), select_by=None),
        Stage("classifier", CleanCE(model, THREAT), 2, sgd, ScheduleConfig(), augment=post),
    ]
    loader = BatchLoader(toy_data(), BATCH, shuffle=True, drop_last=True, seed=0)
    return fit(
        stages,
        loader,
        RunSpec(run_dir, {"model": {"name": "tiny"}}),
        options=LoopOptions(val_batch_size=BATCH, log_every=100, seed=0),
        val=val_split(),
        threat=THREAT,
        augment=pre,
        device="cpu",
        resume=resume,
        stop_after=stop_after,
    )


def test_strength_follows_the_schedule_per_epoch_and_after_resume(tmp_path):
    cfg = ContrastiveAugmentConfig(schedule="anneal", anneal_every=1)
    pre, post = Recording(cfg), RecordingCropFlip()
    _fit(tmp_path / "a", pre, post)
    steps = len(toy_data()) // BATCH
    # Stage 1 (4 epochs): 1, 3/4, 1/2, 1/4, each for every step; stage 2 uses its own.
    expected = [s for s in (1.0, 0.75, 0.5, 0.25) for _ in range(steps)]
    assert pre.seen == expected
    assert post.calls == 2 * steps

    # Interrupted after 2 epochs and resumed: the resumed epochs get their own strength.
    first, again = Recording(cfg), Recording(cfg)
    _fit(tmp_path / "b", first, RecordingCropFlip(), stop_after=2)
    _fit(tmp_path / "b", again, RecordingCropFlip(), resume=True)
    assert first.seen + again.seen == expected


def test_run_config_selects_contrastive_with_its_options():
    cfg = parse_run_config(
        {
            "data": {
                "augment": "contrastive",
                "contrastive": {"min_scale": 0.1, "schedule": "anneal", "anneal_every": 50},
            },
            "method": {"name": "supcon"},
        },
        ["data.contrastive.strength=1/2"],
    )
    c = cfg.data.contrastive
    assert (c.min_scale, c.schedule, c.anneal_every, c.strength) == (0.1, "anneal", 50, 0.5)
    assert parse_run_config({}).data.contrastive == ContrastiveAugmentConfig()
