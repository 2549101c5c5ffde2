"""The data contract: uint8 image arrays, dataset facts, and the data configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where it lives, how it is split and augmented.

    Attributes:
        name: registered dataset (``digits``, ``cifar10``, ``cifar100``, ``npz``).
        root: directory holding downloaded/extracted files (cifar) .
        path: the ``.npz`` file for ``name: npz``.
        image_key / label_key / test_image_key / test_label_key: npz key names.
        num_classes: for ``npz`` (default: max label + 1).
        val_size: validation split held out of the training set: a fraction in (0, 1)
            or a count >= 1; 0 disables validation.
        split_seed: seed of the stratified train/val split (fixed per run).
        augment: ``auto`` (crop+flip for CIFAR-like data, none for digits), ``none``,
            or ``crop-flip``.
        crop_padding: padding of the random crop.
        download: download CIFAR from the official address when files are absent.
        generated: ``.npz`` files of generated images (``image`` uint8 NHWC, ``label``)
            mixed into every training batch.
        generated_fraction: share of each training batch drawn from ``generated``.
    """

    name: str = "digits"
    root: str = "data"
    path: str | None = None
    image_key: str = "x_train"
    label_key: str = "y_train"
    test_image_key: str = "x_test"
    test_label_key: str = "y_test"
    num_classes: int | None = None
    val_size: float = 0.05
    split_seed: int = 0
    augment: str = "auto"
    crop_padding: int = 4
    download: bool = True
    generated: list[str] = field(default_factory=list)
    generated_fraction: float = 0.7


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
    augment: str  # resolved: "none" or "crop-flip"


@dataclass
class Splits:
    """train / val (held out of train; may be empty) / test, plus dataset facts."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    info: DatasetInfo
