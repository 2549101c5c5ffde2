"""Gathering a contrast set across ranks, with gradients to the local part.

A contrastive loss under data parallelism should see the *global* batch: every anchor is
contrasted with every rank's features. :func:`gather_with_grad` concatenates a tensor over
ranks (rank order) keeping the autograd graph of the local slice only.

How the gradients come out right under DDP (which *averages* parameter gradients over the
``W`` ranks): every rank computes the loss over **all** global anchors against the global
contrast set, so every rank holds the same loss value ``L`` (the single-process loss on the
concatenated batch). Backward on rank ``r`` reaches only its own features ``z_k``, with
exactly ``dL/dz_k`` (every anchor's term that involves ``z_k``, wherever that anchor
lives). Summed over ranks this is the full ``dL/dθ``; DDP's average divides it by ``W``,
so the loss is passed through :func:`scale_grad` with factor ``W``: its value stays ``L``
(what is logged equals the single-process loss) and its gradient is ``W · dL/dz``; the
average is then exactly the single-process gradient.

The alternative (each rank's own anchors against the global set) is cheaper by a factor W
in the loss but drops the gradient that other ranks' anchors send to local features
unless the gather's backward all-reduces gradients; we keep the exact, simpler form: the
loss costs O(N_global^2), the same as one process on the global batch, and is negligible
next to the network.

Without an initialised process group (or with one rank) everything here is the identity.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


@overload
def gather_with_grad(t: Tensor, *, return_offset: Literal[False] = False) -> Tensor: ...
@overload
def gather_with_grad(t: Tensor, *, return_offset: Literal[True]) -> tuple[Tensor, int]: ...
def gather_with_grad(t: Tensor, *, return_offset: bool = False) -> Tensor | tuple[Tensor, int]:
    """All-gather ``t`` along dim 0 over ranks; the local slice keeps its graph.

    Ranks may hold different numbers of rows (a last, smaller batch): sizes are exchanged
    first and the slices padded for the collective, then trimmed. Boolean tensors travel
    as uint8 (gloo does not reduce bools). Other ranks' slices are detached.

    Args:
        t: the local tensor.
        return_offset: also return the row where the local slice starts in the result.

    Returns:
        The concatenation over ranks in rank order (``t`` itself when not distributed),
        and with ``return_offset`` the local offset.

    Shape:
        t: (n_r, ...); result: (sum_r n_r, ...).
    """
    if not is_distributed():
        return (t, 0) if return_offset else t
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    send = t.detach()
    if send.dtype == torch.bool:
        send = send.to(torch.uint8)
    if send.shape[0] < longest:
        pad = send.new_zeros((longest - send.shape[0],) + tuple(send.shape[1:]))
        send = torch.cat([send, pad])
    bufs = [torch.empty_like(send) for _ in range(world)]
    dist.all_gather(bufs, send.contiguous())
    parts: list[Tensor] = [b[:n].to(t.dtype) for b, n in zip(bufs, counts, strict=True)]
    parts[rank] = t  # the local slice with its autograd graph
    out = torch.cat(parts)
    return (out, sum(counts[:rank])) if return_offset else out


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, t: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return t.view_as(t)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


def scale_grad(t: Tensor, factor: float) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by ``factor`` in the backward.

    Used with ``factor = world_size()`` on a loss computed over the gathered global batch
    (see the module docstring).
    """
    if factor == 1:
        return t
    return _ScaleGrad.apply(t, factor)


__all__ = ["gather_with_grad", "is_distributed", "scale_grad", "world_size"]
