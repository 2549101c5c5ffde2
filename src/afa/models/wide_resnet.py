"""Wide residual networks for CIFAR: WRN-28-10, WRN-34-10, WRN-70-16 and a generic ``wrn``.

References:
    Zagoruyko, Komodakis, "Wide Residual Networks", BMVC 2016 (the pre-activation block,
    widths 16, 16k, 32k, 64k and ``(depth - 4) / 6`` blocks per group used here).
    Gowal et al., "Uncovering the Limits of Adversarial Training against Norm-Bounded
    Adversarial Examples", 2020, and Wang et al., "Better Diffusion Models Further Improve
    Adversarial Training", ICML 2023 (WRN-28-10 / WRN-70-16 with SiLU: ``activation="silu"``).
    Their variant also pads stride-2 convs asymmetrically (TF "SAME") and uses BN momentum
    0.01; the parameter count is the same and neither is reproduced here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from afa.errors import ConfigError
from afa.models.base import Classifier, Normalize
from afa.models.registry import check_positive, register_model
from afa.models.resnet import PreActBlock

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU}


class WideResNet(Classifier):
    """WRN-depth-k: a 3x3 stem of 16 channels, three groups of (depth - 4) / 6 blocks of
    widths 16k, 32k, 64k (strides 1, 2, 2), BN-act and global average pooling.

    Args:
        num_classes: number of logits.
        in_channels: image channels.
        mean, std: per-channel input statistics (normalisation is inside the model).
        depth: total depth; (depth - 4) must be divisible by 6.
        widen_factor: k.
        activation: ``"relu"`` or ``"silu"``.

    Shape:
        x: (B, in_channels, H, W) in [0, 1]; features: (B, 64 * widen_factor).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        depth: int = 28,
        widen_factor: int = 10,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        cin = 16
        for i, cout in enumerate(widths):
            for j in range(n):
                blocks.append(
                    PreActBlock(cin, cout, 2 if (i > 0 and j == 0) else 1, ACTIVATIONS[activation])
                )
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.act = ACTIVATIONS[activation]()
        self.num_features = cin
        self.num_classes = num_classes
        self.head = nn.Linear(cin, num_classes)
        # Zagoruyko & Komodakis's initialisation: He-normal (fan-out) convs, zero head bias.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.head.bias)

    def encode(self, x: Tensor) -> Tensor:
        out = self.act(self.bn(self.blocks(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def _build(
    name: str,
    num_classes: int,
    in_channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    depth: int,
    widen_factor: int,
    activation: str,
) -> WideResNet:
    check_positive(name, depth=depth, widen_factor=widen_factor)
    if depth < 10 or (depth - 4) % 6:
        raise ConfigError(
            f"model {name!r}: depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...), "
            f"got {depth}"
        )
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"model {name!r}: activation must be one of {', '.join(ACTIVATIONS)}, "
            f"got {activation!r}"
        )
    return WideResNet(
        num_classes,
        in_channels=in_channels,
        mean=mean,
        std=std,
        depth=depth,
        widen_factor=widen_factor,
        activation=activation,
    )


@register_model("wrn")
def wrn(
    num_classes: int,
    *,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    depth: int = 28,
    widen_factor: int = 10,
    activation: str = "relu",
) -> WideResNet:
    """WRN of any depth (6n + 4) and widen factor."""
    return _build("wrn", num_classes, in_channels, mean, std, depth, widen_factor, activation)


@register_model("wrn-28-10")
def wrn_28_10(
    num_classes: int,
    *,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    activation: str = "relu",
) -> WideResNet:
    """WRN-28-10 (36,479,194 parameters for 10 classes)."""
    return _build("wrn-28-10", num_classes, in_channels, mean, std, 28, 10, activation)


@register_model("wrn-34-10")
def wrn_34_10(
    num_classes: int,
    *,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    activation: str = "relu",
) -> WideResNet:
    """WRN-34-10, the TRADES / MART network (46,160,474 parameters for 10 classes)."""
    return _build("wrn-34-10", num_classes, in_channels, mean, std, 34, 10, activation)


@register_model("wrn-70-16")
def wrn_70_16(
    num_classes: int,
    *,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    activation: str = "relu",
) -> WideResNet:
    """WRN-70-16 of Gowal et al. / Wang et al. (266,796,506 parameters for 10 classes)."""
    return _build("wrn-70-16", num_classes, in_channels, mean, std, 70, 16, activation)
