"""Generated corruptions against the reference formulas of Hendrycks & Dietterich's
``make_cifar_c.py`` on fixed inputs: closed forms, loop oracles, colorsys for HSV, PIL and
SciPy where the reference calls them."""

from __future__ import annotations

import colorsys
import io
import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from afa.data.transforms import corruptions as C
from afa.data.transforms.corruptions import corrupt, corruption_names
from afa.errors import ConfigError


def smooth_images(n=4, c=3, size=32, seed=0) -> np.ndarray:
    """Natural-ish uint8 images: blurred noise, stretched over 20..235."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random((n, c, size, size)), sigma=(0, 0, 2, 2))
    lo, hi = x.min(), x.max()
    return (20 + 215 * (x - lo) / (hi - lo)).astype(np.uint8)


def as_float(u: np.ndarray) -> np.ndarray:
    return u.astype(np.float64) / 255.0


# --------------------------------------------------------------------------- the contract


def test_the_generated_set_is_the_benchmark_less_what_needs_missing_assets():
    rgb = corruption_names(3)
    assert rgb == [n for n in C.COMMON if n != "frost"]
    assert len(rgb) == 14
    assert corruption_names(3, extra=True)[-3:] == ["speckle_noise", "gaussian_blur", "saturate"]
    assert "saturate" not in corruption_names(1, extra=True)


@pytest.mark.parametrize("name", corruption_names(3, extra=True))
@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (3, 1, 8, 8)])
def test_every_corruption_is_uint8_in_shape_seeded_and_worse_at_severity_5(name, shape):
    n, c, size, _ = shape
    if name == "saturate" and c == 1:
        pytest.skip("saturate needs colour")
    x = smooth_images(n, c, size)
    a = corrupt(x, name, 3, np.random.default_rng(7))
    b = corrupt(x, name, 3, np.random.default_rng(7))
    assert a.dtype == np.uint8 and a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    if name == "elastic_transform":
        return  # the CIFAR constants trade a large affine (severity 1) for a fine elastic field
    dist = [
        np.abs(corrupt(x, name, s, np.random.default_rng(1)).astype(int) - x).mean() for s in (1, 5)
    ]
    assert dist[1] > dist[0], (name, dist)


@pytest.mark.parametrize("name", ["gaussian_noise", "motion_blur", "fog", "glass_blur", "snow"])
def test_random_corruptions_depend_on_the_seed(name):
    x = smooth_images(2)
    a = corrupt(x, name, 3, np.random.default_rng(0))
    b = corrupt(x, name, 3, np.random.default_rng(1))
    assert (a != b).any()


def test_bad_requests_are_config_errors_that_say_why():
    x = smooth_images(1)
    with pytest.raises(ConfigError, match="did you mean 'gaussian_noise'"):
        corrupt(x, "gausian_noise", 1, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="frost photographs"):
        corrupt(x, "frost", 1, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="needs RGB"):
        corrupt(smooth_images(1, 1, 8), "saturate", 1, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="1..5"):
        corrupt(x, "contrast", 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        corrupt(x.astype(np.float32), "contrast", 1, np.random.default_rng(0))


def test_conversion_back_truncates_like_the_reference():
    np.testing.assert_array_equal(
        C.to_uint8(np.array([-0.1, 0.0, 0.5, 254.9 / 255, 1.2])), [0, 0, 127, 254, 255]
    )


# --------------------------------------------------------------------------- noise


def test_gaussian_noise_is_x_plus_normal_with_the_cifar_scale():
    x = smooth_images(2)
    for severity, c in zip(range(1, 6), [0.04, 0.06, 0.08, 0.09, 0.10], strict=True):
        noise = np.random.default_rng(3).normal(size=(2, 32, 32, 3), scale=c)  # (N, H, W, C)
        want = np.clip(as_float(x) + noise.transpose(0, 3, 1, 2), 0, 1)
        got = corrupt(x, "gaussian_noise", severity, np.random.default_rng(3))
        np.testing.assert_array_equal(got, (want * 255).astype(np.uint8))


def test_gaussian_noise_has_the_stated_spread_on_grey():
    x = np.full((20, 3, 32, 32), 128, np.uint8)
    out = corrupt(x, "gaussian_noise", 5, np.random.default_rng(0)).astype(float)
    assert abs((out - 128).std() / 255 - 0.10) < 0.002


def test_shot_noise_is_poisson_photons_over_c():
    x = smooth_images(2)
    photons = np.random.default_rng(5).poisson(as_float(x).transpose(0, 2, 3, 1) * 100)
    want = np.clip(photons.transpose(0, 3, 1, 2) / 100, 0, 1)
    got = corrupt(x, "shot_noise", 3, np.random.default_rng(5))
    np.testing.assert_array_equal(got, (want * 255).astype(np.uint8))


def test_speckle_noise_is_multiplicative():
    x = smooth_images(2)
    f = as_float(x)
    noise = np.random.default_rng(2).normal(size=(2, 32, 32, 3), scale=0.2).transpose(0, 3, 1, 2)
    want = np.clip(f + f * noise, 0, 1)
    np.testing.assert_array_equal(
        corrupt(x, "speckle_noise", 5, np.random.default_rng(2)), (want * 255).astype(np.uint8)
    )
    black = np.zeros((1, 3, 8, 8), np.uint8)
    np.testing.assert_array_equal(corrupt(black, "speckle_noise", 5, np.random.default_rng(0)), 0)


def test_impulse_noise_flips_the_stated_share_to_black_or_white():
    x = np.full((10, 3, 32, 32), 100, np.uint8)
    out = corrupt(x, "impulse_noise", 5, np.random.default_rng(0))
    changed = out != 100
    assert abs(changed.mean() - 0.07) < 0.005
    assert set(np.unique(out[changed])) == {0, 255}
    assert abs((out[changed] == 255).mean() - 0.5) < 0.05


# --------------------------------------------------------------------------- blur


def delta_image(size=9) -> np.ndarray:
    x = np.zeros((1, 1, size, size))
    x[0, 0, size // 2, size // 2] = 1.0
    return x


def test_gaussian_blur_of_a_delta_is_the_truncated_gaussian():
    sigma = 0.4  # severity 1
    radius = int(4 * sigma + 0.5)  # scikit-image/SciPy truncate=4
    t = np.arange(-radius, radius + 1)
    g = np.exp(-(t**2) / (2 * sigma**2))
    g /= g.sum()
    out = C.gaussian_blur(delta_image(), 1, np.random.default_rng(0))[0, 0]
    np.testing.assert_allclose(
        out[4 - radius : 5 + radius, 4 - radius : 5 + radius], np.outer(g, g)
    )
    assert out.sum() == pytest.approx(1.0)


def test_defocus_kernel_of_the_smallest_disk_is_the_3x3_alias_gaussian():
    g = np.array([math.exp(-1 / (2 * 0.4**2)), 1.0, math.exp(-1 / (2 * 0.4**2))])
    g /= g.sum()
    np.testing.assert_allclose(C.disk_kernel(0.3, 0.4), np.outer(g, g))


def test_defocus_kernel_of_radius_1_is_the_blurred_plus_loop_oracle():
    disk = np.zeros((17, 17))
    for dy, dx in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]:
        disk[8 + dy, 8 + dx] = 0.2
    g = np.exp(-(np.arange(-1, 2) ** 2) / (2 * 0.2**2))
    g /= g.sum()
    want = np.zeros((17, 17))
    for i in range(1, 16):
        for j in range(1, 16):
            want[i, j] = sum(
                g[a + 1] * g[b + 1] * disk[i + a, j + b] for a in (-1, 0, 1) for b in (-1, 0, 1)
            )
    got = C.disk_kernel(1, 0.2)
    assert got.shape == (5, 5)
    np.testing.assert_allclose(got, want[6:11, 6:11])
    # The blur of a delta image is the kernel itself (it is symmetric).
    out = C.defocus_blur(delta_image(), 4, np.random.default_rng(0))[0, 0]
    np.testing.assert_allclose(out[2:7, 2:7], got)


def naive_glass_shuffle(img: np.ndarray, delta: int, offsets: np.ndarray) -> np.ndarray:
    """The reference's loop on one (C, H, W) image, its tuple assignment of views included."""
    img = img.copy()
    h, w = img.shape[1:]
    k = 0
    for row in range(h - delta, delta, -1):
        for col in range(w - delta, delta, -1):
            dx, dy = offsets[k]
            img[:, row, col], img[:, row + dy, col + dx] = (
                img[:, row + dy, col + dx],
                img[:, row, col],
            )
            k += 1
    return img


