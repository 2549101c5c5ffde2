"""Registry-wide model tests: the Classifier contract, gradients, normalisation, sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from afa.errors import ConfigError
from afa.models import MODELS, Classifier, Normalize, create_model, model_names

MEAN3, STD3 = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)

# Cheap instances of every registered model that a CPU can run forward and backward:
# name -> (model name, options, channels, image size).
SMALL: dict[str, tuple[str, dict, int, int]] = {
    "cnn-digits": ("cnn", {}, 1, 8),
    "cnn-cifar": ("cnn", {"width": 8}, 3, 32),
    "resnet18-w8": ("resnet18", {"width": 8}, 3, 32),
    "preact_resnet18-w8": ("preact_resnet18", {"width": 8}, 3, 32),
    "wrn-10-1-relu": ("wrn", {"depth": 10, "widen_factor": 1, "activation": "relu"}, 3, 32),
    "wrn-10-1-silu": ("wrn", {"depth": 10, "widen_factor": 1, "activation": "silu"}, 3, 32),
    "dm-wrn-10-1": ("dm-wrn", {"depth": 10, "widen_factor": 1}, 3, 32),
    "dm-preact-resnet-w8": ("dm-preact-resnet", {"width": 8}, 3, 32),
}

# Parameters for 10 classes at the default options. Published figures: ResNet-18 (CIFAR)
# 11.17M, WRN-28-10 36.5M, WRN-34-10 46.2M (TRADES), WRN-70-16 266.8M (Gowal et al.).
PARAM_COUNTS = {
    "cnn": 94_762,
    "resnet18": 11_173_962,
    "preact_resnet18": 11_172_170,
    "wrn": 36_479_194,  # depth 28, widen factor 10 by default
    "wrn-28-10": 36_479_194,
    "wrn-34-10": 46_160_474,
    "wrn-70-16": 266_796_506,
    "dm-wrn": 36_479_194,  # the same WRN-28-10 in DeepMind's layout (SAME padding, SiLU)
    "dm-preact-resnet": 12_548_426,  # PreAct-18 with 3x3 shortcuts
}
PUBLISHED = {
    "resnet18": (11.17e6, 0.005),
    "preact_resnet18": (11.17e6, 0.005),
    "wrn-28-10": (36.48e6, 0.01),
    "wrn-34-10": (46.16e6, 0.01),
    "wrn-70-16": (266.8e6, 0.01),
}


def _small(key: str) -> tuple[Classifier, torch.Tensor]:
    name, options, channels, size = SMALL[key]
    torch.manual_seed(0)
    model = create_model(
        name,
        10,
        in_channels=channels,
        image_size=size,
        mean=MEAN3[:channels],
        std=STD3[:channels],
        **options,
    )
    x = torch.rand(4, channels, size, size, generator=torch.Generator().manual_seed(1))
    return model, x


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_registered_model_is_tested():
    small = {name for name, *_ in SMALL.values()}
    assert set(model_names()) == set(PARAM_COUNTS)
    assert small <= set(model_names())
    assert list(MODELS) == model_names() == sorted(model_names())


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count(name):
    # The meta device builds the graph of shapes without allocating (WRN-70-16 is 1 GB).
    with torch.device("meta"):
        model = create_model(name, 10, mean=MEAN3, std=STD3)
    assert all(p.is_meta for p in model.parameters())
    assert _count(model) == PARAM_COUNTS[name]
    if name in PUBLISHED:
        published, tolerance = PUBLISHED[name]
        assert abs(_count(model) - published) <= tolerance * published
    # The head alone depends on the number of classes.
    with torch.device("meta"):
        model100 = create_model(name, 100, mean=MEAN3, std=STD3)
    assert _count(model100) - _count(model) == 90 * (model.num_features + 1)
    assert model100.head.out_features == 100 == model100.num_classes


@pytest.mark.parametrize("key", sorted(SMALL))
def test_features_and_forward(key):
    model, x = _small(key)
    model.eval()
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
    assert isinstance(model, Classifier)
    assert feats.shape == (x.shape[0], model.num_features)
    assert logits.shape == (x.shape[0], model.num_classes) == (4, 10)
    assert model.head.in_features == model.num_features
    assert torch.isfinite(feats).all() and torch.isfinite(logits).all()
    torch.testing.assert_close(logits, model.head(feats))


@pytest.mark.parametrize("key", sorted(SMALL))
def test_every_parameter_gets_a_gradient(key):
    model, x = _small(key)
    model.train()
    y = torch.arange(x.shape[0]) % 10
    F.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("key", sorted(SMALL))
def test_normalisation_is_inside_the_model(key):
    model, x = _small(key)
    model.eval()
    assert isinstance(model.normalize, Normalize)
    # Statistics are architecture, not checkpoint: not in the state dict.
    state = model.state_dict()
    assert not any(k.startswith("normalize.") for k in state)
    channels = x.shape[1]
    mean = torch.tensor(MEAN3[:channels]).view(1, -1, 1, 1)
    std = torch.tensor(STD3[:channels]).view(1, -1, 1, 1)
    with torch.no_grad():
        manual = model.head(model.encode((x - mean) / std))
        torch.testing.assert_close(model(x), manual)
        # A model that skipped normalisation would give this instead.
        assert not torch.allclose(model(x), model.head(model.encode(x)), atol=1e-3)
    # A checkpoint loads strictly into a fresh model, which keeps its own statistics.
    fresh, _ = _small(key)
    fresh.load_state_dict(state, strict=True)
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
    # Buffers follow the model's dtype.
    assert model.double().normalize.mean.dtype == torch.float64


@pytest.mark.parametrize("key", sorted(SMALL))
def test_channels_last_matches_contiguous(key):
    model, x = _small(key)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_cnn_downsamples_larger_images_once_more():
    model, x = _small("cnn-cifar")
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 2
    digits, _ = _small("cnn-digits")
    assert len([m for m in digits.modules() if isinstance(m, torch.nn.MaxPool2d)]) == 1
    assert digits.num_features == 128


def test_width_scales_the_network():
    with torch.device("meta"):
        narrow = create_model("resnet18", 10, mean=MEAN3, std=STD3, width=32)
    assert narrow.num_features == 256
    assert _count(narrow) < PARAM_COUNTS["resnet18"] / 3


def test_silu_wrn_uses_silu():
    model, _ = _small("wrn-10-1-silu")
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.SiLU in kinds and torch.nn.ReLU not in kinds


def test_unknown_model_names_the_closest():
    with pytest.raises(ConfigError, match=r"'resnet81'.*did you mean 'resnet18'"):
        create_model("resnet81", 10, mean=MEAN3, std=STD3)


def test_unknown_option_names_the_key_and_the_model():
    with pytest.raises(ConfigError, match=r"'resnet18'.*'widht'.*did you mean 'width'"):
        create_model("resnet18", 10, mean=MEAN3, std=STD3, widht=8)
    with pytest.raises(ConfigError, match=r"'wrn-28-10'.*'depth'"):
        create_model("wrn-28-10", 10, mean=MEAN3, std=STD3, depth=34)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("wrn", {"depth": 12, "widen_factor": 1}, "depth"),
        ("wrn", {"depth": 10, "widen_factor": 0}, "widen_factor"),
        ("wrn", {"depth": 10, "widen_factor": 1, "activation": "gelu"}, "activation"),
        ("cnn", {"width": 0}, "width"),
        ("resnet18", {"width": 8.5}, "width"),
    ],
)
def test_bad_option_values_raise(name, options, match):
    with pytest.raises(ConfigError, match=match):
        create_model(name, 10, mean=MEAN3, std=STD3, **options)


def test_statistics_must_match_channels():
    with pytest.raises(ConfigError, match="in_channels"):
        create_model("cnn", 10, in_channels=1, image_size=8, mean=MEAN3, std=STD3)
    with pytest.raises(ConfigError, match="std"):
        create_model("cnn", 10, in_channels=1, image_size=8, mean=[0.5], std=[0.0])
