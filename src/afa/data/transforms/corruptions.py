"""Common corruptions of Hendrycks & Dietterich (ICLR 2019), generated on the fly for any dataset.

CIFAR-10-C and CIFAR-100-C ("Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", arXiv 1903.12261) apply 15 corruptions (plus 4 held-out ones) at 5 severities
to the test images. When the official files are at hand, read those (``afa.data``'s
``cifar10-c`` dataset); this module re-creates the corruptions for datasets that have no such
files (digits, CIFAR-10.1, an npz or image folder), so "corruption accuracy" is defined for
every run.

Why our own code: the package ``imagecorruptions`` (and its 2026 fork
``imagecorruptions-imaug``) implements the ImageNet-C constants, not CIFAR's; refuses images
under 32x32 (digits are 8x8); draws from NumPy's global RNG; works one image at a time; and
pulls in OpenCV and scikit-image (the 2020 release no longer imports under NumPy 2). Here each
corruption is a batched NumPy/SciPy function of uint8 ``(N, C, H, W)`` images with the severity
constants of Hendrycks' ``make_cifar_c.py`` and a caller's ``numpy.random.Generator``, so a
result is a pure function of (images, name, severity, seed).

The constants are CIFAR's in pixels whatever the image size: on 8x8 digits a blur of radius 1
covers a quarter of the image where on CIFAR it covers 1/16; recorded as such, not rescaled.

Not generated (listed in :data:`NOT_GENERATED` with the reason): ``frost`` (needs Hendrycks'
frost photographs, which ``afa`` does not ship) and ``spatter`` (OpenCV's Canny edges and
distance transform). ``saturate`` needs colour and is skipped on grey images.

Checked image by image against ``make_cifar_c.py`` (ported to scikit-image 0.26, OpenCV 5.0
and ImageMagick 6.9 through Wand; 20 CIFAR-sized images, every severity): ``gaussian_blur``,
``contrast``, ``brightness``, ``saturate``, ``pixelate``, ``jpeg_compression`` and, fed the
same legacy ``RandomState`` stream, ``gaussian_noise``, ``shot_noise``, ``speckle_noise``,
``fog`` and ``glass_blur`` are identical; ``defocus_blur``, ``zoom_blur``, ``snow``,
``elastic_transform`` and ``motion_blur`` differ by at most 1/255 in under 0.3% of the values
(float rounding before the truncation to uint8). ``motion_blur`` and the
streaks of ``snow`` re-implement ImageMagick's ``MotionBlurImage`` kernel (edge pixels
repeated), ``elastic_transform``'s affine warp uses SciPy's bilinear interpolation where
OpenCV uses 5-bit fixed point, and grey ``jpeg_compression`` encodes one channel. ``impulse_noise``
draws scikit-image's salt-and-pepper distribution from our generator (scikit-image seeds its
own).
``glass_blur`` keeps a slip of the reference that shaped the published files: its pixel "swap"
copies the neighbour (see :func:`glass_shuffle`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from afa._registry import unknown_name_message
from afa.data.readers.shift import CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES
from afa.errors import ConfigError

# One list of names for the official files and the generated ones: the 15 of the benchmark in
# the paper's order (noise, blur, weather, digital), then the 4 held-out ones.
COMMON = CORRUPTIONS
EXTRA = EXTRA_CORRUPTIONS

NOT_GENERATED = {
    "frost": "needs Hendrycks' frost photographs, which afa does not ship",
    "spatter": "needs OpenCV's Canny edges and distance transform; not re-implemented",
}

# Numbers that enter every formula as floats, named once.
_GAUSSIAN_TRUNCATE = 4.0  # scikit-image's gaussian() default
_GRAY = (0.299, 0.587, 0.114)  # OpenCV's RGB2GRAY weights (snow)

CorruptFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
"""``fn(x, severity, rng)``: float64 ``(N, C, H, W)`` in [0, 1] -> float64 of the same shape."""


@dataclass(frozen=True)
class _Corruption:
    fn: CorruptFn
    color_only: bool = False


_CORRUPTIONS: dict[str, _Corruption] = {}


def _register(name: str, *, color_only: bool = False) -> Callable[[CorruptFn], CorruptFn]:
    def deco(fn: CorruptFn) -> CorruptFn:
        _CORRUPTIONS[name] = _Corruption(fn, color_only)
        return fn

    return deco


def corruption_names(channels: int = 3, *, extra: bool = False) -> list[str]:
    """The corruptions :func:`corrupt` generates for images with ``channels`` channels.

    Args:
        channels: 1 (grey) or 3 (RGB); colour-only corruptions are left out for grey images.
        extra: also the held-out corruptions (``speckle_noise``, ``gaussian_blur``,
            ``saturate``).

    Returns:
        Names in the benchmark's order, :data:`NOT_GENERATED` left out.
    """
    names = list(COMMON) + (list(EXTRA) if extra else [])
    return [
        n for n in names if n in _CORRUPTIONS and not (_CORRUPTIONS[n].color_only and channels != 3)
    ]


def check_corruption(name: str, channels: int) -> None:
    """Raise a ConfigError unless :func:`corrupt` can generate ``name`` for these images."""
    if name in NOT_GENERATED:
        raise ConfigError(f"corruption {name!r} is not generated: {NOT_GENERATED[name]}")
    if name not in _CORRUPTIONS:
        raise ConfigError(unknown_name_message("corruption", name, _CORRUPTIONS))
    if _CORRUPTIONS[name].color_only and channels != 3:
        raise ConfigError(f"corruption {name!r} needs RGB images, got {channels} channel(s)")


def corrupt(images: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` to a batch of images.

    Each image gets its own random draws (noise, angles, fractals) from ``rng``; the same
    generator state gives the same output. Values are converted back as the reference does,
    ``np.uint8(255 * clip(x, 0, 1))`` (truncation, not rounding).

    Args:
        images: uint8 images.
        name: one of :func:`corruption_names`.
        severity: 1 (mildest) to 5.
        rng: the source of every random draw.

    Returns:
        The corrupted uint8 images.

    Shape:
        images: (N, C, H, W) with C in {1, 3}; the result has the same shape.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(
            f"corrupt: expected uint8 (N, C, H, W) with C in (1, 3), "
            f"got {images.dtype} {images.shape}"
        )
    check_corruption(name, images.shape[1])
    if severity not in SEVERITIES:
        raise ConfigError(f"corruption severity: expected 1..5, got {severity!r}")
    x = images.astype(np.float64) / 255.0
    out = _CORRUPTIONS[name].fn(x, severity, rng)
    return to_uint8(out)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """``np.uint8(255 * clip(x, 0, 1))``, the reference's conversion (it truncates)."""
    return (np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _uint8_exact(x: np.ndarray) -> np.ndarray:
    """Back to the uint8 values ``x`` was made from (x = u / 255), for the PIL corruptions."""
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------- noise

# Noise is drawn image by image in (H, W, C) order, as the reference draws it for one image,
# so the same random stream gives the reference's noise.


def _hwc(x: np.ndarray) -> tuple[int, ...]:
    n, c, h, w = x.shape
    return (n, h, w, c)


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _channels_first(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 3, 1, 2)


@_register("gaussian_noise")
def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Additive N(0, c^2) per pixel and channel."""
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return np.clip(x + _channels_first(rng.normal(size=_hwc(x), scale=c)), 0, 1)


@_register("shot_noise")
def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson photon noise: ``Poisson(c x) / c`` (c = photons at full intensity)."""
    c = [500, 250, 100, 75, 50][severity - 1]
    return np.clip(_channels_first(rng.poisson(_channels_last(x) * c)) / c, 0, 1)


@_register("impulse_noise")
def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: each value flips with probability c, to 1 or 0 with equal odds.

    As scikit-image's ``random_noise(mode="s&p")``: per value (channels independently).
    """
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    flipped = rng.random(x.shape) <= c
    salted = rng.random(x.shape) <= 0.5
    out = x.copy()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return out


@_register("speckle_noise")
def speckle_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative noise ``x + x N(0, c^2)``."""
    c = [0.06, 0.1, 0.12, 0.16, 0.2][severity - 1]
    return np.clip(x + x * _channels_first(rng.normal(size=_hwc(x), scale=c)), 0, 1)


# --------------------------------------------------------------------------- blur


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's ``gaussian(x, sigma, multichannel=True)``: each channel, edges repeated."""
    return ndimage.gaussian_filter(
        x, sigma=(0, 0, sigma, sigma), mode="nearest", truncate=_GAUSSIAN_TRUNCATE
    )


@_register("gaussian_blur")
def gaussian_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.4, 0.6, 0.7, 0.8, 1.0][severity - 1]
    return np.clip(_gaussian(x, c), 0, 1)


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The defocus kernel: a normalised disk, anti-aliased by a Gaussian, zero rows trimmed.

    The reference draws the disk on a 17x17 grid (radius <= 8) and blurs it with OpenCV's 3x3
    Gaussian (weights ``exp(-i^2 / (2 alias_blur^2))``, i in -1..1, normalised; edges mirrored
    without repeating the border); the all-zero border is trimmed here, which changes nothing.
    """
    half = 8 if radius <= 8 else int(radius)
    lin = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(lin, lin)
    # float32 as the reference's kernel (it decides the last bit of a few outputs).
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    disk /= disk.sum()
    size = 3 if radius <= 8 else 5
    t = np.arange(size) - size // 2
    g = np.exp(-(t**2) / (2 * alias_blur**2))
    g /= g.sum()
    k = ndimage.correlate1d(disk, g, axis=0, mode="mirror")
    k = ndimage.correlate1d(k, g, axis=1, mode="mirror").astype(np.float64)
    rows = np.flatnonzero(np.abs(k).sum(axis=1) > 0)
    cols = np.flatnonzero(np.abs(k).sum(axis=0) > 0)
    return k[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


@_register("defocus_blur")
def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Convolution with :func:`disk_kernel`, borders mirrored as OpenCV's ``filter2D``."""
    radius, alias = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    k = disk_kernel(radius, alias)
    return np.clip(ndimage.correlate(x, k[None, None], mode="mirror"), 0, 1)