@pytest.mark.parametrize("size,delta", [(8, 1), (12, 2)])
def test_glass_shuffle_matches_the_reference_loop(size, delta):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 3, size, size), dtype=np.uint8)
    offsets = rng.integers(-delta, delta, size=((size - 2 * delta) ** 2, 3, 2))
    got = C.glass_shuffle(x.copy(), delta, offsets)
    for k in range(3):
        np.testing.assert_array_equal(got[k], naive_glass_shuffle(x[k], delta, offsets[:, k]))
        # every pixel is one of the input's (moved, never mixed)
        pixels = set(map(tuple, x[k].reshape(3, -1).T))
        assert set(map(tuple, got[k].reshape(3, -1).T)) <= pixels


def test_glass_shuffle_copies_the_neighbour_as_the_reference_does():
    x = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(1, 2, 4, 4)
    offsets = np.zeros((4, 1, 2), np.int64)
    offsets[0] = (-1, 0)  # first visit (3, 3) takes (3, 2); (3, 2) keeps its value
    got = C.glass_shuffle(x.copy(), 1, offsets)
    np.testing.assert_array_equal(got[0, :, 3, 3], x[0, :, 3, 2])
    np.testing.assert_array_equal(got[0, :, 3, 2], x[0, :, 3, 2])


def test_motion_blur_taps_follow_imagemagick():
    w, dy, dx = C.motion_blur_offsets(6, 2, 0.0)
    assert len(w) == 13
    want = np.exp(-(np.arange(13) ** 2) / 8)
    np.testing.assert_allclose(w, want / want.sum())
    np.testing.assert_array_equal(dy, 0)
    np.testing.assert_array_equal(dx, np.arange(13))
    _, dy, dx = C.motion_blur_offsets(2, 1, 90.0)
    np.testing.assert_array_equal(dy, np.arange(5))
    np.testing.assert_array_equal(dx, 0)
    _, dy, dx = C.motion_blur_offsets(2, 1, -45.0)
    s = math.sqrt(0.5)
    np.testing.assert_array_equal(dx, [math.ceil(i * s - 0.5) for i in range(5)])
    np.testing.assert_array_equal(dy, [math.ceil(-i * s - 0.5) for i in range(5)])


