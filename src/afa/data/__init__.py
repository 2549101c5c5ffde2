"""L1 data: datasets as uint8 arrays, splits, batch loading and on-device augmentation.

Typical use::

    splits = load_splits(DataConfig(name="cifar10", root="data"))
    loader = build_train_loader(splits, cfg, batch_size=128, seed=0)
    augment = make_augment(splits.info, cfg.crop_padding)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader:                      # uint8 (B, C, H, W) on the CPU
            x = augment(to_float(x, device))     # float32 in [0, 1] on the device
"""

from afa.data import (  # noqa: F401  (register the datasets)
    cifar,
    digits,
    folder,
    npz,
    shift,
    tiny_imagenet,
)
from afa.data.augment import make_augment, to_float
from afa.data.base import DataConfig, DatasetInfo, ImageSet, Splits
from afa.data.generated import load_generated
from afa.data.loader import BatchLoader, MixedLoader, as_tensor, build_train_loader
from afa.data.registry import DATASETS, load_splits
from afa.data.shift import CORRUPTIONS, EXTRA_CORRUPTIONS, load_cifar10_1, load_cifar_c

__all__ = [
    "CORRUPTIONS",
    "DATASETS",
    "EXTRA_CORRUPTIONS",
    "BatchLoader",
    "DataConfig",
    "DatasetInfo",
    "ImageSet",
    "MixedLoader",
    "Splits",
    "as_tensor",
    "build_train_loader",
    "load_cifar10_1",
    "load_cifar_c",
    "load_generated",
    "load_splits",
    "make_augment",
    "to_float",
]
