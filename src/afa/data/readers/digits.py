"""scikit-learn's embedded 8x8 digits: a tiny real dataset that needs no download."""

from __future__ import annotations

import numpy as np

from afa.data.arrays import channel_stats, stratified_split
from afa.data.base import DataConfig, DatasetInfo, ImageSet
from afa.data.registry import DATASETS

TEST_FRACTION = 0.25
# Fixed, independent of cfg.split_seed: the test set is the same in every run.
TEST_SEED = 20240101


@DATASETS.register("digits")
def load_digits(cfg: DataConfig) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """1,797 grey 8x8 digits, pixel values 0..16 scaled to uint8 0..255, shape (N, 1, 8, 8).

    A fixed stratified 25% test split; mean/std from the training images; augment auto = none
    (flipping a digit changes what it is).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(
        labels, int(round(TEST_FRACTION * len(labels))), TEST_SEED
    )
    train = ImageSet(images=images[train_idx], labels=labels[train_idx])
    test = ImageSet(images=images[test_idx], labels=labels[test_idx])
    mean, std = channel_stats(train.images)
    info = DatasetInfo(
        name="digits",
        num_classes=10,
        image_shape=(1, 8, 8),
        mean=mean,
        std=std,
        class_names=tuple(str(i) for i in range(10)),
        augment="none",
    )
    return train, test, info