def test_motion_blur_image_is_the_clamped_tap_sum():
    rng = np.random.default_rng(0)
    x = rng.random((3, 2, 7, 9))
    angles = np.array([0.0, 30.0, -45.0])
    got = C.motion_blur_image(x, 3, 1.5, angles)
    for k, a in enumerate(angles):
        w, dy, dx = C.motion_blur_offsets(3, 1.5, a)
        want = np.zeros((2, 7, 9))
        for r in range(7):
            for c in range(9):
                for i in range(len(w)):
                    rr, cc = min(max(r + dy[i], 0), 6), min(max(c + dx[i], 0), 8)
                    want[:, r, c] += w[i] * x[k, :, rr, cc]
        np.testing.assert_allclose(got[k], want)


def reference_clipped_zoom(img: np.ndarray, factor: float) -> np.ndarray:
    """The reference on one (H, W, C) image, with SciPy's zoom."""
    h = img.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    img = ndimage.zoom(img[top : top + ch, top : top + ch], (factor, factor, 1), order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim : trim + h, trim : trim + h]


@pytest.mark.parametrize("size,factor", [(32, 1.06), (32, 1.25), (8, 1.13), (32, 2.25)])
def test_clipped_zoom_matches_scipy_zoom(size, factor):
    x = np.random.default_rng(0).random((2, 3, size, size))
    got = C.clipped_zoom(x, factor)
    for k in range(2):
        want = reference_clipped_zoom(x[k].transpose(1, 2, 0), factor).transpose(2, 0, 1)
        np.testing.assert_allclose(got[k], want, atol=1e-12)


