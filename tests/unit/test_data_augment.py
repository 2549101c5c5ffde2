"""to_float and the batched on-device crop + flip, checked against a per-sample loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from afa.data import DatasetInfo, make_augment, to_float


def info(augment: str) -> DatasetInfo:
    return DatasetInfo(
        "toy", 10, (3, 6, 5), (0.5,) * 3, (0.25,) * 3, tuple(map(str, range(10))), augment
    )


def crops_and_flips(img: torch.Tensor, padding: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    """Loop reference: every crop offset and flip of one (C, H, W) image."""
    _, h, w = img.shape
    padded = F.pad(img, (padding,) * 4)
    out = []
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[:, top : top + h, left : left + w]
            out.append((top, left, False, crop))
            out.append((top, left, True, crop.flip(-1)))
    return out


def test_to_float():
    x = torch.tensor([[[[0, 51], [255, 128]]]], dtype=torch.uint8)
    y = to_float(x, "cpu")
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y, x.double().div(255).float())
    with pytest.raises(TypeError, match="uint8"):
        to_float(y, "cpu")


def test_none_is_the_identity():
    aug = make_augment(info("none"), 4)
    x = torch.rand(2, 3, 6, 5)
    assert aug(x) is x


@pytest.mark.parametrize("padding", [0, 1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_each_output_is_a_crop_or_flip_of_its_input(padding, dtype):
    torch.manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 6, 5)).to(dtype)  # no zeros: padding is recognisable
    if dtype == torch.float32:
        x = x / 255
    out = make_augment(info("crop-flip"), padding)(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= (1 if dtype == torch.float32 else 255)
    chosen = []
    for img, res in zip(x, out, strict=True):
        matches = [
            (top, left, f)
            for top, left, f, c in crops_and_flips(img, padding)
            if torch.equal(c, res)
        ]
        assert matches, "output is not a crop/flip of its input"
        chosen.append(matches[0])
    # Offsets and flips vary per sample (64 samples: all-equal would be a shared draw).
    assert any(f for _, _, f in chosen) and not all(f for _, _, f in chosen)
    if padding:
        assert len({(top, left) for top, left, _ in chosen}) > 3
        # Zero padding enters at least one shifted crop.
        assert (out == 0).any()


def test_reproducible_from_the_global_rng():
    aug = make_augment(info("crop-flip"), 4)
    x = torch.rand(16, 3, 6, 5)
    torch.manual_seed(7)
    a = aug(x)
    state = torch.get_rng_state()
    b = aug(x)
    torch.set_rng_state(state)
    torch.testing.assert_close(aug(x), b)
    torch.manual_seed(7)
    torch.testing.assert_close(aug(x), a)
    assert not torch.equal(a, b)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown augment"):
        make_augment(info("mixup"), 4)
    with pytest.raises(ValueError, match="padding"):
        make_augment(info("crop-flip"), -1)


@pytest.mark.gpu
def test_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x = torch.randint(1, 256, (32, 3, 6, 5), dtype=torch.uint8)
    xf = to_float(x, "cuda")
    assert xf.device.type == "cuda" and xf.dtype == torch.float32
    out = make_augment(info("crop-flip"), 2)(xf)
    assert out.device == xf.device
    for img, res in zip(xf.cpu(), out.cpu(), strict=True):
        assert any(torch.equal(c, res) for *_, c in crops_and_flips(img, 2))