def glass_shuffle(x: np.ndarray, delta: int, offsets: np.ndarray) -> np.ndarray:
    """The pixel moves of glass blur: visit pixels bottom-right to top-left and give each the
    value of the neighbour ``offsets`` away, in order (a value may travel several steps).

    The reference means to swap the two pixels, but its tuple assignment of two NumPy views,
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``, writes the neighbour into ``x[h, w]`` first
    and then copies that same value back: the neighbour is copied, not swapped. The published
    CIFAR-10-C was made this way, so this is what is reproduced.

    Args:
        x: images (modified in place and returned).
        delta: the largest offset; pixels within ``delta`` of the border are not visited.
        offsets: ``(dx, dy)`` per visit and image, in visiting order (the reference's order
            of the two draws).

    Shape:
        x: (N, C, H, W); offsets: ((H - 2 delta) (W - 2 delta), N, 2).
    """
    n, _, h, w = x.shape
    images = np.arange(n)
    k = 0
    for row in range(h - delta, delta, -1):
        for col in range(w - delta, delta, -1):
            dx, dy = offsets[k, :, 0], offsets[k, :, 1]
            x[images, :, row, col] = x[images, :, row + dy, col + dx]
            k += 1
    return x


@_register("glass_blur")
def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blur, move pixels from random neighbours (``iterations`` passes), blur again.

    The reference draws each offset with ``randint(-delta, delta)``, whose upper end is
    excluded: offsets lie in [-delta, delta - 1], and so do ours.
    """
    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][
        severity - 1
    ]
    n, _, h, w = x.shape
    # The reference truncates to uint8 between the blurs.
    y = (_gaussian(x, sigma) * 255).astype(np.uint8)
    visits = max(h - 2 * delta, 0) * max(w - 2 * delta, 0)
    for _ in range(iterations):
        offsets = rng.integers(-delta, delta, size=(visits, n, 2))
        y = glass_shuffle(y, delta, offsets)
    return np.clip(_gaussian(y / 255.0, sigma), 0, 1)


def motion_blur_offsets(radius: float, sigma: float, angle: float) -> tuple[np.ndarray, ...]:
    """Weights and pixel offsets of ImageMagick's ``MotionBlurImage`` kernel.

    ``width = 2 ceil(radius) + 1`` taps with one-sided Gaussian weights
    ``exp(-i^2 / (2 sigma^2))`` (normalised); tap i samples ``i`` pixels along ``angle``
    (degrees, 0 = to the right, 90 = down), rounded as ImageMagick does,
    ``ceil(i sin(angle) - 0.5)`` rows and ``ceil(i cos(angle) - 0.5)`` columns away.

    Returns:
        ``(weights, dy, dx)``, each of length ``width``.
    """
    width = 2 * math.ceil(radius) + 1
    i = np.arange(width)
    weights = np.exp(-(i**2) / (2 * sigma**2))
    weights /= weights.sum()
    a = np.deg2rad(angle)
    dy = np.ceil(i * np.sin(a) - 0.5).astype(np.int64)
    dx = np.ceil(i * np.cos(a) - 0.5).astype(np.int64)
    return weights, dy, dx


def motion_blur_image(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """Blur each image along its own angle: ``out[y, x] = sum_i w_i in[y + dy_i, x + dx_i]``
    with coordinates clamped to the image (edge pixels repeated).

    Shape:
        x: (N, C, H, W); angles: (N,) degrees.
    """
    n, _, h, w = x.shape
    out = np.zeros_like(x)
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    images = np.arange(n)[:, None, None]
    taps = [motion_blur_offsets(radius, sigma, a) for a in angles]
    weights = np.stack([t[0] for t in taps])  # (N, width)
    dys = np.stack([t[1] for t in taps])
    dxs = np.stack([t[2] for t in taps])
    for i in range(weights.shape[1]):
        r = np.clip(rows + dys[:, i, None, None], 0, h - 1)
        c = np.clip(cols + dxs[:, i, None, None], 0, w - 1)
        # (N, H, W, C) -> back to channels first
        sample = x.transpose(0, 2, 3, 1)[images, r, c].transpose(0, 3, 1, 2)
        out += weights[:, i, None, None, None] * sample
    return out


@_register("motion_blur")
def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blur along a random direction, angle uniform in [-45, 45) degrees per image."""
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    angles = rng.uniform(-45, 45, size=len(x))
    return _imagemagick_8bit(motion_blur_image(x, radius, sigma, angles))


