"""Mixed precision as a context: autocast for bf16/fp16, a gradient scaler only for fp16."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from afa.errors import ConfigError
from afa.runs.options import Precision

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(device: torch.device, precision: Precision) -> None:
    """Raise a ConfigError for a precision the device cannot run (fp16 needs CUDA)."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"train.precision: expected 'fp32', 'bf16' or 'fp16', got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision: 'fp16' needs a CUDA device (got {device}); use 'bf16' or 'fp32'"
        )


def autocast_context(device: torch.device, precision: Precision) -> AbstractContextManager:
    """``nullcontext()`` for fp32, else ``torch.autocast`` on the device's type.

    bf16 autocast also works on CPU (slowly; useful to test). Parameters stay float32;
    only eligible ops run in low precision.
    """
    check_precision(device, precision)
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def make_grad_scaler(device: torch.device, precision: Precision) -> torch.amp.GradScaler:
    """A ``GradScaler`` enabled only for fp16 on CUDA (bf16 has fp32's range).

    A disabled scaler is a pass-through (``scale(loss) is loss``; ``step`` just steps), so
    the loop calls it unconditionally; its ``state_dict()`` is then empty.
    """
    check_precision(device, precision)
    enabled = precision == "fp16" and device.type == "cuda"
    return torch.amp.GradScaler(device.type, enabled=enabled)


__all__ = ["autocast_context", "check_precision", "make_grad_scaler"]