def test_zoom_blur_is_the_mean_of_the_zooms_and_keeps_a_flat_image():
    x = smooth_images(1)
    f = as_float(x).astype(np.float32)
    factors = np.arange(1, 1.06, 0.01)
    want = (f + sum(C.clipped_zoom(f, float(z)) for z in factors)) / (len(factors) + 1)
    np.testing.assert_array_equal(
        corrupt(x, "zoom_blur", 1, np.random.default_rng(0)), C.to_uint8(want)
    )
    flat = np.full((1, 3, 32, 32), 77, np.uint8)
    assert (
        np.abs(corrupt(flat, "zoom_blur", 5, np.random.default_rng(0)).astype(int) - 77).max() <= 1
    )


# --------------------------------------------------------------------------- weather


def test_plasma_fractal_spans_0_to_1_per_image_and_is_seeded():
    a = C.plasma_fractal(3, 32, 2.0, np.random.default_rng(0))
    assert a.shape == (3, 32, 32)
    np.testing.assert_allclose(a.min(axis=(1, 2)), 0)
    np.testing.assert_allclose(a.max(axis=(1, 2)), 1)
    np.testing.assert_array_equal(a, C.plasma_fractal(3, 32, 2.0, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="power of two"):
        C.plasma_fractal(1, 24, 2.0, np.random.default_rng(0))


def test_fog_blend_formula_on_numbers():
    x = np.array([0.2, 0.6, 0.4, 0.0]).reshape(1, 1, 2, 2)
    fractal = np.array([0.0, 1.0, 0.5, 0.25]).reshape(1, 2, 2)
    got = C.fog_blend(x, fractal, 0.5)
    # max(x) = 0.6: (x + 0.5 F) * 0.6 / 1.1
    want = (np.array([0.2, 1.1, 0.65, 0.125]) * 0.6 / 1.1).reshape(1, 1, 2, 2)
    np.testing.assert_allclose(got, want)


def test_snow_only_brightens():
    for c in (3, 1):
        x = smooth_images(2, c, 32 if c == 3 else 8)
        out = corrupt(x, "snow", 4, np.random.default_rng(0)).astype(int)
        # float32 arithmetic, as the reference's, may truncate a value one step down
        assert (out >= x.astype(int) - 1).all() and out.mean() > x.mean() + 10


# --------------------------------------------------------------------------- colour


def hsv_oracle(x: np.ndarray, change) -> np.ndarray:
    """Per pixel through colorsys (the textbook HSV, as scikit-image's rgb2hsv/hsv2rgb)."""
    out = np.empty_like(x)
    for k in range(x.shape[0]):
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                h, s, v = colorsys.rgb_to_hsv(*x[k, :, i, j])
                out[k, :, i, j] = colorsys.hsv_to_rgb(*change(h, s, v))
    return out


def colour_images() -> np.ndarray:
    x = np.random.default_rng(0).random((2, 3, 6, 6))
    x[0, :, 0, 0] = 0.0  # black
    x[0, :, 0, 1] = 0.5  # grey
    x[1, :, 0, 0] = (1.0, 0.2, 0.2)
    return x


@pytest.mark.parametrize("severity", [1, 5])
def test_brightness_adds_to_the_hsv_value(severity):
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    x = colour_images()
    want = hsv_oracle(x, lambda h, s, v: (h, s, min(v + c, 1.0)))
    np.testing.assert_allclose(
        C.brightness(x, severity, np.random.default_rng(0)), want, atol=1e-12
    )
    grey = np.random.default_rng(1).random((1, 1, 4, 4))
    np.testing.assert_allclose(C.brightness(grey, severity, None), np.minimum(grey + c, 1))


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_saturate_scales_the_hsv_saturation(severity):
    c0, c1 = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    x = colour_images()
    want = hsv_oracle(x, lambda h, s, v: (h, min(max(s * c0 + c1, 0.0), 1.0), v))
    np.testing.assert_allclose(C.saturate(x, severity, None), want, atol=1e-12)


def test_contrast_pulls_towards_the_channel_mean():
    x = np.array([0.0, 0.2, 0.4, 0.6]).reshape(1, 1, 2, 2)
    # mean 0.3, severity 1 keeps 3/4 of the distance
    np.testing.assert_allclose(
        C.contrast(x, 1, None), np.array([0.075, 0.225, 0.375, 0.525]).reshape(1, 1, 2, 2)
    )
    rgb = smooth_images(1)
    out = C.contrast(as_float(rgb), 5, None)
    np.testing.assert_allclose(out.mean(axis=(2, 3)), as_float(rgb).mean(axis=(2, 3)))


# --------------------------------------------------------------------------- digital


def test_pixelate_and_jpeg_are_pil_with_the_cifar_settings():
    x = smooth_images(2)
    for k in range(2):
        img = Image.fromarray(x[k].transpose(1, 2, 0))
        small = img.resize((int(32 * 0.65), int(32 * 0.65)), Image.BOX).resize((32, 32), Image.BOX)
        got = corrupt(x, "pixelate", 5, None)[k].transpose(1, 2, 0)
        np.testing.assert_array_equal(got, np.asarray(small))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80)
        got = corrupt(x, "jpeg_compression", 1, None)[k].transpose(1, 2, 0)
        np.testing.assert_array_equal(got, np.asarray(Image.open(buf)))


