"""Precision, single-process distributed helpers, metrics logging and validation."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from afa.attacks import ThreatModel, cross_entropy, perturb
from afa.errors import ConfigError
from afa.models.base import Classifier, Normalize
from afa.training import (
    DistContext,
    MetricsWriter,
    autocast_context,
    make_grad_scaler,
    read_metrics,
    validate,
    wrap_ddp,
)
from afa.training.logging import Progress

CPU = torch.device("cpu")


# --- precision -------------------------------------------------------------------------


def test_fp32_is_plain_and_bf16_autocasts_on_cpu():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast_context(CPU, "fp32"):
        assert (a @ b).dtype == torch.float32
    with autocast_context(CPU, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    assert not make_grad_scaler(CPU, "bf16").is_enabled()
    assert not make_grad_scaler(CPU, "fp32").is_enabled()


def test_fp16_needs_cuda():
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA device"):
        autocast_context(CPU, "fp16")
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA device"):
        make_grad_scaler(CPU, "fp16")


# --- distributed, single process -------------------------------------------------------


def test_single_process_context(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = DistContext.from_env("cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    assert ctx.device == CPU and ctx.backend is None
    assert ctx.reduce_sums({"b": torch.tensor(2.0), "a": 3}) == {"a": 3.0, "b": 2.0}
    assert ctx.all_gather_object({"x": 1}) == [{"x": 1}]
    method = nn.Linear(2, 2)
    assert wrap_ddp(method, ctx, sync_bn=True) is method
    ctx.barrier()
    ctx.cleanup()


def test_device_preferences_are_checked(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="device: expected 'auto', 'cpu'"):
        DistContext.from_env("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            DistContext.from_env("cuda")
        assert DistContext.from_env("auto").device == CPU


# --- metrics.jsonl and progress --------------------------------------------------------


def test_metrics_writer_writes_flat_numbers(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    writer.write({"global_epoch": 1, "train/loss": torch.tensor(0.25), "lr": np.float64(0.1)})
    writer.write({"global_epoch": 2, "train/loss": float("nan"), "stage": "train"})
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"global_epoch": 1, "train/loss": 0.25, "lr": 0.1}
    assert json.loads(lines[1])["train/loss"] is None  # valid JSON: NaN becomes null
    writer.keep(lambda r: r["global_epoch"] <= 1)
    assert read_metrics(path) == [{"global_epoch": 1, "train/loss": 0.25, "lr": 0.1}]
    MetricsWriter(tmp_path / "other.jsonl", enabled=False).write({"a": 1})
    assert not (tmp_path / "other.jsonl").exists()


def test_progress_logs_every_log_every_steps_and_the_last(caplog):
    progress = Progress("train 1/2", total=5, log_every=2, bar=False)
    with caplog.at_level(logging.INFO, logger="afa"):
        for step in range(1, 6):
            progress.step(step, {"loss": 1.0 / step} if progress.due(step) else None)
    progress.close()
    assert [r.getMessage() for r in caplog.records] == [
        "train 1/2 step 2/5 loss 0.5",
        "train 1/2 step 4/5 loss 0.25",
        "train 1/2 step 5/5 loss 0.2",
    ]


# --- validation ------------------------------------------------------------------------


class Linear(Classifier):
    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize([0.5], [0.5])
        self.flat = nn.Flatten()
        self.num_features, self.num_classes = 16, 3
        self.head = nn.Linear(16, 3)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.flat(x)


def _val_data(n: int = 10):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    return images, labels


def test_validate_counts_correct_examples_and_divides_once():
    torch.manual_seed(0)
    model = Linear().train()
    images, labels = _val_data(10)
    threat = ThreatModel(eps=16 / 255, step_size=8 / 255, steps=3)
    torch_state = torch.get_rng_state()
    out = validate(
        model,
        images,
        labels,
        threat,
        batch_size=4,
        device=CPU,
        generator=torch.Generator().manual_seed(5),
    )
    assert torch.equal(torch.get_rng_state(), torch_state)  # the training RNG is untouched
    assert model.training and all(p.grad is None for p in model.parameters())

    # the oracle: the same batches and the same seeded random starts, counted by hand
    model.eval()
    x = images.float() / 255
    gen = torch.Generator().manual_seed(5)
    clean = (model(x).argmax(1) == labels).sum().item()
    adv = 0
    for s in range(0, 10, 4):
        x_adv = perturb(
            model, x[s : s + 4], labels[s : s + 4], threat, cross_entropy, generator=gen
        )
        adv += (model(x_adv).argmax(1) == labels[s : s + 4]).sum().item()
    assert out == {"clean_acc": clean / 10, "pgd_acc": adv / 10}
    assert out["pgd_acc"] < out["clean_acc"]  # eps 16/255 on a linear model does bite

    no_attack = validate(model, images, labels, threat.with_(steps=0), batch_size=3, device=CPU)
    assert no_attack == {"clean_acc": clean / 10, "pgd_acc": clean / 10}
