"""Two gloo ranks give the single-process NT-Xent loss and gradients of the concatenated batch
(ranks of different sizes: the image ids of the gathered rows must stay distinct)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from afa.losses.ntxent import NTXentLoss

pytestmark = pytest.mark.dist

WORLD = 2
SIZES = (5, 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close(a, b, what):
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-7):
        raise AssertionError(f"{what}: max |a - b| = {(a - b).abs().max().item():.3g}")


def _worker(rank: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        net, single = nn.Linear(6, 4), nn.Linear(6, 4)
        single.load_state_dict(net.state_dict())
        g = torch.Generator().manual_seed(1)
        xs = [torch.randn(2, b, 6, generator=g) for b in SIZES]  # (views, B_r, D_in)
        out = NTXentLoss(0.5)(net(xs[rank].flatten(0, 1)))
        out.loss.backward()
        for p in net.parameters():  # DDP's reducer: the average over ranks
            dist.all_reduce(p.grad)
            p.grad /= WORLD
        # One process: view 0 of every rank's images, then view 1, in rank order.
        rows = torch.cat([torch.cat([x[v] for x in xs]) for v in range(2)])
        ref = NTXentLoss(0.5, gather=False)(single(rows))
        ref.loss.backward()
        _close(out.loss.detach(), ref.loss.detach(), "loss")
        assert out.num_rows == ref.num_rows == 2 * sum(SIZES)
        for (name, p), q in zip(net.named_parameters(), single.parameters(), strict=True):
            _close(p.grad, q.grad, f"grad of {name}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process():
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD, join=True)
