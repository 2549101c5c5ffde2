"""Contrastive augmentation against references: a loop of torchvision's crop-box algorithm,
F.interpolate per image, PIL's ImageEnhance, colorsys, and a per-image loop of the jitter."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from afa.data import DatasetInfo, make_augment
from afa.data.transforms.contrastive_augment import (
    ContrastiveAugment,
    ContrastiveAugmentConfig,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_color_jitter,
    color_jitter,
    contrastive_augment,
    crop_boxes_from_uniforms,
    random_grayscale,
    resized_crop,
    resized_crop_boxes,
)
from afa.errors import ConfigError

# --- crop boxes: torchvision's RandomResizedCrop.get_params, one image at a time -------------


def boxes_loop(ua, ur, ut, ul, h, w, scale, ratio):
    out = []
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for i in range(ua.shape[0]):
        for a in range(ua.shape[1]):
            target = h * w * (scale[0] + (scale[1] - scale[0]) * float(ua[i, a]))
            aspect = math.exp(lo + (hi - lo) * float(ur[i, a]))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(float(ut[i, a]) * (h - ch + 1))
                left = int(float(ul[i, a]) * (w - cw + 1))
                out.append((top, left, ch, cw))
                break
        else:
            if w / h < ratio[0]:
                cw, ch = w, int(round(w / ratio[0]))
            elif w / h > ratio[1]:
                ch, cw = h, int(round(h * ratio[1]))
            else:
                cw, ch = w, h
            out.append(((h - ch) // 2, (w - cw) // 2, ch, cw))
    return out


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    smin=st.floats(0.01, 1.0),
    r0=st.floats(0.2, 1.0),
    r1=st.floats(1.0, 5.0),
    attempts=st.integers(1, 10),
    seed=st.integers(0, 2**16),
)
def test_crop_boxes_match_the_loop(h, w, smin, r0, r1, attempts, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(4, 16, attempts, generator=g, dtype=torch.float64)
    got = crop_boxes_from_uniforms(*u, h, w, (smin, 1.0), (r0, r1))
    assert got.tolist() == [list(b) for b in boxes_loop(*u, h, w, (smin, 1.0), (r0, r1))]
    top, left, ch, cw = got.T
    assert (top >= 0).all() and (left >= 0).all() and (ch >= 1).all() and (cw >= 1).all()
    assert (top + ch <= h).all() and (left + cw <= w).all()


def test_crop_boxes_fallback_and_spread():
    # No draw fits (a 6x20 image cannot hold the whole area at ratio 5): the centre crop of
    # the nearest allowed ratio, 4: 5 rows x 20 columns.
    u = torch.full((4, 3, 10), 0.999, dtype=torch.float64)
    assert (
        crop_boxes_from_uniforms(*u, 6, 20, (1.0, 1.0), (4.0, 5.0)).tolist() == [[0, 0, 5, 20]] * 3
    )
    boxes = resized_crop_boxes(256, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3))
    areas = (boxes[:, 2] * boxes[:, 3]).double() / 1024
    assert areas.min() >= 0.06 and areas.max() <= 1.0 and areas.std() > 0.15
    assert len(set(map(tuple, boxes.tolist()))) > 200  # per image, not one box per batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resized_crop_is_interpolate_per_image(dtype):
    torch.manual_seed(0)
    x = torch.rand(48, 3, 9, 7, dtype=dtype)
    boxes = resized_crop_boxes(48, 9, 7, (0.05, 1.0), (0.5, 2.0))
    flip = torch.rand(48) < 0.5
    out = resized_crop(x, boxes, flip=flip)
    assert out.shape == x.shape and out.dtype == dtype
    for img, (t, left, h, w), f, res in zip(x, boxes.tolist(), flip, out, strict=True):
        ref = F.interpolate(
            img[None, :, t : t + h, left : left + w], (9, 7), mode="bilinear", align_corners=False
        )[0]
        torch.testing.assert_close(res, ref.flip(-1) if f else ref)
    whole = torch.tensor([[0, 0, 9, 7]] * 48)
    assert torch.equal(resized_crop(x, whole), x)  # a full-size box is exactly the identity


# --- colour adjustments against PIL and colorsys ----------------------------------------------


def pil_enhance(img: torch.Tensor, enhancer, factor: float) -> torch.Tensor:
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    out = enhancer(Image.fromarray(arr)).enhance(factor)
    return torch.from_numpy(np.asarray(out).astype(np.float64) / 255).permute(2, 0, 1)


@pytest.mark.parametrize(
    ("ours", "enhancer"),
    [
        (adjust_brightness, ImageEnhance.Brightness),
        (adjust_contrast, ImageEnhance.Contrast),
        (adjust_saturation, ImageEnhance.Color),
    ],
)
def test_brightness_contrast_saturation_match_pil(ours, enhancer):
    torch.manual_seed(1)
    x = torch.randint(0, 256, (6, 3, 8, 8)).double() / 255
    factors = torch.tensor([0.0, 0.6, 1.0, 1.25, 1.4, 2.0], dtype=torch.float64)
    out = ours(x, factors)
    assert out.min() >= 0 and out.max() <= 1
    for img, f, res in zip(x, factors.tolist(), out, strict=True):
        # PIL rounds its gray level and output to uint8: within 2/255 of the exact formula.
        torch.testing.assert_close(res, pil_enhance(img, enhancer, f), atol=2 / 255, rtol=0)
    torch.testing.assert_close(out[2], x[2], atol=0, rtol=0)  # factor 1 is exactly identity


def test_hue_matches_colorsys():
    torch.manual_seed(2)
    x = torch.rand(5, 3, 4, 4, dtype=torch.float64)
    x[0, :, 0, 0] = 0.5  # a gray pixel: hue undefined, unchanged
    factors = torch.tensor([0.1, -0.1, 0.5, -0.5, 0.03], dtype=torch.float64)
    out = adjust_hue(x, factors)
    for b in range(5):
        for i in range(4):
            for j in range(4):
                hh, s, v = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
                ref = colorsys.hsv_to_rgb((hh + factors[b].item()) % 1.0, s, v)
                assert out[b, :, i, j].tolist() == pytest.approx(ref, abs=1e-12)
    torch.testing.assert_close(adjust_hue(x, torch.zeros(5, dtype=torch.float64)), x)
    gray = x[:, :1]
    assert adjust_hue(gray, factors) is gray and adjust_saturation(gray, factors) is gray


# --- the jitter: per-image order, per-image factors --------------------------------------------


def jitter_loop(x, factors, order, apply):
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    out = []
    for img, f, o, a in zip(x, factors, order, apply, strict=True):
        img = img[None]
        if a:
            for k in o.tolist():
                img = ops[k](img, f[k : k + 1])
        out.append(img[0])
    return torch.stack(out)


def test_apply_color_jitter_is_the_per_image_loop():
    torch.manual_seed(3)
    b = 24
    x = torch.rand(b, 3, 6, 6, dtype=torch.float64)
    factors = torch.stack(
        [torch.empty(b).uniform_(0.2, 1.8) for _ in range(3)]
        + [torch.empty(b).uniform_(-0.3, 0.3)],
        1,
    ).double()
    order = torch.rand(b, 4).argsort(1)
    apply = torch.rand(b) < 0.7
    out = apply_color_jitter(x, factors, order, apply)
    torch.testing.assert_close(out, jitter_loop(x, factors, order, apply))
    # The order matters for these inputs (else the test could not see a wrong order).
    swapped = apply_color_jitter(x, factors, order.flip(1), apply)
    assert not torch.allclose(swapped[apply], out[apply])


def test_color_jitter_draws_per_image():
    torch.manual_seed(4)
    x = torch.rand(400, 3, 5, 5) * 0.45 + 0.25  # 0.7 * 1.4 < 1: no clipping
    out = color_jitter(x, brightness=0.4, contrast=0, saturation=0, hue=0, p=0.8)
    ratio = (out / x).flatten(1)
    # Brightness alone: one factor per image, in [0.6, 1.4], different across images.
    torch.testing.assert_close(ratio.amin(1), ratio.amax(1))
    f = ratio[:, 0]
    applied = (f - 1).abs() > 1e-6
    assert 0.7 < applied.float().mean() < 0.9
    assert f.min() >= 0.6 - 1e-6 and f.max() <= 1.4 + 1e-6 and f[applied].std() > 0.15
    none = color_jitter(x, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.0)
    assert torch.equal(none, x)


def test_grayscale():
    torch.manual_seed(5)
    x = torch.rand(300, 3, 4, 4)
    out = random_grayscale(x, 0.2)
    gray = (out[:, 0] == out[:, 1]).all(-1).all(-1) & (out[:, 1] == out[:, 2]).all(-1).all(-1)
    assert 0.1 < gray.float().mean() < 0.3
    lum = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(out[gray, 0], lum[gray])
    torch.testing.assert_close(out[~gray], x[~gray], atol=0, rtol=0)
    assert torch.equal(random_grayscale(x, 0.0), x)


# --- the whole augmentation -------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_output_range_shape_and_per_image_randomness(channels):
    torch.manual_seed(6)
    x = torch.rand(64, channels, 12, 10)
    out = ContrastiveAugment()(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert len({tuple(v.flatten()[:5].tolist()) for v in out}) == 64


def test_deterministic_under_a_seed_and_a_generator():
    aug = ContrastiveAugment()
    x = torch.rand(16, 3, 8, 8)
    torch.manual_seed(7)
    a = aug(x)
    torch.manual_seed(7)
    assert torch.equal(aug(x), a)
    assert not torch.equal(aug(x), a)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    state = torch.get_rng_state()
    assert torch.equal(aug(x, generator=g1), aug(x, generator=g2))
    assert torch.equal(torch.get_rng_state(), state)  # the generator path leaves the global RNG


def test_strength_zero_is_flip_only_and_strength_shrinks_the_change():
    torch.manual_seed(8)
    x = torch.rand(64, 3, 32, 32)
    out = contrastive_augment(x, ContrastiveAugmentConfig(), 0.0)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    assert all(torch.equal(o, i) or f for o, i, f in zip(out, x, flipped, strict=True))
    assert 10 < sum(flipped) < 54
    # Mean change from the (flip-aligned) input grows with the strength.
    changes = []
    for s in (0.25, 1.0):
        torch.manual_seed(9)
        y = contrastive_augment(x, ContrastiveAugmentConfig(), s)
        d = torch.minimum((y - x).abs().mean((1, 2, 3)), (y - x.flip(-1)).abs().mean((1, 2, 3)))
        changes.append(d.mean().item())
    assert 0 < changes[0] < changes[1]


def test_strength_schedules():
    anneal = ContrastiveAugmentConfig(schedule="anneal")  # DynACL: K = 50
    assert [anneal.strength_at(e, 1000) for e in (0, 49, 50, 99, 100, 999)] == pytest.approx(
        [1.0, 1.0, 0.95, 0.95, 0.9, 0.05]
    )
    every = ContrastiveAugmentConfig(schedule="anneal", anneal_every=1, strength=0.5)
    assert every.strength_at(5, 10) == pytest.approx(0.25)
    assert ContrastiveAugmentConfig(strength=0.3).strength_at(7, 10) == 0.3
    aug = ContrastiveAugment(anneal)
    aug.set_epoch(120, 200)
    assert aug.strength == pytest.approx(1 - 100 / 200)


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"min_scale": 0.0}, "min_scale"),
        ({"strength": 1.5}, "strength"),
        ({"hue": 0.6}, "hue"),
        ({"brightness": -0.1}, "brightness"),
        ({"ratio": (2.0, 1.0)}, "ratio"),
        ({"anneal_every": 0}, "anneal_every"),
    ],
)
def test_bad_config_names_the_key(kw, key):
    with pytest.raises(ConfigError, match=f"data.contrastive.{key}"):
        ContrastiveAugmentConfig(**kw)


def test_bad_inputs():
    with pytest.raises(TypeError, match="float"):
        ContrastiveAugment()(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        ContrastiveAugment()(torch.zeros(2, 4, 4, 4))


def test_make_augment_selects_it():
    info = DatasetInfo("toy", 10, (3, 8, 8), (0.5,) * 3, (0.25,) * 3, tuple("0123456789"), "x")
    cfg = ContrastiveAugmentConfig(min_scale=0.2)
    aug = make_augment(
        DatasetInfo(**{**info.__dict__, "augment": "contrastive"}), 4, contrastive=cfg
    )
    assert isinstance(aug, ContrastiveAugment) and aug.config is cfg


@pytest.mark.gpu
def test_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x = torch.rand(32, 3, 16, 16, device="cuda")
    out = ContrastiveAugment()(x)
    assert out.device == x.device and out.min() >= 0 and out.max() <= 1
