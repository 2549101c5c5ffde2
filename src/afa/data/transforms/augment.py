"""uint8 -> float on the device, and batched on-device augmentation.

Images travel as uint8 (a quarter of float32's bytes) and become float only on their device.
The random crop + flip is one vectorised gather per batch with per-sample offsets, drawn from
torch's global RNG of the tensor's device, so a checkpoint holding the RNG states replays it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from afa.data.base import DatasetInfo
from afa.data.transforms.contrastive_augment import ContrastiveAugment, ContrastiveAugmentConfig


def to_float(x: Tensor, device: torch.device | str) -> Tensor:
    """Move a uint8 batch to ``device`` and scale it to float32 in [0, 1].

    The uint8 tensor is transferred first (4x fewer bytes), then converted on the device.

    Shape:
        x: (B, C, H, W) uint8 -> (B, C, H, W) float32.
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"to_float expects a uint8 batch, got {x.dtype}")
    return x.to(device, non_blocking=True).float().div_(255.0)


def make_augment(
    info: DatasetInfo, padding: int, contrastive: ContrastiveAugmentConfig | None = None
) -> Callable[[Tensor], Tensor]:
    """The training augmentation for ``info.augment``: identity, crop + flip, or contrastive.

    ``crop-flip``: each image is zero-padded by ``padding`` on every side, cropped back to its
    size at a uniformly random offset, and flipped left-right with probability 1/2, independently
    per sample (Krizhevsky et al. 2012; the standard CIFAR recipe with ``padding=4``).

    ``contrastive``: SimCLR's crop/flip/colour jitter/grayscale with a strength schedule
    (:class:`~afa.data.transforms.contrastive_augment.ContrastiveAugment`, options ``contrastive``); it
    has ``set_epoch(epoch, epochs)``, which the training loop calls at each epoch's start.

    Shape:
        x: (B, C, H, W), any dtype, on any device -> same shape, dtype and device.
    """
    if info.augment == "none":
        return _identity
    if info.augment == "contrastive":
        return ContrastiveAugment(contrastive)
    if info.augment != "crop-flip":
        raise ValueError(
            f"unknown augment {info.augment!r}; expected 'none', 'crop-flip' or 'contrastive'"
        )
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")

    def crop_flip(x: Tensor) -> Tensor:
        return random_crop_flip(x, padding)

    return crop_flip


def _identity(x: Tensor) -> Tensor:
    return x


def random_crop_flip(x: Tensor, padding: int) -> Tensor:
    """Per-sample random crop (zero padding) and horizontal flip, without a loop over samples.

    Shape:
        x: (B, C, H, W) -> (B, C, H, W).
    """
    b, c, h, w = x.shape
    device = x.device
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    top = torch.randint(0, 2 * padding + 1, (b, 1), device=device)
    left = torch.randint(0, 2 * padding + 1, (b, 1), device=device)
    flip = torch.rand(b, 1, device=device) < 0.5
    rows = top + torch.arange(h, device=device)  # (B, H)
    cols_fwd = torch.arange(w, device=device)
    cols = left + torch.where(flip, cols_fwd.flip(0), cols_fwd)  # (B, W), reversed if flipped
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))