def _imagemagick_8bit(x: np.ndarray) -> np.ndarray:
    """The reference reads ImageMagick's blur back from an 8-bit PNG, which truncates (checked
    against ImageMagick 6.9: a value that is an integer up to float error counts as one)."""
    return np.floor(np.clip(x, 0, 1) * 255 + 1e-6) / 255.0


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom the centre of each image by ``factor`` (bilinear) and crop back to the image size.

    As the reference: crop the centre ``ceil(H / factor)`` pixels, zoom with SciPy's
    ``zoom(order=1)``, trim the excess evenly.

    Shape:
        x: (N, C, H, W) (or (N, H, W)); the result has the same shape.
    """
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    # SciPy's zoom as two small matrix products (it is separable): ndimage.zoom over a 4-D
    # batch interpolates the batch axes too and is about 50x slower.
    rows, cols = _zoom_matrix(ch, factor).astype(x.dtype), _zoom_matrix(cw, factor).astype(x.dtype)
    zoomed = rows @ crop @ cols.T
    th, tw = (zoomed.shape[-2] - h) // 2, (zoomed.shape[-1] - w) // 2
    return zoomed[..., th : th + h, tw : tw + w]


def _zoom_matrix(n: int, factor: float) -> np.ndarray:
    """Linear interpolation from ``n`` samples to ``round(n factor)`` as ``ndimage.zoom``
    (order 1, ``grid_mode=False``): output i samples input ``i (n - 1) / (m - 1)``.

    Shape:
        returns (round(n factor), n).
    """
    m = int(round(n * factor))
    pos = np.arange(m) * ((n - 1) / (m - 1)) if m > 1 else np.zeros(1)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, n - 1)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    a = np.zeros((m, n))
    np.add.at(a, (np.arange(m), lo), 1 - frac)
    np.add.at(a, (np.arange(m), hi), frac)
    return a


@_register("zoom_blur")
def zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """The mean of the image and its centre zoomed by each factor of the severity."""
    step_max = [1.06, 1.11, 1.16, 1.21, 1.26][severity - 1]
    factors = np.arange(1, step_max, 0.01)
    x32 = x.astype(np.float32)  # the reference's dtype here
    out = np.zeros_like(x32)
    for f in factors:
        out += clipped_zoom(x32, float(f))
    return np.clip((x32 + out) / (len(factors) + 1), 0, 1).astype(np.float64)


# --------------------------------------------------------------------------- weather


def plasma_fractal(
    n: int, mapsize: int, wibbledecay: float, rng: np.random.Generator
) -> np.ndarray:
    """Diamond-square height maps in [0, 1] (min 0, max 1 each), one per image.

    The reference's generator (after FLHerne/mapgen's diamondsquare.py), vectorised over
    images: the corner starts at 0; each pass fills square centres, then diamond centres,
    with the mean of their four neighbours (wrapping around) plus uniform noise whose range
    shrinks by ``wibbledecay`` per pass.

    Shape:
        returns (n, mapsize, mapsize); ``mapsize`` a power of two.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"plasma_fractal: mapsize must be a power of two, got {mapsize}")
    m = np.zeros((n, mapsize, mapsize))
    step = mapsize
    wibble = 100.0

    def wibbled_mean(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corners = m[:, 0:mapsize:step, 0:mapsize:step]
        sq = corners + np.roll(corners, -1, axis=1)
        sq = sq + np.roll(sq, -1, axis=2)
        m[:, half:mapsize:step, half:mapsize:step] = wibbled_mean(sq)
        dr = m[:, half:mapsize:step, half:mapsize:step]
        ul = m[:, 0:mapsize:step, 0:mapsize:step]
        lt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
        m[:, 0:mapsize:step, half:mapsize:step] = wibbled_mean(lt)
        tt = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
        m[:, half:mapsize:step, 0:mapsize:step] = wibbled_mean(tt)
        step //= 2
        wibble /= wibbledecay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def _mapsize(h: int, w: int) -> int:
    return 1 << (max(h, w) - 1).bit_length()


def fog_blend(x: np.ndarray, fractal: np.ndarray, strength: float) -> np.ndarray:
    """``(x + s F) max(x) / (max(x) + s)``, with ``max`` per image over pixels and channels.

    Shape:
        x: (N, C, H, W); fractal: (N, H, W).
    """
    top = x.max(axis=(1, 2, 3), keepdims=True)
    return np.clip((x + strength * fractal[:, None]) * top / (top + strength), 0, 1)


@_register("fog")
def fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    strength, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    n, _, h, w = x.shape
    fractal = plasma_fractal(n, _mapsize(h, w), decay, rng)[:, :h, :w]
    return fog_blend(x, fractal, strength)


def _gray(x: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) luminance; a grey image is its own."""
    if x.shape[1] == 1:
        return x
    return np.tensordot(np.asarray(_GRAY), x, axes=([0], [1]))[:, None]


@_register("snow")
def snow(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Flakes (thresholded zoomed noise, motion-blurred downwards) over a brightened image."""
    loc, scale, zoom, thresh, radius, sigma, keep = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ][severity - 1]
    n, _, h, w = x.shape
    x = x.astype(np.float32).astype(np.float64)  # the reference works in float32 here
    layer = rng.normal(size=(n, 1, h, w), loc=loc, scale=scale)
    layer = clipped_zoom(layer, zoom)
    layer[layer < thresh] = 0
    # Through an 8-bit grey PNG before and after ImageMagick's blur, as the reference.
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8) / 255.0
    angles = rng.uniform(-135, -45, size=len(x))
    layer = _imagemagick_8bit(motion_blur_image(layer, radius, sigma, angles))
    x = keep * x + (1 - keep) * np.maximum(x, _gray(x) * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2, axes=(2, 3)), 0, 1)


