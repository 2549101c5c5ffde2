"""SimCLR-style contrastive augmentation, batched on the tensor's device, with a strength.

The augmentation of SimCLR (Chen et al. 2020), ACL (Jiang et al. 2020) and DynACL (Luo et al.
2023) for 32x32 images, applied per image in this order, as torchvision's pipeline
``RandomResizedCrop -> RandomHorizontalFlip -> RandomApply(ColorJitter, p) -> RandomGrayscale``:

1. a random resized crop: area fraction ``U(scale)`` and log-uniform aspect ratio in
   ``ratio`` (10 tries, then a centre crop), resized back to the input size bilinearly;
2. a horizontal flip with probability 1/2;
3. with probability ``jitter_p``: brightness, contrast, saturation and hue jitter with factors
   drawn as torchvision's ``ColorJitter`` (``U(1 - b, 1 + b)``..., hue ``U(-h, h)``), the four
   in a random order drawn per image;
4. grayscale with probability ``grayscale_p``.

Every random number is drawn per image (kornia's ``ColorJitter`` draws one order for the whole
batch, and takes no ``generator``; hence this module), from ``generator`` or from the global RNG
of the tensor's device, so a checkpoint holding the RNG states replays it. The adjustment
formulas are torchvision's tensor ones (``_blend``, ITU-R 601 grayscale, the HSV round trip).

``strength`` s in [0, 1] scales the jitter magnitudes and probabilities and the crop range as
DynACL's ``reload(strength)`` (``train_DynACL.py``): jitter ``(0.4 s, 0.4 s, 0.4 s, 0.1 s)`` with
probability ``0.8 s``, grayscale ``0.2 s``, crop scale ``(1 - (1 - min_scale) s, 1)``; the flip is
not scaled. At s = 0 only the flip is left (a crop of scale 1 is the whole image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from afa.errors import ConfigError

#: ITU-R 601-2 luma weights (torchvision's ``rgb_to_grayscale``).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class ContrastiveAugmentConfig:
    """Options of ``data.augment: contrastive`` (the ``data.contrastive`` section).

    Attributes:
        min_scale: smallest crop area fraction at strength 1 (SimCLR/ACL 0.08; DynACL's
            ``1 - 0.9 s`` is 0.1).
        ratio: aspect-ratio range of the crop (SimCLR: 3/4, 4/3).
        brightness / contrast / saturation / hue: jitter magnitudes at strength 1
            (SimCLR CIFAR: 0.4, 0.4, 0.4, 0.1).
        jitter_p: probability of the colour jitter at strength 1 (0.8).
        grayscale_p: probability of grayscale at strength 1 (0.2).
        strength: the strength (``constant``) or its start value (``anneal``).
        schedule: ``constant``, or ``anneal``: DynACL's ``strength * (1 - e0 / epochs)``,
            e0 the first epoch of the current block of ``anneal_every`` epochs.
        anneal_every: DynACL's ``reload_frequency`` (50); 1 anneals every epoch.
    """

    min_scale: float = 0.08
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    strength: float = 1.0
    schedule: Literal["constant", "anneal"] = "constant"
    anneal_every: int = 50

    def __post_init__(self) -> None:
        checks = [
            (0 < self.min_scale <= 1, "min_scale", "in (0, 1]", self.min_scale),
            (0 < self.ratio[0] <= self.ratio[1], "ratio", "0 < low <= high", self.ratio),
            (0 <= self.hue <= 0.5, "hue", "in [0, 0.5]", self.hue),
            (0 <= self.jitter_p <= 1, "jitter_p", "in [0, 1]", self.jitter_p),
            (0 <= self.grayscale_p <= 1, "grayscale_p", "in [0, 1]", self.grayscale_p),
            (0 <= self.strength <= 1, "strength", "in [0, 1]", self.strength),
            (
                self.schedule in ("constant", "anneal"),
                "schedule",
                "constant or anneal",
                self.schedule,
            ),
            (self.anneal_every >= 1, "anneal_every", ">= 1", self.anneal_every),
        ]
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            checks.append((value >= 0, name, ">= 0", value))
        for ok, key, expected, got in checks:
            if not ok:
                raise ConfigError(f"data.contrastive.{key}: expected {expected}, got {got!r}")

    def strength_at(self, epoch: int, epochs: int) -> float:
        """The strength during ``epoch`` (from 0) of a stage of ``epochs`` epochs.

        ``anneal`` is DynACL's schedule: the data are "reloaded" at epochs 0, K, 2K, ...
        (K = ``anneal_every``) with strength ``1 - e0 / epochs`` at the reload epoch e0.
        """
        if self.schedule == "constant":
            return self.strength
        start = (epoch // self.anneal_every) * self.anneal_every
        return self.strength * max(0.0, 1.0 - start / max(epochs, 1))


class ContrastiveAugment:
    """The callable augmentation of ``data.augment: contrastive`` (see the module docstring).

    ``set_epoch(epoch, epochs)`` (called by the training loop at each epoch's start) sets
    ``strength`` from the config's schedule, so a resumed run gets the same strength.

    Shape:
        x: (B, C, H, W) float in [0, 1], C in {1, 3}, on any device -> same shape and dtype.
    """

    def __init__(self, config: ContrastiveAugmentConfig | None = None) -> None:
        self.config = config or ContrastiveAugmentConfig()
        self.strength = self.config.strength

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.strength = self.config.strength_at(epoch, epochs)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return contrastive_augment(x, self.config, self.strength, generator=generator)

    def __repr__(self) -> str:
        return f"ContrastiveAugment(strength={self.strength:.4g}, {self.config})"


def contrastive_augment(
    x: Tensor,
    config: ContrastiveAugmentConfig,
    strength: float,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Crop + flip + colour jitter + grayscale at ``strength`` (see the module docstring).

    Shape:
        x: (B, C, H, W) float in [0, 1], C in {1, 3} -> (B, C, H, W).
    """
    _check_images(x)
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    c = config
    b, _, h, w = x.shape
    scale = (1.0 - (1.0 - c.min_scale) * strength, 1.0)
    boxes = resized_crop_boxes(b, h, w, scale, c.ratio, device=x.device, generator=generator)
    flip = _rand(b, x, generator) < 0.5
    out = resized_crop(x, boxes, flip=flip)
    out = color_jitter(
        out,
        brightness=c.brightness * strength,
        contrast=c.contrast * strength,
        saturation=c.saturation * strength,
        hue=c.hue * strength,
        p=c.jitter_p * strength,
        generator=generator,
    )
    return random_grayscale(out, c.grayscale_p * strength, generator=generator)


# --- random resized crop -------------------------------------------------------------------


def resized_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> Tensor:
    """Per-image crop boxes as torchvision's ``RandomResizedCrop.get_params``, batched.

    Each image tries ``attempts`` (area, aspect ratio) draws and keeps the first that fits;
    when none does it falls back to the largest centre crop with the ratio clamped to ``ratio``.

    Returns:
        (B, 4) int64: top, left, crop height, crop width.
    """
    u = torch.rand(4, batch, attempts, device=device, generator=generator, dtype=torch.float64)
    return crop_boxes_from_uniforms(u[0], u[1], u[2], u[3], height, width, scale, ratio)


def crop_boxes_from_uniforms(
    u_area: Tensor,
    u_ratio: Tensor,
    u_top: Tensor,
    u_left: Tensor,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> Tensor:
    """The crop boxes for given uniform draws in [0, 1) (the deterministic part, testable).

    Shape:
        u_*: (B, attempts) float64 -> (B, 4) int64 (top, left, crop height, crop width).
    """
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u_ratio)
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    fits = (cw > 0) & (cw <= width) & (ch > 0) & (ch <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # argmax returns the first maximum
    ok = fits.any(1)
    cw = cw.gather(1, first)[:, 0]
    ch = ch.gather(1, first)[:, 0]
    # torch.randint(0, n + 1) per image, vectorised: floor(U * (n + 1)).
    top = torch.floor(u_top.gather(1, first)[:, 0] * (height - ch + 1))
    left = torch.floor(u_left.gather(1, first)[:, 0] * (width - cw + 1))
    # The fallback: the whole image, or its largest centre crop of a clamped ratio.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    fallback = torch.tensor(
        [(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.float64, device=u_area.device
    )
    boxes = torch.stack([top, left, ch, cw], 1)
    return torch.where(ok[:, None], boxes, fallback).long()


def resized_crop(x: Tensor, boxes: Tensor, *, flip: Tensor | None = None) -> Tensor:
    """Crop each image to its box and resize it back to (H, W), bilinear, then flip.

    Equal, image by image, to ``F.interpolate(crop[None], (H, W), mode="bilinear",
    align_corners=False)`` (optionally ``.flip(-1)``): bilinear resizing is separable, so each
    image is ``R_y @ crop @ R_xᵀ`` with (H, H_in) and (W, W_in) interpolation matrices, batched
    as two matmuls. A crop is never larger than the image, so this only upsamples, where
    antialiasing (torchvision's default) changes nothing.

    Shape:
        x: (B, C, H, W) float; boxes: (B, 4) int (top, left, height, width);
        flip: (B,) bool or None -> (B, C, H, W).
    """
    _, _, h, w = x.shape
    ry = _interp_matrix(boxes[:, 0], boxes[:, 2], h, h, x)  # (B, H, H)
    rx = _interp_matrix(boxes[:, 1], boxes[:, 3], w, w, x)  # (B, W, W)
    if flip is not None:
        rx = torch.where(flip[:, None, None], rx.flip(1), rx)
    return ry[:, None] @ x @ rx[:, None].transpose(-1, -2)


def _interp_matrix(start: Tensor, size: Tensor, out: int, full: int, like: Tensor) -> Tensor:
    """(B, out, full): row o holds the bilinear weights of output o on the full axis.

    PyTorch's ``align_corners=False`` source index: ``(o + 0.5) * size / out - 0.5``, clamped
    at 0, neighbours ``i0`` and ``min(i0 + 1, size - 1)`` inside the crop.
    """
    dev = like.device
    size_f = size.to(torch.float64)[:, None]
    src = (torch.arange(out, device=dev, dtype=torch.float64) + 0.5) * size_f / out - 0.5
    src = src.clamp_min(0.0)
    i0 = src.floor()
    lam = src - i0
    i0 = i0.long()
    i1 = torch.minimum(i0 + 1, size[:, None] - 1)
    base = start[:, None]
    m = torch.zeros(size.shape[0], out, full, device=dev, dtype=torch.float64)
    m.scatter_add_(2, (base + i0)[..., None], (1 - lam)[..., None])
    m.scatter_add_(2, (base + i1)[..., None], lam[..., None])
    return m.to(like.dtype)


# --- colour --------------------------------------------------------------------------------


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """ITU-R 601-2 luma, keeping a channel axis.

    Shape:
        x: (B, 3, H, W) -> (B, 1, H, W).
    """
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b)[:, None]


def _blend(a: Tensor, b: Tensor, factor: Tensor) -> Tensor:
    f = factor.to(a.dtype).view(-1, 1, 1, 1)
    return (f * a + (1 - f) * b).clamp(0, 1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """``factor * x`` clipped to [0, 1] (blend with black), one factor per image.

    Shape:
        x: (B, C, H, W); factor: (B,) -> (B, C, H, W).
    """
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's mean gray level (a scalar per image), clipped to [0, 1].

    Shape:
        x: (B, C, H, W), C in {1, 3}; factor: (B,) -> (B, C, H, W).
    """
    gray = rgb_to_grayscale(x) if x.shape[1] == 3 else x
    return _blend(x, gray.mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's grayscale version, clipped to [0, 1] (identity for C = 1).

    Shape:
        x: (B, C, H, W); factor: (B,) -> (B, C, H, W).
    """
    if x.shape[1] == 1:
        return x
    return _blend(x, rgb_to_grayscale(x), factor)


def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Rotate the hue by ``factor`` (a fraction of a turn, in [-0.5, 0.5]) per image.

    RGB -> HSV, ``h <- (h + factor) mod 1``, HSV -> RGB, as torchvision's tensor
    ``adjust_hue`` (identity for C = 1).

    Shape:
        x: (B, C, H, W); factor: (B,) -> (B, C, H, W).
    """
    if x.shape[1] == 1:
        return x
    hue, sat, val = _rgb_to_hsv(x)
    hue = torch.remainder(hue + factor.to(x.dtype).view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(hue, sat, val)


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r, g, b = x.unbind(1)
    maxc = x.amax(1)
    minc = x.amin(1)
    flat = maxc == minc  # gray pixels: hue and saturation 0
    chroma = maxc - minc
    ones = torch.ones_like(maxc)
    sat = chroma / torch.where(flat, ones, maxc)
    div = torch.where(flat, ones, chroma)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~is_r & ~is_g
    hue = is_r * (bc - gc) + is_g * (2.0 + rc - bc) + is_b * (4.0 + gc - rc)
    hue = torch.remainder(hue / 6.0 + 1.0, 1.0)
    return hue, sat, maxc


def _hsv_to_rgb(hue: Tensor, sat: Tensor, val: Tensor) -> Tensor:
    # The closed form of the six-sector table: channel n in (5, 3, 1) = (R, G, B) is
    # v - v s clip(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6 (one pass, no per-sector where).
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hue.dtype, device=hue.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * hue[:, None], 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0, 1)
    v = val[:, None]
    return (v - v * sat[:, None] * ramp).clamp(0, 1)


def color_jitter(
    x: Tensor,
    *,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """torchvision's ``RandomApply([ColorJitter(b, c, s, h)], p)``, every draw per image.

    Factors: brightness/contrast/saturation ``U(max(0, 1 - m), 1 + m)``, hue ``U(-h, h)``;
    the four adjustments in a random order per image; all of them skipped with probability
    ``1 - p``. A magnitude of 0 leaves that adjustment out, as torchvision does.

    Shape:
        x: (B, C, H, W) float in [0, 1] -> (B, C, H, W).
    """
    b = x.shape[0]
    u = torch.rand(5, b, device=x.device, generator=generator, dtype=torch.float64)
    apply = u[0] < p
    order = torch.rand(b, 4, device=x.device, generator=generator).argsort(1)
    factors = torch.stack(
        [
            _factor_range(brightness, u[1]),
            _factor_range(contrast, u[2]),
            _factor_range(saturation, u[3]),
            (2 * u[4] - 1) * hue,
        ],
        1,
    )
    enabled = (brightness > 0, contrast > 0, saturation > 0, hue > 0)
    return apply_color_jitter(x, factors, order, apply, enabled=enabled)


def apply_color_jitter(
    x: Tensor,
    factors: Tensor,
    order: Tensor,
    apply: Tensor,
    *,
    enabled: tuple[bool, bool, bool, bool] = (True, True, True, True),
) -> Tensor:
    """The deterministic part of :func:`color_jitter`: given factors, orders and coins.

    Op ``k`` (0 brightness, 1 contrast, 2 saturation, 3 hue) of image ``i`` is applied with
    ``factors[i, k]`` at the position where ``order[i]`` holds ``k``, for images with
    ``apply[i]``. The batch is never split: an op not chosen for an image at a position runs
    with factor 1, exactly the identity (``1 * x + 0 * y`` clipped, x in [0, 1]), or for the
    hue is masked out.

    Shape:
        x: (B, C, H, W); factors: (B, 4); order: (B, 4) permutations of 0..3; apply: (B,) bool
        -> (B, C, H, W).
    """
    ops = (adjust_brightness, adjust_contrast, adjust_saturation)
    one = torch.ones_like(factors[:, 0])
    for pos in range(4):
        for k, op in enumerate(ops):
            if enabled[k]:
                chosen = apply & (order[:, pos] == k)
                x = op(x, torch.where(chosen, factors[:, k], one))
        if enabled[3] and x.shape[1] == 3:
            chosen = apply & (order[:, pos] == 3)
            x = torch.where(chosen[:, None, None, None], adjust_hue(x, factors[:, 3]), x)
    return x


def _factor_range(magnitude: float, u: Tensor) -> Tensor:
    lo, hi = max(0.0, 1.0 - magnitude), 1.0 + magnitude
    return lo + (hi - lo) * u


def random_grayscale(x: Tensor, p: float, *, generator: torch.Generator | None = None) -> Tensor:
    """Replace each RGB image by its luma on all three channels with probability ``p``.

    Shape:
        x: (B, C, H, W) -> (B, C, H, W) (unchanged for C = 1).
    """
    chosen = _rand(x.shape[0], x, generator) < p
    if x.shape[1] == 1:
        return x
    return torch.where(chosen[:, None, None, None], rgb_to_grayscale(x).expand_as(x), x)


def _rand(n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, device=like.device, generator=generator, dtype=torch.float64)


def _check_images(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, 1 or 3, H, W) images, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"contrastive augmentation expects float images in [0, 1], got {x.dtype}")


__all__ = [
    "ContrastiveAugment",
    "ContrastiveAugmentConfig",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "apply_color_jitter",
    "color_jitter",
    "contrastive_augment",
    "crop_boxes_from_uniforms",
    "random_grayscale",
    "resized_crop",
    "resized_crop_boxes",
    "rgb_to_grayscale",
]
