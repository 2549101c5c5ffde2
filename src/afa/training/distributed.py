"""Data-parallel training from torchrun's environment: process group, device, reductions.

``torchrun --nproc_per_node N afa train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; ``DistContext.from_env`` reads them. Without them the
run is a single process and every helper here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from afa.errors import ConfigError, UserError
from afa.runs.load import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 in a single process).
        world_size: number of processes.
        local_rank: rank on this machine (selects ``cuda:local_rank``).
        device: this process's device.
        backend: ``"nccl"`` (CUDA) or ``"gloo"`` (CPU), ``None`` for one process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @classmethod
    def single(cls, device: torch.device | str) -> DistContext:
        """A one-process context on ``device``."""
        return cls(device=torch.device(device))

    @classmethod
    def from_env(cls, device: torch.device | str = "auto") -> DistContext:
        """Join torchrun's process group when ``WORLD_SIZE`` > 1, else a single process.

        Args:
            device: the caller's preference. ``"auto"``: CUDA when available, else the
                CPU. ``cuda`` (any index) selects ``cuda:LOCAL_RANK`` and the NCCL
                backend under torchrun; ``cpu`` selects gloo.

        Raises:
            ConfigError: CUDA asked for but unavailable, or fewer GPUs than local ranks.
        """
        device = resolve_device(device)
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls.single(device)
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are visible"
                )
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        elif device.type == "cpu":
            backend = "gloo"
        else:
            raise ConfigError(f"distributed training supports cuda or cpu, got {device}")
        ctx = cls(rank, world_size, local_rank, device, backend)
        if not dist.is_initialized():
            with stop_if_peer_lost(ctx):  # a rank that dies while the job forms
                dist.init_process_group(
                    backend=backend, init_method="env://", rank=rank, world_size=world_size
                )
        return ctx

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and logs."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def reduce_sums(self, values: Mapping[str, float | Tensor]) -> dict[str, float]:
        """Sum each value over all ranks (float64). Every rank must pass the same keys.

        Use it for metric SUMS and COUNTS; divide after the reduction (counts divided
        once), never average per-rank means.
        """
        keys = sorted(values)
        if not self.enabled:
            return {k: float(values[k]) for k in keys}
        comm_device = self.device if self.backend == "nccl" else torch.device("cpu")
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return dict(zip(keys, t.tolist(), strict=True))

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def cleanup(self) -> None:
        """Leave the process group (call once, at the end of the job)."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


class PeerRankLost(UserError):
    """Another rank of the job stopped (killed or crashed) while this one waited on it."""


#: What gloo and NCCL say when the process at the other end of a collective is gone.
_PEER_LOST = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Broken pipe",
    "Connection refused",
    "NCCL communicator was aborted",
    "ncclRemoteError",
    "remote process exited",
)


def peer_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another rank's process is gone."""
    if isinstance(exc, getattr(dist, "DistNetworkError", ())):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _PEER_LOST)


@contextmanager
def stop_if_peer_lost(ctx: DistContext) -> Iterator[None]:
    """Turn a collective's failure on a lost peer into one line (:class:`PeerRankLost`).

    When one rank of a torchrun job is killed, the others fail in their next collective
    with a backend traceback (``gloo/transport/tcp/pair.cc: Connection reset by peer``);
    the real cause is in the lost rank's output, and the run resumes from ``last.pt``.
    """
    try:
        yield
    except RuntimeError as exc:
        if not (ctx.enabled and peer_lost(exc)):
            raise
        raise PeerRankLost(
            f"rank {ctx.rank} of {ctx.world_size}: another rank of this job stopped "
            "(killed or crashed), so this one stops too; that rank's output says why "
            "(resume with `afa train ... --resume`)"
        ) from None


def wrap_ddp(
    method: nn.Module,
    ctx: DistContext,
    *,
    sync_bn: bool = False,
    find_unused_parameters: bool = True,
) -> nn.Module:
    """Wrap a Method for data-parallel training (identity for a single process).

    ``Method.forward`` returns a ``StepOutput`` dataclass; DDP finds its loss tensor to
    mark parameters that took no part (``find_unused_parameters``, on by default because
    some stages leave modules out of the loss: the classifier head during contrastive
    pre-training). Frozen parameters (``requires_grad=False``) are ignored by DDP.

    Args:
        method: the Method, already on ``ctx.device``.
        ctx: the process's context.
        sync_bn: convert BatchNorm layers to ``SyncBatchNorm`` (in place: the same
            parameter objects and state-dict keys, so build the optimizer and EMA after).
            SyncBatchNorm needs CUDA.
        find_unused_parameters: see above.
    """
    if not ctx.enabled:
        return method
    if sync_bn:
        if ctx.device.type != "cuda":
            raise ConfigError("train.sync_bn needs CUDA (SyncBatchNorm has no CPU kernel)")
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(method)
        assert converted is method  # a Method is never itself a BN layer
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(
        method, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


__all__ = ["DistContext", "PeerRankLost", "peer_lost", "stop_if_peer_lost", "wrap_ddp"]