def test_grey_images_stay_grey_through_pil():
    x = smooth_images(2, 1, 8)
    for name in ("pixelate", "jpeg_compression"):
        assert corrupt(x, name, 5, None).shape == (2, 1, 8, 8)


class FixedDraws:
    """Stands in for a Generator: the affine draws given, zeros for the displacement noise."""

    def __init__(self, shift):
        self.shift = np.asarray(shift, float)

    def uniform(self, low, high, size):
        return np.broadcast_to(self.shift, size).copy() if size[-2:] == (3, 2) else np.zeros(size)


def test_affine_from_points_maps_the_points():
    src = np.array([[1.0, 2.0], [5.0, 1.0], [3.0, 7.0]])
    dst = src @ np.array([[0.9, 0.2], [-0.1, 1.1]]).T + [0.5, -1.5]
    m = C.affine_from_points(src, dst)
    np.testing.assert_allclose(np.c_[src, np.ones(3)] @ m.T, dst)


def test_elastic_affine_part_moves_content_the_way_warpaffine_does():
    # All three points moved one pixel right: the warp is a translation by +1 in x, so the
    # output at column j shows the input at column j - 1 (severity 1 has no displacement).
    x = np.random.default_rng(0).random((1, 3, 10, 10))
    out = C.elastic_transform(x, 1, FixedDraws([1.0, 0.0]))
    np.testing.assert_allclose(out[..., 1:], x.astype(np.float32)[..., :-1], atol=1e-6)
    down = C.elastic_transform(x, 1, FixedDraws([0.0, 2.0]))
    np.testing.assert_allclose(down[:, :, 2:], x.astype(np.float32)[:, :, :-2], atol=1e-6)


def test_elastic_affine_part_samples_through_the_inverse_map_in_x_y_order():
    # A shear x' = x + 0.2 y: the output at (row r, column c) is the input at column c - 0.2 r
    # of the same row (linear interpolation), away from the mirrored border.
    x = np.random.default_rng(1).random((1, 1, 12, 12))
    center, side = np.array([6.0, 6.0]), 4
    pts1 = np.stack([center + side, [center[0] + side, center[1] - side], center - side])
    shear = np.stack([0.2 * pts1[:, 1], np.zeros(3)], axis=1)
    out = C.elastic_transform(x, 1, FixedDraws(shear))[0, 0]
    src = x.astype(np.float32).astype(np.float64)[0, 0]
    for r in range(12):
        for c in range(12):
            at = c - 0.2 * r
            if 0 <= at <= 11:
                assert out[r, c] == pytest.approx(np.interp(at, np.arange(12), src[r]), abs=1e-9)


def test_motion_blur_reads_the_blur_back_truncated_to_8_bits():
    x = smooth_images(3)
    got = corrupt(x, "motion_blur", 2, np.random.default_rng(4))
    angles = np.random.default_rng(4).uniform(-45, 45, size=3)
    blurred = C.motion_blur_image(as_float(x), 6, 1.5, angles)
    np.testing.assert_array_equal(
        got, np.floor(np.clip(blurred, 0, 1) * 255 + 1e-6).astype(np.uint8)
    )
