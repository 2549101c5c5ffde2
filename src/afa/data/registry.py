"""The dataset registry and ``load_splits``, the one entry point from a DataConfig to Splits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from afa._registry import Registry
from afa.data.arrays import holdout_count, stratified_split, subset
from afa.data.base import DataConfig, DatasetInfo, ImageSet, Splits
from afa.errors import ConfigError

# A dataset factory reads the files named by the config and returns (train, test, info), where
# ``info.augment`` is the dataset's own choice for ``augment: auto``. load_splits does the rest.
DatasetFactory = Callable[[DataConfig], tuple[ImageSet, ImageSet, DatasetInfo]]

DATASETS: Registry[DatasetFactory] = Registry("dataset")

AUGMENTS = ("none", "crop-flip", "contrastive")


def load_splits(cfg: DataConfig) -> Splits:
    """Load the dataset named by ``cfg.name`` and split a validation set off its training set.

    The validation set is stratified, held out of the training set (never the test set), of size
    ``cfg.val_size`` (a fraction in (0, 1), a count >= 1, or 0 for an empty set) and a pure
    function of ``cfg.split_seed``. ``augment: auto`` resolves to the dataset's default.

    Raises:
        ConfigError: an unknown dataset, augment or val_size.
        DataError: a missing, corrupted or inconsistent data file (the message names it).
    """
    factory = DATASETS.get(cfg.name)
    if cfg.augment != "auto" and cfg.augment not in AUGMENTS:
        raise ConfigError(
            f"augment: expected one of auto, {', '.join(AUGMENTS)}; got {cfg.augment!r}"
        )
    train, test, info = factory(cfg)
    if cfg.augment != "auto":
        info = dataclasses.replace(info, augment=cfg.augment)
    # A test-only dataset (cifar10.1, cifar10-c) has no training set to hold a split out of.
    count = holdout_count(cfg.val_size, len(train), "val_size") if len(train) else 0
    if count == 0:
        # No copy: a memory-mapped training set stays memory-mapped.
        val = ImageSet(
            images=np.empty((0, *info.image_shape), np.uint8), labels=np.empty(0, np.int64)
        )
    else:
        keep, held = stratified_split(train.labels, count, cfg.split_seed)
        train, val = subset(train, keep), subset(train, held)
    return Splits(train=train, val=val, test=test, info=info)
