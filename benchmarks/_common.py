"""Shared helpers of the benchmarks: device choice, timing, peak memory, tables, JSON.

Measurement conventions (see ``benchmarks/README.md``):

* Times are wall-clock seconds of ``time.perf_counter``; on CUDA every timed region is
  closed by ``torch.cuda.synchronize`` so kernels queued by the step are counted.
* Peak memory is the growth of tensor memory during one call above what was live
  before it:

  - CUDA: ``torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()`` around
    the call (peak statistics reset first);
  - CPU: the allocator trace of ``torch.profiler`` (``profile_memory=True``): every
    allocation and free of the c10 CPU allocator in order; the peak of their running
    sum. This counts tensor storage only (what a GPU would hold), not Python objects,
    oneDNN scratch space or the allocator's cached pages, and it costs one extra,
    untimed call (the profiler slows the call; its time is never used).

Absolute times on a shared machine are noise; ratios measured in one interleaved run are
the figures worth reading.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

MiB = 2**20


def resolve_device(name: str) -> torch.device:
    """The library's resolver (``afa.runs.resolve_device``); a bad name ends the benchmark.

    Raises:
        SystemExit: an unknown device, or ``cuda`` asked for on a machine without CUDA.
    """
    from afa.errors import UserError
    from afa.runs import resolve_device as library_resolve_device

    try:
        return library_resolve_device(name)
    except UserError as exc:
        raise SystemExit(f"--device {name}: {exc}") from None


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, reps: int = 1) -> float:
    """Seconds per call of ``fn`` over ``reps`` back-to-back calls (synchronised)."""
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    synchronize(device)
    return (time.perf_counter() - t0) / reps


def reps_for(seconds_per_call: float, min_sample_s: float, cap: int = 64) -> int:
    """Calls per timed sample so that a sample lasts at least ``min_sample_s``."""
    if min_sample_s <= 0 or seconds_per_call <= 0:
        return 1
    return max(1, min(cap, math.ceil(min_sample_s / seconds_per_call)))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[int, str]:
    """Peak tensor-memory growth (bytes) during one call of ``fn``, and how it was measured.

    See the module docstring. ``fn`` runs once more than the timed calls.
    """
    peak, source, _ = memory_profile(fn, device)
    return peak, source


def memory_profile(fn: Callable[[], Any], device: torch.device) -> tuple[int, str, list[int]]:
    """``(peak growth in bytes, how it was measured, allocation sizes)`` of one call of ``fn``.

    The allocation sizes (bytes, largest first) come from the CPU allocator trace; on CUDA
    the list is empty (only the peak is read).
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        peak = int(torch.cuda.max_memory_allocated(device) - base)
        return peak, "cuda.max_memory_allocated", []
    events = _cpu_allocations(fn)
    live = peak = 0
    for _, size in events:
        live += size
        peak = max(peak, live)
    sizes = sorted((size for _, size in events if size > 0), reverse=True)
    return peak, "profiler allocator trace (CPU tensors)", sizes


def _cpu_allocations(fn: Callable[[], Any]) -> list[tuple[int, int]]:
    """``(time_ns, bytes)`` of every CPU allocation (> 0) and free (< 0) during ``fn``, in order."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())  # type: ignore[union-attr]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
    events.sort()
    return events


def warn_if_busy(device: torch.device) -> None:
    """Warn when other processes keep the CPU busy while torch runs several threads.

    On a loaded machine torch's intra-op threads wait at every barrier for a thread the
    scheduler has parked: steps get 10-100x slower and very noisy. One thread is steadier.
    """
    if device.type != "cpu" or torch.get_num_threads() == 1 or not hasattr(os, "getloadavg"):
        return
    load = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    if load > 0.5 * cpus:
        print(
            f"warning: load average {load:.1f} on {cpus} CPUs with {torch.get_num_threads()} "
            "torch threads; timings may be dominated by thread contention (try --threads 1)"
        )


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    env: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are printed with 3 significant digits."""

    def cell(v: Any) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, float):
            if math.isnan(v):
                return "n/a"
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` (numbers as numbers) to ``path`` when given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    print(f"wrote {path}")


__all__ = [
    "MiB",
    "environment",
    "markdown_table",
    "median",
    "memory_profile",
    "peak_memory",
    "reps_for",
    "resolve_device",
    "synchronize",
    "timed",
    "warn_if_busy",
    "write_json",
]
