"""``fit`` end to end on a tiny model: resume == uninterrupted, checkpoints, metrics, best.

The model is a 2-layer MLP with batch norm on random 1x8x8 images (3 classes); methods are
small stand-ins (clean CE; CE through a projection head, as a pre-training stage) and the
real PGD-AT; the loader and the crop + flip augmentation are the real ``afa.data`` ones.
Every run takes well under a second per epoch on a CPU.

``test_ddp_train.py`` imports the stand-ins from here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import afa.training.loop as loop_module
from afa.attacks import ThreatModel
from afa.data import BatchLoader, DatasetInfo, ImageSet, make_augment
from afa.errors import CheckpointError
from afa.methods.base import Batch, Method, StepOutput, accuracy_metric
from afa.methods.pgd_at import PGDAT
from afa.models.base import Classifier, Normalize
from afa.training import (
    PAYLOAD_KEYS,
    EMAConfig,
    LoopOptions,
    OptimConfig,
    RunSpec,
    ScheduleConfig,
    Stage,
    fit,
    load_checkpoint,
    read_metrics,
)

N_TRAIN, BATCH, CLASSES = 48, 12, 3  # 4 steps per epoch
THREAT = ThreatModel(norm="linf", eps=8 / 255, step_size=4 / 255, steps=2)
INFO = DatasetInfo("toy", CLASSES, (1, 8, 8), (0.5,), (0.25,), ("a", "b", "c"), "crop-flip")
CONFIG = {"model": {"name": "tiny", "width": 16}, "data": {"name": "toy"}, "train": {"seed": 0}}


class TinyNet(Classifier):
    """Flatten -> Linear -> (BatchNorm) -> ReLU -> head."""

    def __init__(self, width: int = 16, bn: bool = True) -> None:
        super().__init__()
        self.normalize = Normalize([0.5], [0.25])
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, width)]
        if bn:
            layers.append(nn.BatchNorm1d(width))
        self.body = nn.Sequential(*layers, nn.ReLU())
        self.num_features, self.num_classes = width, CLASSES
        self.head = nn.Linear(width, CLASSES)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CleanCE(Method):
    """Cross-entropy on one augmented view (a stand-in for ``standard``)."""

    name = "clean-ce"

    def forward(self, batch: Batch) -> StepOutput:
        logits = self.model(batch.view())
        loss = F.cross_entropy(logits.float(), batch.y)
        return StepOutput(loss, {"acc": accuracy_metric(logits, batch.y)})


class ProjectionCE(Method):
    """CE through an extra projection head (the classifier head takes no part):
    a stand-in for a pre-training stage with method-owned modules."""

    name = "projection-ce"

    def __init__(self, model: Classifier) -> None:
        super().__init__(model, THREAT)
        self.projection = nn.Linear(model.num_features, CLASSES)

    def forward(self, batch: Batch) -> StepOutput:
        loss = F.cross_entropy(self.projection(self.model.features(batch.view())), batch.y)
        return StepOutput(loss, {})


def toy_data(n: int = N_TRAIN, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, n).astype(np.int64)
    return ImageSet(images, labels)


def val_split() -> tuple[torch.Tensor, torch.Tensor]:
    data = toy_data(24, seed=1)
    return torch.from_numpy(data.images), torch.from_numpy(data.labels)


def make_stages(kind: str, model: Classifier) -> list[Stage]:
    """``pgd``: one PGD-AT stage of 4 epochs; ``two``: 2 pre-training + 3 CE epochs."""
    sgd = OptimConfig(lr=0.05)
    if kind == "pgd":
        cosine = ScheduleConfig(name="cosine", warmup_epochs=1)
        return [Stage("train", PGDAT(model, THREAT), 4, sgd, cosine, grad_clip=1.0)]
    if kind == "two":
        return [
            Stage("pretrain", ProjectionCE(model), 2, sgd, ScheduleConfig(), select_by=None),
            Stage("classifier", CleanCE(model, THREAT), 3, OptimConfig(lr=0.02), ScheduleConfig()),
        ]
    raise ValueError(kind)


def run(
    run_dir: Path,
    kind: str = "pgd",
    *,
    resume: bool = False,
    stop_after: int | None = None,
    val: bool = True,
    options: LoopOptions | None = None,
    config: dict | None = None,
    init_seed: int = 0,
    device: str = "cpu",
):
    """Build everything afresh (as a new process would) and call ``fit``."""
    torch.manual_seed(init_seed)
    model = TinyNet()
    stages = make_stages(kind, model)
    options = options or LoopOptions(
        val_batch_size=BATCH, log_every=2, ema=EMAConfig(decay=0.9), seed=0
    )
    loader = BatchLoader(toy_data(), BATCH, shuffle=True, drop_last=True, seed=0)
    state = fit(
        stages,
        loader,
        RunSpec(run_dir, config or CONFIG),
        options=options,
        val=val_split() if val else None,
        threat=THREAT,
        augment=make_augment(INFO, padding=1),
        device=torch.device(device),
        resume=resume,
        stop_after=stop_after,
    )
    return state, model


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_equals_uninterrupted(tmp_path):
    full, full_model = run(tmp_path / "full")
    assert full.completed and full.global_epoch == 4 and full.global_step == 16

    part, _ = run(tmp_path / "part", stop_after=2)
    assert not part.completed and part.global_epoch == 2 and part.epoch == 2
    # a fresh model with other initial weights: everything must come from last.pt
    resumed, resumed_model = run(tmp_path / "part", resume=True, init_seed=123)
    assert resumed.completed and resumed.global_step == 16

    assert_same_weights(full_model.state_dict(), resumed_model.state_dict())
    a, b = load_checkpoint(full.last_path), load_checkpoint(resumed.last_path)
    assert_same_weights(a["ema"], b["ema"])
    assert a["ema_updates"] == b["ema_updates"] == 16
    assert a["best"] == b["best"]

    full_log = read_metrics(tmp_path / "full" / "metrics.jsonl")
    part_log = read_metrics(tmp_path / "part" / "metrics.jsonl")
    assert [r["global_epoch"] for r in part_log] == [1, 2, 3, 4]  # no duplicate epochs
    for r, s in zip(full_log, part_log, strict=True):
        for key in ("epoch", "global_step", "lr", "train/loss", "train/adv_acc", "val/pgd_acc"):
            assert r[key] == s[key], key


def test_resume_across_a_stage_boundary(tmp_path):
    full, full_model = run(tmp_path / "full", "two")
    assert [r["stage"] for r in full.history] == ["pretrain"] * 2 + ["classifier"] * 3

    # interrupted mid-stage 0 (the projection head must come back), exactly at the end of
    # stage 0 (resume starts stage 1), mid-stage 1, then run to the end
    stops = [(1, ("pretrain", 1)), (2, ("pretrain", 2)), (3, ("classifier", 1)), (None, None)]
    for k, (stop, where) in enumerate(stops):
        state, model = run(
            tmp_path / "part", "two", resume=k > 0, stop_after=stop, init_seed=10 * k
        )
        if where is not None:
            assert not state.completed and (state.stage, state.epoch) == where
    assert state.completed and (state.stage, state.epoch, state.global_epoch) == (
        "classifier",
        3,
        5,
    )

    assert_same_weights(full_model.state_dict(), model.state_dict())
    log = read_metrics(tmp_path / "part" / "metrics.jsonl")
    assert [(r["stage"], r["epoch"]) for r in log] == [
        ("pretrain", 1),
        ("pretrain", 2),
        ("classifier", 1),
        ("classifier", 2),
        ("classifier", 3),
    ]
    assert [r["train/loss"] for r in log] == [r["train/loss"] for r in full.history]


def test_rng_restore_is_what_makes_resume_exact(tmp_path, monkeypatch):
    """Without restoring the RNG (PGD random starts, crops and flips draw from it) the
    resumed run departs from the uninterrupted one: the test above would catch a loop
    that forgot it."""
    _, full_model = run(tmp_path / "full")
    run(tmp_path / "part", stop_after=2)
    monkeypatch.setattr(loop_module, "_restore_rng", lambda *args, **kwargs: None)
    _, resumed_model = run(tmp_path / "part", resume=True)
    differs = [
        k
        for k, v in full_model.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, resumed_model.state_dict()[k])
    ]
    assert differs


def test_checkpoint_is_complete_safe_and_unwrapped(tmp_path):
    state, model = run(tmp_path / "run", "two", stop_after=1)
    raw = torch.load(state.last_path, weights_only=True, map_location="cpu")
    assert set(PAYLOAD_KEYS) <= set(raw)
    assert raw["format"] == "afa-checkpoint/1"
    assert raw["model"].keys() == model.state_dict().keys()
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in raw["model"])
    assert set(raw["method"]) == {"projection.weight", "projection.bias"}  # no "model." keys
    assert raw["stage"] == {"index": 0, "name": "pretrain"}
    assert (raw["epoch"], raw["global_epoch"], raw["global_step"]) == (1, 1, 4)
    assert raw["scheduler"]["last_step"] == 4 and raw["optimizer"]["state"]
    assert raw["eval_weights"] == "ema" and raw["ema"].keys() == raw["model"].keys()
    assert len(raw["rng"]) == raw["world_size"] == 1
    assert raw["config"] == CONFIG and raw["metrics"]["global_epoch"] == 1
    assert raw["best"] is None  # a select_by=None stage never chooses a best
    assert not (tmp_path / "run" / "best.pt").exists()


def test_metrics_jsonl_records_are_flat_numbers(tmp_path):
    state, _ = run(tmp_path / "run")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4
    records = [json.loads(line) for line in lines]
    assert records == state.history
    for i, r in enumerate(records, start=1):
        assert r["stage"] == "train" and r["epoch"] == i and r["global_epoch"] == i
        assert r["global_step"] == 4 * i
        for key in ("lr", "time_s", "train/loss", "train/adv_acc", "val/clean_acc", "val/pgd_acc"):
            assert isinstance(r[key], (int, float)) and not isinstance(r[key], bool), key
        assert 0 <= r["val/pgd_acc"] <= r["val/clean_acc"] <= 1
    # the warm-up epoch ends below the peak LR; cosine decays afterwards
    assert records[0]["lr"] < 0.05 and records[1]["lr"] > records[3]["lr"]


def test_best_is_updated_only_on_improvement(tmp_path, monkeypatch):
    scripted = iter([0.2, 0.5, 0.4, 0.5])  # improves at epochs 1 and 2 only (ties do not count)
    written = []
    real_save = loop_module.save_checkpoint

    def fake_validate(*args, **kwargs):
        return {"clean_acc": 0.9, "pgd_acc": next(scripted)}

    def spy_save(path, payload, *, copies=()):
        written.append((payload["epoch"], [Path(c).name for c in copies]))
        real_save(path, payload, copies=copies)

    monkeypatch.setattr(loop_module, "validate", fake_validate)
    monkeypatch.setattr(loop_module, "save_checkpoint", spy_save)
    state, _ = run(tmp_path / "run")
    assert written == [(1, ["best.pt"]), (2, ["best.pt"]), (3, []), (4, [])]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["epoch"] == 2 and best["global_step"] == 8
    assert best["best"] == {
        "metric": "val/pgd_acc",
        "value": 0.5,
        "stage": "train",
        "epoch": 2,
        "global_epoch": 2,
    }
    assert state.best == best["best"] and state.best_path == tmp_path / "run" / "best.pt"


def test_without_validation_best_follows_last(tmp_path):
    state, _ = run(tmp_path / "run", val=False)
    best, last = load_checkpoint(state.best_path), load_checkpoint(state.last_path)
    assert best["epoch"] == last["epoch"] == 4
    assert_same_weights(best["model"], last["model"])
    assert best["best"]["metric"] is None and "val/pgd_acc" not in state.history[-1]


def test_eval_every_validates_on_schedule_and_at_the_last_epoch(tmp_path):
    options = LoopOptions(val_batch_size=BATCH, eval_every=3, log_every=4)
    state, _ = run(tmp_path / "run", options=options)
    assert ["val/pgd_acc" in r for r in state.history] == [False, False, True, True]


def test_resume_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="last.pt: cannot resume, no checkpoint"):
        run(tmp_path / "none", resume=True)
    run(tmp_path / "run", stop_after=1)
    with pytest.raises(CheckpointError, match="last.pt exists"):
        run(tmp_path / "run")
    changed = {**CONFIG, "model": {"name": "tiny", "width": 32}}
    with pytest.raises(CheckpointError, match="config key 'model.width' differs"):
        run(tmp_path / "run", resume=True, config=changed)
    # entries outside the resume keys may change (here: a logging option)
    run(
        tmp_path / "run",
        resume=True,
        stop_after=2,
        config={**CONFIG, "train": {"seed": 0, "log_every": 9}},
    )
    with pytest.raises(CheckpointError, match="stage 0 'train'"):
        run(tmp_path / "run", "two", resume=True)


def test_resuming_a_finished_run_does_nothing(tmp_path):
    run(tmp_path / "run", "two")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    state, _ = run(tmp_path / "run", "two", resume=True)
    assert state.completed and state.history == [] and state.global_epoch == 5
    assert (state.stage, state.epoch) == ("classifier", 3)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


@pytest.mark.gpu
def test_fp16_channels_last_resume_on_cuda(tmp_path):
    """fp16 autocast + gradient scaler + channels_last on CUDA; the scaler and the CUDA RNG
    (PGD starts, crops) are checkpointed, so resume == uninterrupted here too."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    options = LoopOptions(
        val_batch_size=BATCH,
        log_every=4,
        ema=EMAConfig(decay=0.9),
        precision="fp16",
        channels_last=True,
    )
    _, full = run(tmp_path / "full", options=options, device="cuda")
    run(tmp_path / "part", options=options, device="cuda", stop_after=2)
    state, resumed = run(
        tmp_path / "part", options=options, device="cuda", resume=True, init_seed=3
    )
    ckpt = load_checkpoint(state.last_path)
    assert ckpt["scaler"]["scale"] > 0 and ckpt["rng"][0]["cuda"] is not None
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], rtol=0, atol=1e-5), k


def test_validation_records_name_their_attack_and_the_log_is_one_short_line(tmp_path, caplog):
    from afa.attacks import pgd_label

    with caplog.at_level(logging.INFO, logger="afa"):
        state, _ = run(tmp_path / "run", "two")
    label = pgd_label(THREAT, "CE")
    assert label == "PGD-2 (CE, BN eval)"
    assert all(r["val/attack"] == label for r in state.history)
    lines = [r.getMessage() for r in caplog.records if "epoch " in r.getMessage()]
    assert len(lines) == 5  # one per epoch (2 pre-training + 3 classifier)
    first, last = lines[0], lines[-1]
    assert first.startswith("stage 1/2 pretrain  epoch 1/2  loss ")
    assert last.startswith("stage 2/2 classifier  epoch 3/3  loss ")
    r = state.history[-1]
    assert f"train acc {100 * r['train/acc']:.1f}%" in last
    assert f"val {label} {100 * r['val/pgd_acc']:.1f}%" in last
    assert all(len(line) < 160 for line in lines)
