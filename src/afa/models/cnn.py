"""A small CNN for tiny images (8x8 digits) that trains in seconds on a CPU."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from afa.models.base import Classifier, Normalize
from afa.models.registry import check_positive, register_model


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(Classifier):
    """conv(w)-BN-ReLU, conv(2w)-BN-ReLU, 2x2 max-pool, conv(4w)-BN-ReLU, global average pool.

    Images larger than 16 pixels get a second 2x2 max-pool after the first conv, so a
    32x32 input costs about as much as a 16x16 one.

    Args:
        num_classes: number of logits.
        in_channels: image channels.
        image_size: image height/width.
        mean, std: per-channel input statistics (normalisation is inside the model).
        width: channels of the first conv (w); features have 4w channels.

    Shape:
        x: (B, in_channels, H, W) in [0, 1]; features: (B, 4 * width).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        width: int = 32,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        layers = _conv_bn_relu(in_channels, width)
        if image_size > 16:
            layers.append(nn.MaxPool2d(2))
        layers += _conv_bn_relu(width, 2 * width)
        layers.append(nn.MaxPool2d(2))
        layers += _conv_bn_relu(2 * width, 4 * width)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.num_features = 4 * width
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)

    def encode(self, x: Tensor) -> Tensor:
        return self.body(x)


@register_model("cnn")
def cnn(
    num_classes: int,
    *,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    width: int = 32,
) -> SmallCNN:
    """The small CNN (128 features at the default ``width=32``)."""
    check_positive("cnn", width=width)
    return SmallCNN(
        num_classes, in_channels=in_channels, image_size=image_size, mean=mean, std=std, width=width
    )
