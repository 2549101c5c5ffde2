"""ResNet-18 and PreAct ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool).

References:
    He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
    He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016.
    Rice, Wong, Kolter, "Overfitting in adversarially robust deep learning", ICML 2020
    (the PreActResNet-18 of ``locuslab/robust_overfitting``, the usual PGD-AT baseline).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from afa.models.base import Classifier, Normalize
from afa.models.registry import check_positive, register_model


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a (projected when the shape changes) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-act-conv(stride)-BN-act-conv; a projection shortcut (no BN) reads the activated
    input when the shape changes, the raw input otherwise (He et al. 2016; also the block
    of the wide ResNets, with ReLU or SiLU)."""

    def __init__(
        self, cin: int, cout: int, stride: int, activation: type[nn.Module] = nn.ReLU
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.act = activation()
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        return out + shortcut


def _stages(block: type[nn.Module], width: int, blocks: Sequence[int]) -> nn.Sequential:
    """Four stages of widths w, 2w, 4w, 8w; every stage but the first halves the resolution."""
    layers: list[nn.Module] = []
    cin = width
    for i, n in enumerate(blocks):
        cout = width * 2**i
        for j in range(n):
            layers.append(block(cin, cout, 2 if (i > 0 and j == 0) else 1))
            cin = cout
    return nn.Sequential(*layers)


class ResNet(Classifier):
    """ResNet with BasicBlocks and the CIFAR stem.

    Args:
        num_classes: number of logits.
        in_channels: image channels.
        mean, std: per-channel input statistics (normalisation is inside the model).
        width: base width w (64 for the standard network); features have 8w channels.
        blocks: BasicBlocks per stage ([2, 2, 2, 2] for ResNet-18).

    Shape:
        x: (B, in_channels, H, W) in [0, 1]; features: (B, 8 * width).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        width: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = _conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.layers = _stages(BasicBlock, width, blocks)
        self.num_features = width * 2 ** (len(blocks) - 1)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)

    def encode(self, x: Tensor) -> Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


class PreActResNet(Classifier):
    """Pre-activation ResNet with the CIFAR stem and a final BN-ReLU before pooling.

    Args and shapes as ``ResNet``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        width: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = _conv3x3(in_channels, width)
        self.layers = _stages(PreActBlock, width, blocks)
        self.num_features = width * 2 ** (len(blocks) - 1)
        self.bn = nn.BatchNorm2d(self.num_features)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)

    def encode(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


@register_model("resnet18")
def resnet18(
    num_classes: int,
    *,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    width: int = 64,
) -> ResNet:
    """ResNet-18, CIFAR stem (11,173,962 parameters for 10 classes at ``width=64``)."""
    check_positive("resnet18", width=width)
    return ResNet(num_classes, in_channels=in_channels, mean=mean, std=std, width=width)


@register_model("preact_resnet18")
def preact_resnet18(
    num_classes: int,
    *,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    width: int = 64,
) -> PreActResNet:
    """PreAct ResNet-18 of Rice et al. (11,172,170 parameters for 10 classes at ``width=64``)."""
    check_positive("preact_resnet18", width=width)
    return PreActResNet(num_classes, in_channels=in_channels, mean=mean, std=std, width=width)
