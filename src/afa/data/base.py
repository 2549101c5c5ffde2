"""The data contract: uint8 image arrays, dataset facts, and the data configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from afa.data.transforms.contrastive_augment import ContrastiveAugmentConfig
from afa.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where it lives, how it is split and augmented.

    Attributes:
        name: registered dataset (``digits``, ``cifar10``, ``cifar100``, ``npz``,
            ``imagefolder``, ``tiny-imagenet``, ``cifar10.1``, ``cifar10-c``, ``cifar100-c``).
        root: directory holding downloaded/extracted files (cifar, tiny-imagenet, cifar10.1,
            cifar10-c), or the ``imagefolder`` root (a folder, ``.tar(.gz)`` or ``.zip``).
        path: the ``.npz`` file for ``name: npz``.
        image_key / label_key / test_image_key / test_label_key: npz key names.
        num_classes: for ``npz`` (default: max label + 1).
        val_size: validation split held out of the training set: a fraction in (0, 1)
            or a count >= 1; 0 disables validation.
        split_seed: seed of the stratified train/val split (fixed per run).
        augment: ``auto`` (crop+flip for CIFAR-like data, none for digits), ``none``,
            ``crop-flip``, or ``contrastive`` (SimCLR's strong augmentation with a strength
            schedule, for contrastive pre-training; a later classifier stage uses crop+flip).
        crop_padding: padding of the random crop.
        contrastive: options of ``augment: contrastive`` (crop scale, jitter, strength
            schedule).
        download: download CIFAR from the official address when files are absent.
        generated: ``.npz`` files of generated images (``image`` uint8 NHWC, ``label``)
            mixed into every training batch.
        generated_fraction: share of each training batch drawn from ``generated``.
        image_size: ``imagefolder``: the height and width of every image (null: the first
            image's size, which every other image must then have).
        resize: ``imagefolder``: resize images of another size to ``image_size`` (bilinear)
            instead of refusing them.
        color: ``imagefolder``: ``rgb`` or ``grayscale`` (images are converted to it).
        test_size: ``imagefolder`` without a ``test/`` or ``val/`` folder: the stratified test
            split carved out of ``train/`` with a fixed seed (a fraction or a count; null: 0.1).
        cache_dir: where decoded image caches go (null: beside the data).
        corruption / severity: ``cifar10-c`` / ``cifar100-c``: which corruption, and severity
            1..5 (null: all five).
        version: ``cifar10.1``: ``v6`` (2,000 images) or ``v4`` (2,021).
        train_size: keep only a stratified subset of the training split (after val is held
            out; seeded by ``split_seed``): a fraction in (0, 1] or a count; null keeps all.
            For smoke runs and quick measurements.
    """

    name: str = "digits"
    root: str = "data"
    path: str | None = None
    image_key: str = "x_train"
    label_key: str = "y_train"
    test_image_key: str = "x_test"
    test_label_key: str = "y_test"
    num_classes: int | None = None
    val_size: int | float = 0.05
    split_seed: int = 0
    augment: str = "auto"
    crop_padding: int = 4
    contrastive: ContrastiveAugmentConfig = field(default_factory=ContrastiveAugmentConfig)
    download: bool = True
    generated: list[str] = field(default_factory=list)
    generated_fraction: float = 0.7
    image_size: int | None = None
    resize: bool = False
    color: Literal["rgb", "grayscale"] = "rgb"
    test_size: int | float | None = None
    cache_dir: str | None = None
    corruption: str | None = None
    severity: int | None = None
    version: str = "v6"
    train_size: int | float | None = None

    def __post_init__(self) -> None:
        # A fraction in (0, 1) or a whole count. A whole float such as 1000.0 passes here:
        # earlier versions stored every val_size as a float, and their runs must still load;
        # `afa train` refuses one typed by the user (afa.cli.checks.check_val_size).
        v = self.val_size
        if isinstance(v, bool) or not (v == 0 or 0 < v < 1 or (v >= 1 and float(v).is_integer())):
            raise ConfigError(
                "data.val_size: expected 0, a fraction in (0, 1) such as 0.1, or a whole "
                f"count >= 1 such as 500, got {v!r}"
            )
        if not 0 <= self.generated_fraction <= 1:
            raise ConfigError(
                f"data.generated_fraction: expected a fraction in [0, 1], "
                f"got {self.generated_fraction!r}"
            )
        if self.crop_padding < 0:
            raise ConfigError(f"data.crop_padding: expected >= 0, got {self.crop_padding!r}")


@dataclass
class ImageSet:
    """Images and labels. ``images`` may be a read-only memory map.

    Shape:
        images: (N, C, H, W) uint8; labels: (N,) int64.
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class DatasetInfo:
    """Facts a model and a report need about a dataset."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    augment: str  # resolved: "none", "crop-flip" or "contrastive"


@dataclass
class Splits:
    """train / val (held out of train; may be empty) / test, plus dataset facts."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    info: DatasetInfo
