"""data.train_size: a stratified, seeded subset of the training split (val and test untouched)."""

from __future__ import annotations

import numpy as np
import pytest

from afa.data import DataConfig, load_splits
from afa.errors import ConfigError


def _rows(images: np.ndarray) -> set[bytes]:
    return {bytes(x) for x in images}


def test_subset_is_stratified_part_of_train_and_leaves_val_and_test():
    full = load_splits(DataConfig(name="digits", val_size=100))
    small = load_splits(DataConfig(name="digits", val_size=100, train_size=200))
    assert len(small.train) == 200
    np.testing.assert_array_equal(small.val.images, full.val.images)
    np.testing.assert_array_equal(small.test.images, full.test.images)
    assert _rows(small.train.images) <= _rows(full.train.images)
    share = np.bincount(full.train.labels, minlength=10) / len(full.train)
    assert np.all(np.abs(np.bincount(small.train.labels, minlength=10) - 200 * share) < 1)
    again = load_splits(DataConfig(name="digits", val_size=100, train_size=200))
    np.testing.assert_array_equal(again.train.images, small.train.images)
    other = load_splits(DataConfig(name="digits", val_size=100, train_size=200, split_seed=1))
    assert not np.array_equal(other.train.labels, small.train.labels) or not np.array_equal(
        other.train.images, small.train.images
    )


def test_fraction_and_all():
    full = load_splits(DataConfig(name="digits", val_size=0))
    half = load_splits(DataConfig(name="digits", val_size=0, train_size=0.5))
    assert len(half.train) == round(0.5 * len(full.train))
    whole = load_splits(DataConfig(name="digits", val_size=0, train_size=1.0))
    np.testing.assert_array_equal(whole.train.images, full.train.images)


@pytest.mark.parametrize("bad", [0, 1.5, -3, 10**6])
def test_bad_train_size_names_the_key(bad):
    with pytest.raises(ConfigError, match="data.train_size"):
        load_splits(DataConfig(name="digits", val_size=0, train_size=bad))
