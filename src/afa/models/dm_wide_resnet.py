"""DeepMind's WideResNet and PreAct ResNet, the layout of most published robust CIFAR-10 models.

These are the architectures of the RobustBench entries of Gowal et al. 2020/2021, Rebuffi et
al. 2021 and Wang et al. 2023, built so that their checkpoints load with no key mapping
other than ``logits`` -> ``head`` (:mod:`afa.models.robustbench`). They differ from afa's own
``wrn`` / ``preact_resnet18`` in exactly what changes the logits of a trained network:

* stride-2 convolutions pad TF-style ("SAME"): one row/column of zeros on the bottom/right
  only, not one on every side (the networks were first trained in JAX/TF);
* the activation is SiLU (their "Swish" is ``x * sigmoid(x)``, the same function);
* the PreAct ResNet's projection shortcut is a 3x3 convolution (padded the same way) of the
  *raw* block input, where the classic PreAct ResNet uses a 1x1 convolution.

References:
    Gowal, Qin, Uesato, Mann, Kohli, "Uncovering the Limits of Adversarial Training against
    Norm-Bounded Adversarial Examples", arXiv 2010.03593, 2020.
    Gowal et al., "Improving Robustness using Generated Data", NeurIPS 2021.
    Rebuffi et al., "Fixing Data Augmentation to Improve Adversarial Robustness", 2021.
    Wang et al., "Better Diffusion Models Further Improve Adversarial Training", ICML 2023.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from afa.errors import ConfigError
from afa.models.base import Classifier, Normalize
from afa.models.registry import check_positive, register_model

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU}


def pad_same(x: Tensor, stride: int) -> Tensor:
    """Zero padding of a 3x3 convolution as TF's "SAME": (1, 1, 1, 1) at stride 1 and
    (0, 1, 0, 1) (right and bottom only) at stride 2 on even-sized inputs."""
    if stride == 1:
        return F.pad(x, (1, 1, 1, 1))
    if stride == 2:
        return F.pad(x, (0, 1, 0, 1))
    raise ValueError(f"pad_same: stride must be 1 or 2, got {stride}")


class DMWideBlock(nn.Module):
    """BN-act, 3x3 conv (stride, SAME padding), BN-act, 3x3 conv; where the width changes
    a 1x1 projection of the *activated* input is the shortcut, else the raw input."""

    def __init__(
        self, cin: int, cout: int, stride: int, activation: type[nn.Module] = nn.SiLU
    ) -> None:
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(cin)
        self.relu_0 = activation()
        self.conv_0 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(cout)
        self.relu_1 = activation()
        self.conv_1 = nn.Conv2d(cout, cout, kernel_size=3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)
        elif stride != 1:
            raise ValueError("DMWideBlock: a stride-2 block must change the width")
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu_0(self.batchnorm_0(x))
        out = self.conv_0(pad_same(act, self.stride))
        out = self.conv_1(self.relu_1(self.batchnorm_1(out)))
        return out + (x if self.shortcut is None else self.shortcut(act))


class DMBlockGroup(nn.Module):
    """``num_blocks`` wide blocks; the first one changes width and stride."""

    def __init__(
        self, num_blocks: int, cin: int, cout: int, stride: int, activation: type[nn.Module]
    ) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *(
                DMWideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, activation)
                for i in range(num_blocks)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DMWideResNet(Classifier):
    """WRN-depth-k in DeepMind's layout (Gowal et al. 2020): a 3x3 stem of 16 channels,
    three groups of (depth - 4) / 6 blocks of widths 16k, 32k, 64k (strides 1, 2, 2),
    BN-act and global average pooling; SAME padding on the stride-2 convolutions.

    Parameter names are RobustBench's (``init_conv``, ``layer.<g>.block.<i>.conv_0``,
    ``batchnorm``) except the linear layer, afa's ``head`` (theirs: ``logits``).

    Args:
        num_classes: number of logits.
        in_channels: image channels.
        mean, std: per-channel input statistics (non-persistent: a checkpoint holds none;
            the loader sets them, e.g. CIFAR-10's).
        depth: total depth; (depth - 4) must be divisible by 6.
        widen_factor: k.
        activation: ``"silu"`` (their Swish) or ``"relu"``.

    Shape:
        x: (B, in_channels, H, W) in [0, 1], H and W divisible by 4; features:
        (B, 64 * widen_factor).
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
        activation: str = "silu",
    ) -> None:
        super().__init__()
        n = (depth - 4) // 6
        act = ACTIVATIONS[activation]
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = Normalize(mean, std)
        self.init_conv = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)
        self.layer = nn.Sequential(
            *(DMBlockGroup(n, widths[g], widths[g + 1], 1 if g == 0 else 2, act) for g in range(3))
        )
        self.batchnorm = nn.BatchNorm2d(widths[3])
        self.relu = act()
        self.num_features = widths[3]
        self.num_classes = num_classes
        self.head = nn.Linear(widths[3], num_classes)

    def encode(self, x: Tensor) -> Tensor:
        out = self.relu(self.batchnorm(self.layer(self.init_conv(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


class DMPreActBlock(nn.Module):
    """BN-act, 3x3 conv (stride, SAME), BN-act, 3x3 conv; where the shape changes the
    shortcut is a 3x3 convolution (stride, SAME) of the raw input, else the raw input."""

    def __init__(
        self, cin: int, cout: int, stride: int, activation: type[nn.Module] = nn.SiLU
    ) -> None:
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(cin)
        self.relu_0 = activation()
        self.conv_2d_1 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(cout)
        self.relu_1 = activation()
        self.conv_2d_2 = nn.Conv2d(cout, cout, kernel_size=3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, bias=False)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu_0(self.batchnorm_0(x))
        shortcut = x if self.shortcut is None else self.shortcut(pad_same(x, self.stride))
        out = self.conv_2d_1(pad_same(out, self.stride))
        out = self.conv_2d_2(self.relu_1(self.batchnorm_1(out)))
        return out + shortcut


_PREACT_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class DMPreActResNet(Classifier):
    """PreAct ResNet-18/34 in DeepMind's layout (Gowal et al. 2021, Rebuffi et al. 2021):
    a 3x3 stem of 64 channels, four stages of widths 64, 128, 256, 512 (strides 1, 2, 2, 2),
    BN-act and global average pooling.

    Parameter names are RobustBench's (``conv_2d``, ``layer_<s>.<i>.conv_2d_1``,
    ``batchnorm``) except the linear layer, afa's ``head`` (theirs: ``logits``).

    Args:
        num_classes: number of logits.
        in_channels: image channels.
        mean, std: per-channel input statistics (non-persistent, set by the loader).
        depth: 18 or 34.
        activation: ``"silu"`` (their Swish) or ``"relu"``.
        width: base width w (64 in every published model); stages are w, 2w, 4w, 8w.

    Shape:
        x: (B, in_channels, H, W) in [0, 1], H and W divisible by 8; features: (B, 8 * width).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        depth: int = 18,
        activation: str = "silu",
        width: int = 64,
    ) -> None:
        super().__init__()
        act = ACTIVATIONS[activation]
        self.normalize = Normalize(mean, std)
        self.conv_2d = nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False)
        widths = (width, width, 2 * width, 4 * width, 8 * width)
        for s, n in enumerate(_PREACT_BLOCKS[depth]):
            blocks = [
                DMPreActBlock(
                    widths[s] if i == 0 else widths[s + 1],
                    widths[s + 1],
                    (1 if s == 0 else 2) if i == 0 else 1,
                    act,
                )
                for i in range(n)
            ]
            self.add_module(f"layer_{s}", nn.Sequential(*blocks))
        self.batchnorm = nn.BatchNorm2d(widths[4])
        self.relu = act()
        self.num_features = widths[4]
        self.num_classes = num_classes
        self.head = nn.Linear(widths[4], num_classes)

    def encode(self, x: Tensor) -> Tensor:
        out = self.conv_2d(x)
        for s in range(4):
            out = getattr(self, f"layer_{s}")(out)
        out = self.relu(self.batchnorm(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def _check_activation(name: str, activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"model {name!r}: activation must be one of {', '.join(ACTIVATIONS)}, "
            f"got {activation!r}"
        )


@register_model("dm-wrn")
def dm_wrn(
    num_classes: int,
    *,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    depth: int = 28,
    widen_factor: int = 10,
    activation: str = "silu",
) -> DMWideResNet:
    """DeepMind's WRN (RobustBench's ``DMWideResNet``): 36,479,194 parameters at 28-10."""
    check_positive("dm-wrn", depth=depth, widen_factor=widen_factor)
    if depth < 10 or (depth - 4) % 6:
        raise ConfigError(
            f"model 'dm-wrn': depth must be 6n + 4 with n >= 1 (10, 16, 28, 34, 70, 106, ...), "
            f"got {depth}"
        )
    _check_activation("dm-wrn", activation)
    return DMWideResNet(
        num_classes,
        in_channels=in_channels,
        mean=mean,
        std=std,
        depth=depth,
        widen_factor=widen_factor,
        activation=activation,
    )


@register_model("dm-preact-resnet")
def dm_preact_resnet(
    num_classes: int,
    *,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    depth: int = 18,
    activation: str = "silu",
    width: int = 64,
) -> DMPreActResNet:
    """DeepMind's PreAct ResNet-18/34 (RobustBench's ``DMPreActResNet``, 3x3 shortcuts)."""
    check_positive("dm-preact-resnet", width=width)
    if depth not in _PREACT_BLOCKS:
        raise ConfigError(f"model 'dm-preact-resnet': depth must be 18 or 34, got {depth!r}")
    _check_activation("dm-preact-resnet", activation)
    return DMPreActResNet(
        num_classes,
        in_channels=in_channels,
        mean=mean,
        std=std,
        depth=depth,
        activation=activation,
        width=width,
    )