# --------------------------------------------------------------------------- colour


def rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    """HSV of RGB images in [0, 1], as scikit-image's ``rgb2hsv`` computes it (hue in [0, 1),
    0 for grey pixels; saturation 0 where the value is 0), so the corruptions that go through
    HSV round the same way as the reference.

    Shape:
        x: (N, 3, H, W); returns (N, 3, H, W) holding H, S, V.
    """
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = x.max(axis=1)
    delta = v - x.min(axis=1)
    grey = delta == 0
    safe = np.where(grey, 1.0, delta)
    s = np.divide(delta, v, out=np.zeros_like(v), where=v > 0)
    h = np.zeros_like(v)
    # Later channels win ties, as in scikit-image (blue, then green, then red assigned last).
    h = np.where(r == v, (g - b) / safe, h)
    h = np.where(g == v, 2.0 + (b - r) / safe, h)
    h = np.where(b == v, 4.0 + (r - g) / safe, h)
    h = np.where(grey, 0.0, (h / 6.0) % 1.0)
    return np.stack([h, s, v], axis=1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """The inverse of :func:`rgb_to_hsv`, as scikit-image's ``hsv2rgb``.

    Shape:
        hsv: (N, 3, H, W); returns (N, 3, H, W) RGB.
    """
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    sector = np.floor(h * 6)
    f = h * 6 - sector
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sector = sector.astype(np.int64) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.stack([np.choose(sector, [c[k] for c in choices]) for k in range(3)], axis=1)


@_register("brightness")
def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Add c to the HSV value, keeping hue and saturation; a grey image gets ``x + c``."""
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    if x.shape[1] == 1:
        return np.clip(x + c, 0, 1)
    hsv = rgb_to_hsv(x)
    hsv[:, 2] = np.clip(hsv[:, 2] + c, 0, 1)
    return np.clip(hsv_to_rgb(hsv), 0, 1)


@_register("saturate", color_only=True)
def saturate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Scale the HSV saturation: ``S' = clip(c0 S + c1, 0, 1)``, hue and value kept (a grey
    pixel has hue 0, so ``c1 > 0`` tints it red, as in the reference)."""
    c0, c1 = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    hsv = rgb_to_hsv(x)
    hsv[:, 1] = np.clip(hsv[:, 1] * c0 + c1, 0, 1)
    return np.clip(hsv_to_rgb(hsv), 0, 1)


@_register("contrast")
def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Pull every pixel towards its channel's image mean: ``(x - m) c + m``."""
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    m = x.mean(axis=(2, 3), keepdims=True)
    return np.clip((x - m) * c + m, 0, 1)


# --------------------------------------------------------------------------- digital


def _pil_each(x: np.ndarray, fn: Callable[..., object]) -> np.ndarray:
    """Apply a PIL ``Image -> Image`` function to each uint8 image of ``x`` (float in [0, 1])."""
    from PIL import Image

    u = _uint8_exact(x)
    out = np.empty_like(u)
    for k in range(u.shape[0]):
        img = u[k, 0] if u.shape[1] == 1 else u[k].transpose(1, 2, 0)
        res = np.asarray(fn(Image.fromarray(img)))
        out[k] = res[None] if u.shape[1] == 1 else res.transpose(2, 0, 1)
    return out / 255.0


@_register("pixelate")
def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Box-downsample to a fraction c of the size, box-upsample back (PIL)."""
    from PIL import Image

    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[2:]
    small = (max(int(w * c), 1), max(int(h * c), 1))
    box = Image.Resampling.BOX
    return _pil_each(x, lambda im: im.resize(small, box).resize((w, h), box))


@_register("jpeg_compression")
def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """JPEG encode and decode at quality c (PIL's libjpeg)."""
    from PIL import Image

    quality = [80, 65, 58, 50, 40][severity - 1]

    def jpeg(im: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        buf.seek(0)
        return Image.open(buf).convert(im.mode)

    return _pil_each(x, jpeg)


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 affine map taking three (x, y) points ``src`` onto ``dst`` (OpenCV's
    ``getAffineTransform``), for each of a batch of ``dst``.

    Shape:
        src: (3, 2); dst: (..., 3, 2); returns (..., 2, 3).
    """
    a = np.concatenate([src, np.ones((3, 1))], axis=1)
    return np.swapaxes(np.linalg.solve(a, dst), -1, -2)


@_register("elastic_transform")
def elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A random affine warp, then a smooth random displacement field (Simard et al. 2003).

    The affine moves three points around the centre by up to ``c2`` pixels (each image its
    own); the displacement is uniform noise in [-1, 1] blurred by ``c1`` (edges reflected,
    truncated at 3 sigma) and scaled by ``c0``; both resample bilinearly with reflected edges.
    With ``IMSIZE = 32`` as in the reference, whatever the image size.
    """
    size = 32
    alpha, sigma, shift = [
        (size * 0, size * 0, size * 0.08),
        (size * 0.05, size * 0.2, size * 0.07),
        (size * 0.08, size * 0.06, size * 0.06),
        (size * 0.1, size * 0.04, size * 0.05),
        (size * 0.1, size * 0.03, size * 0.03),
    ][severity - 1]
    n, ch, h, w = x.shape
    x = x.astype(np.float32).astype(np.float64).reshape(n * ch, h, w)
    center = np.array([w // 2, h // 2], dtype=np.float64)  # (x, y)
    side = min(h, w) // 3
    pts1 = np.stack([center + side, [center[0] + side, center[1] - side], center - side])
    pts2 = pts1 + rng.uniform(-shift, shift, size=(n, *pts1.shape))
    m = affine_from_points(pts1, pts2)  # (n, 2, 3): src (x, y) -> dst (x, y)
    full = np.concatenate([m, np.broadcast_to([[[0.0, 0.0, 1.0]]], (n, 1, 3))], axis=1)
    inv = np.linalg.inv(full)[:, :2]  # dst -> src: warpAffine samples the source there
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    src_x = (
        inv[:, 0, 0, None, None] * cols + inv[:, 0, 1, None, None] * rows + inv[:, 0, 2, None, None]
    )
    src_y = (
        inv[:, 1, 0, None, None] * cols + inv[:, 1, 1, None, None] * rows + inv[:, 1, 2, None, None]
    )
    # Every (image, channel) plane at once: the plane index is an exact integer coordinate, so
    # interpolation never mixes planes.
    plane = np.broadcast_to(np.arange(n * ch, dtype=np.float64)[:, None, None], (n * ch, h, w))
    per_plane = lambda a: np.repeat(a, ch, axis=0)  # noqa: E731
    warped = ndimage.map_coordinates(
        x, [plane, per_plane(src_y), per_plane(src_x)], order=1, mode="mirror"
    )
    dx, dy = (
        (
            ndimage.gaussian_filter(
                rng.uniform(-1, 1, size=(n, h, w)), (0, sigma, sigma), mode="reflect", truncate=3
            )
            * alpha
        ).astype(np.float32)
        for _ in range(2)
    )
    out = ndimage.map_coordinates(
        warped, [plane, per_plane(rows + dy), per_plane(cols + dx)], order=1, mode="reflect"
    ).reshape(n, ch, h, w)
    return np.clip(out, 0, 1)
