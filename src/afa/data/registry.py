"""The dataset registry and ``load_splits``, the one entry point from a DataConfig to Splits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from afa._registry import Registry
from afa.data.arrays import class_interleaved, holdout_count, stratified_split, subset
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
    function of ``cfg.split_seed``. ``cfg.train_size`` then keeps a stratified subset of the
    rest. ``augment: auto`` resolves to the dataset's default.

    Raises:
        ConfigError: an unknown dataset, augment, val_size or train_size.
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
        # Classes take turns, so a capped validation (the first train.val_examples) is
        # balanced even when the source lists its images class by class.
        held = held[class_interleaved(train.labels[held], cfg.split_seed)]
        train, val = subset(train, keep), subset(train, held)
    if cfg.train_size is not None:
        train = _train_subset(train, cfg.train_size, cfg.split_seed)
    return Splits(train=train, val=val, test=test, info=info)


def _train_subset(train: ImageSet, size: float, seed: int) -> ImageSet:
    """A stratified subset of ``size`` (a fraction in (0, 1] or a count) of ``train``."""
    n = len(train)
    if isinstance(size, bool) or not (
        (isinstance(size, float) and 0 < size <= 1) or (isinstance(size, int) and size >= 1)
    ):
        raise ConfigError(
            f"data.train_size: expected a fraction in (0, 1] or a whole count >= 1, got {size!r}"
        )
    count = int(round(size * n)) if isinstance(size, float) else size
    if count > n:
        raise ConfigError(f"data.train_size={size!r}: only {n} training examples")
    if count == n:
        return train
    _, kept = stratified_split(train.labels, count, seed)
    return subset(train, kept)
