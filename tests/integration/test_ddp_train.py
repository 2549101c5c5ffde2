"""``fit`` under DDP (2 gloo processes) equals one process on the same global batches.

Each rank gets half of every global batch from the real sharded ``BatchLoader``
(``world_size=2``, per-rank batch B/2); the single process gets batch B. DDP averages the
two per-rank mean gradients, which is the global mean gradient, so the weights agree up to
float32 summation order: we require ``atol=1e-5`` after 12 SGD-with-momentum steps
(differences are ~1e-7 in practice). The model has no batch norm (per-rank statistics would
differ; SyncBatchNorm has no CPU kernel), the augmentation is the identity and validation
PGD has no random start, so nothing random separates the two runs. The run has two stages,
the first leaving the classifier head out of its loss (DDP's unused-parameter path).
Validation is sharded over ranks (13 + 12 examples) and its counts summed before dividing,
so it must equal the single-process accuracy exactly. A DDP run interrupted after 2 epochs
and resumed equals the uninterrupted DDP run bitwise.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# pytest's default ("prepend") import mode puts this folder on sys.path (and spawn hands
# sys.path to the workers), so the stand-ins are shared with test_resume.py
from test_resume import BATCH, CleanCE, ProjectionCE, TinyNet, toy_data

from afa.attacks import ThreatModel
from afa.data import BatchLoader
from afa.training import (
    DistContext,
    LoopOptions,
    OptimConfig,
    RunSpec,
    ScheduleConfig,
    Stage,
    fit,
    read_metrics,
)

pytestmark = pytest.mark.dist

WORLD = 2
THREAT = ThreatModel(norm="linf", eps=8 / 255, step_size=4 / 255, steps=2, random_start=False)
CONFIG = {"model": {"name": "tiny-no-bn"}, "data": {"name": "toy"}}


def _val() -> tuple[torch.Tensor, torch.Tensor]:
    data = toy_data(25, seed=1)
    return torch.from_numpy(data.images), torch.from_numpy(data.labels)


def _train(ctx: DistContext, run_dir: Path, *, resume=False, stop_after=None, init_seed=0):
    torch.manual_seed(init_seed)
    model = TinyNet(bn=False)
    sgd = OptimConfig(lr=0.05)
    stages = [
        Stage("pretrain", ProjectionCE(model), 1, sgd, ScheduleConfig(), select_by=None),
        Stage(
            "train", CleanCE(model, THREAT), 2, sgd, ScheduleConfig(name="cosine"), grad_clip=1.0
        ),
    ]
    loader = BatchLoader(
        toy_data(),
        BATCH // ctx.world_size,
        shuffle=True,
        drop_last=True,
        seed=0,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    fit(
        stages,
        loader,
        RunSpec(run_dir, CONFIG),
        options=LoopOptions(val_batch_size=8, log_every=100),
        val=_val(),
        threat=THREAT,
        augment=lambda x: x,
        device=ctx.device,
        dist=ctx,
        resume=resume,
        stop_after=stop_after,
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    ctx = DistContext.from_env("cpu")
    try:
        assert ctx.enabled and ctx.backend == "gloo" and ctx.rank == rank
        assert ctx.reduce_sums({"correct": rank + 1, "n": 10 + rank}) == {"correct": 3.0, "n": 21.0}
        tmp_dir = Path(tmp)
        full = _train(ctx, tmp_dir / "ddp_full")
        _train(ctx, tmp_dir / "ddp_part", stop_after=2)
        resumed = _train(ctx, tmp_dir / "ddp_part", resume=True, init_seed=5)
        if ctx.is_main:
            torch.save({"full": full, "resumed": resumed}, tmp_dir / "ddp_weights.pt")
    finally:
        ctx.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in records]


def test_two_gloo_processes_equal_one_process(tmp_path, monkeypatch):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    single = _train(DistContext.from_env("cpu"), tmp_path / "single")
    ddp = torch.load(tmp_path / "ddp_weights.pt", weights_only=True)
    torch.manual_seed(0)
    init = TinyNet(bn=False).state_dict()
    for k, v in single.items():
        assert not torch.equal(v, init[k]), k  # it did train
        assert torch.allclose(ddp["full"][k], v, rtol=0, atol=1e-5), k
        assert torch.equal(ddp["resumed"][k], ddp["full"][k]), k  # resume under DDP: exact

    one = read_metrics(tmp_path / "single" / "metrics.jsonl")
    two = read_metrics(tmp_path / "ddp_full" / "metrics.jsonl")
    assert [(r["stage"], r["epoch"], r["global_step"]) for r in two] == [
        ("pretrain", 1, 4),
        ("train", 1, 8),
        ("train", 2, 12),
    ]  # rank 0 alone writes; 4 global steps per epoch
    assert _untimed(read_metrics(tmp_path / "ddp_part" / "metrics.jsonl")) == _untimed(two)
    for r, s in zip(one, two, strict=True):
        assert s["train/loss"] == pytest.approx(r["train/loss"], rel=1e-5)
        if r["stage"] == "train":  # accuracies: weighted by batch size, summed over ranks
            assert s["train/acc"] == r["train/acc"]
        assert (s["val/clean_acc"], s["val/pgd_acc"]) == (r["val/clean_acc"], r["val/pgd_acc"])
