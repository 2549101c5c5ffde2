"""Two gloo ranks give the single-process AFA loss and gradients of the concatenated batch.

DDP averages parameter gradients over ranks (done here by hand, as its reducer does);
:class:`afa.losses.AFALoss` computes the loss over the gathered global batch on every rank
and scales its gradient by the world size, so the averaged gradient is the single-process
one. The AFA attack's contrast set is gathered too: each rank's adversarial views equal
the single-process ones. Each rank checks its numbers against a
single-process computation on the concatenated batch (a copy of the same model); a failed
assertion in a rank fails the test through ``torch.multiprocessing.spawn``.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from afa.attacks.threat import ThreatModel
from afa.losses import AFALoss, Views, gather_with_grad
from afa.methods.afa import AFAPretrain
from afa.methods.contrastive import craft_afa_views
from afa.models.base import Classifier, Normalize

pytestmark = pytest.mark.dist

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(rank_sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for b in rank_sizes:
        xs.append(torch.randn(b, 2, 6, generator=g))  # (B, views=2, D_in): clean, adversarial
        ys.append(torch.randint(0, 3, (b,), generator=g))
    return xs, ys


def _assert_close(a, b, rtol, atol, what):
    # torch.testing.assert_close costs ~2 s of lazy imports in a fresh process; allclose is enough
    if not torch.allclose(a, b, rtol=rtol, atol=atol):
        raise AssertionError(f"{what}: max |a - b| = {(a - b).abs().max().item():.3g}\n{a}\n{b}")


def _rows(x):
    """(B, 2, D) -> the stacked (2B, D) layout of Views.stack(y, 1, 1)."""
    return torch.cat([x[:, 0], x[:, 1]])


CASES = [
    ((5, 5), {}),  # the AFA default: adversarial anchors, negatives denominator
    ((6, 3), {"denominator": "supcon", "anchors": "all", "clean_anchor_weight": 0.5}),
]


def _worker(rank: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)  # tiny tensors; two ranks share a small CPU
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for rank_sizes, options in CASES:  # one spawn for every case: process start-up dominates
            _check(rank, rank_sizes, options)
        _check_attack(rank, (5, 3))
    finally:
        dist.destroy_process_group()


def _check(rank: int, rank_sizes, options) -> None:
    torch.manual_seed(0)
    net = nn.Linear(6, 4)
    single = nn.Linear(6, 4)
    single.load_state_dict(net.state_dict())
    crit = AFALoss(temperature=0.2, **options)
    xs, ys = _batch(rank_sizes)

    # --- 2 ranks: each its own slice of the batch
    out = crit(net(_rows(xs[rank])), Views.stack(ys[rank], 1, 1))
    out.loss.backward()
    # What DDP's reducer does after backward: average every parameter gradient over ranks.
    # (Done by hand: constructing DistributedDataParallel costs ~5 s of lazy imports.)
    for p in net.parameters():
        dist.all_reduce(p.grad)
        p.grad /= WORLD

    # --- 1 process on the concatenated batch (gather disabled; same arithmetic)
    ref_crit = AFALoss(temperature=0.2, gather=False, **options)
    z = torch.cat([single(_rows(x)) for x in xs])
    views = [Views.stack(y, 1, 1) for y in ys]
    cat = Views(
        labels=torch.cat([v.labels for v in views]),
        sample=torch.cat([v.sample for v in views]),
        is_adv=torch.cat([v.is_adv for v in views]),
    )
    ref = ref_crit(z, cat)
    ref.loss.backward()

    _assert_close(out.loss.detach(), ref.loss.detach(), 1e-6, 1e-7, f"loss {options}")
    assert out.num_valid == ref.num_valid and out.num_rows == ref.num_rows
    for (name, p), q in zip(net.named_parameters(), single.parameters(), strict=True):
        _assert_close(p.grad, q.grad, 1e-5, 1e-7, f"grad of {name} {options}")

    # gather_with_grad: rank order, offsets, gradient only to the local slice
    t = torch.full((rank_sizes[rank], 2), float(rank + 1), requires_grad=True)
    g, offset = gather_with_grad(t, return_offset=True)
    assert g.shape[0] == sum(rank_sizes) and offset == sum(rank_sizes[:rank])
    assert (g[offset : offset + rank_sizes[rank]] == rank + 1).all()
    g.sum().backward()
    assert (t.grad == 1).all()
    flags = gather_with_grad(torch.tensor([rank == 0] * rank_sizes[rank]))
    assert flags.dtype == torch.bool and flags.sum().item() == rank_sizes[0]


class _Tiny(Classifier):
    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize([0.5], [0.5])
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(9, 12), nn.BatchNorm1d(12), nn.ReLU())
        self.num_features, self.num_classes = 12, 3
        self.head = nn.Linear(12, 3)

    def encode(self, x):
        return self.body(x)


def _check_attack(rank: int, rank_sizes) -> None:
    """The AFA attack against the gathered contrast set: each rank's adversarial views equal
    the single-process ones of the concatenated batch (the self rows are offset per rank).

    L2 PGD without random start: deterministic, and continuous in the gradient (a sign step
    could flip on rounding-level differences of the two summation orders).
    """
    torch.manual_seed(0)
    method = AFAPretrain(_Tiny(), ThreatModel(), AFAPretrain.Config(head="linear", head_dim=5))
    for m in method.modules():  # BN statistics that are not the identity
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    threat = ThreatModel(norm="l2", eps=0.5, step_size=0.2, steps=3, random_start=False)
    g = torch.Generator().manual_seed(1)
    clean = [torch.rand(b, 1, 3, 3, generator=g) for b in rank_sizes]
    starts = [torch.rand(b, 1, 3, 3, generator=g) for b in rank_sizes]
    ys = [torch.randint(0, 3, (b,), generator=g) for b in rank_sizes]
    crit = AFALoss(temperature=0.2, denominator="negatives", cross_view_positives=True)

    local = craft_afa_views(method, method.embed, clean[rank], starts[rank], ys[rank], threat, crit)
    # the single process on the concatenated batch, outside any process group's reach
    single = _single_process(
        lambda: craft_afa_views(
            method, method.embed, torch.cat(clean), torch.cat(starts), torch.cat(ys), threat, crit
        )
    )
    lo = sum(rank_sizes[:rank])
    _assert_close(local, single[lo : lo + rank_sizes[rank]], 1e-5, 1e-6, "AFA adversarial views")
    assert (local - starts[rank]).abs().sum() > 0  # the attack moved


def _single_process(fn):
    """Run ``fn`` as if torch.distributed were not initialised."""
    import afa.losses.distributed as d

    saved = d.is_distributed
    d.is_distributed = lambda: False
    try:
        return fn()
    finally:
        d.is_distributed = saved


def test_two_ranks_equal_one_process():
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD, join=True)
