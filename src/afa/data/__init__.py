"""L1 data: datasets as uint8 arrays, splits, batch loading and on-device augmentation.

Typical use::

    splits = load_splits(DataConfig(name="cifar10", root="data"))
    loader = build_train_loader(splits, cfg, batch_size=128, seed=0)
    augment = make_augment(splits.info, cfg.crop_padding)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader:                      # uint8 (B, C, H, W) on the CPU
            x = augment(to_float(x, device))     # float32 in [0, 1] on the device

The contract every dataset builds on is at the top: ``base`` (``DataConfig``, ``ImageSet``,
``DatasetInfo``, ``Splits``), ``registry`` (``DATASETS``, ``load_splits``) and ``arrays``
(splitting, channel statistics, label checks). ``readers/`` turns files into arrays (one
module per dataset, the generated data, downloading), ``pipeline/`` turns splits into
batches and picks a trained model's test set, ``transforms/`` changes images (augmentation
on the device, the common corruptions).
"""

from afa.data import readers  # noqa: F401  (registers the datasets)
from afa.data.base import DataConfig, DatasetInfo, ImageSet, Splits
from afa.data.pipeline.loader import BatchLoader, MixedLoader, as_tensor, build_train_loader
from afa.data.readers.generated import load_generated
from afa.data.readers.shift import CORRUPTIONS, EXTRA_CORRUPTIONS, load_cifar10_1, load_cifar_c
from afa.data.registry import DATASETS, load_splits
from afa.data.transforms.augment import make_augment, to_float

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
