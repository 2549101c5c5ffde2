"""Datasets and splits: digits, CIFAR (folder, tarball, download, corruption), npz, val split."""

from __future__ import annotations

import dataclasses
import io
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cifar_files import synthetic_images, write_cifar_like  # tests/cifar_files.py

from afa.data import DATASETS, DataConfig, load_splits
from afa.data.arrays import holdout_count, stratified_split
from afa.data.readers import cifar as cifar_mod
from afa.errors import ConfigError, DataError

# ---------------------------------------------------------------------------------------------
# stratified splits


@pytest.mark.parametrize("count", [0, 1, 7, 50, 99])
def test_stratified_split_exact_disjoint_and_proportional(count):
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    keep, held = stratified_split(labels, count, seed=3)
    assert len(held) == count
    assert len(np.intersect1d(keep, held)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([keep, held])), np.arange(100))
    per_class = np.bincount(labels[held], minlength=4)
    # Each class gives up its proportional share, rounded one way or the other.
    assert np.all(np.abs(per_class - count * np.array([10, 20, 30, 40]) / 100) < 1)


def test_stratified_split_is_a_function_of_the_seed():
    labels = np.arange(200) % 5
    a = stratified_split(labels, 40, seed=1)[1]
    b = stratified_split(labels, 40, seed=1)[1]
    c = stratified_split(labels, 40, seed=2)[1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_holdout_count():
    assert holdout_count(0, 100) == 0
    assert holdout_count(0.1, 100) == 10
    assert holdout_count(25, 100) == 25
    assert holdout_count(25.0, 100) == 25
    for bad in (-0.1, 1.5, 100, 1000):
        with pytest.raises(ConfigError, match="val_size"):
            holdout_count(bad, 100)


# ---------------------------------------------------------------------------------------------
# registry and load_splits


def test_registry_names_and_unknown_dataset():
    assert {"digits", "cifar10", "cifar100", "npz"} <= set(DATASETS.names())
    with pytest.raises(ConfigError, match="did you mean 'cifar10'"):
        load_splits(DataConfig(name="cifra10"))


def test_unknown_augment_is_a_config_error():
    with pytest.raises(ConfigError, match="augment"):
        load_splits(DataConfig(name="digits", augment="mixup"))


def test_digits():
    splits = load_splits(DataConfig(name="digits", val_size=0.1, split_seed=0))
    info = splits.info
    assert info.num_classes == 10 and info.image_shape == (1, 8, 8)
    assert info.class_names == tuple(str(i) for i in range(10))
    assert info.augment == "none"
    assert len(splits.test) == 449  # round(0.25 * 1797)
    n_train = 1797 - 449
    assert len(splits.val) == round(0.1 * n_train)
    assert len(splits.train) + len(splits.val) == n_train
    for part in (splits.train, splits.val, splits.test):
        assert part.images.dtype == np.uint8 and part.images.shape[1:] == (1, 8, 8)
        assert part.labels.dtype == np.int64
    # 0..16 scaled to 0..255.
    assert splits.train.images.max() == 255 and splits.train.images.min() == 0
    assert set(np.unique(splits.train.images)) <= {round(v * 255 / 16) for v in range(17)}
    # Stats from the training images (train + val, the official training portion).
    train_all = np.concatenate([splits.train.images, splits.val.images]) / 255.0
    assert info.mean[0] == pytest.approx(train_all.mean(), abs=1e-6)
    assert info.std[0] == pytest.approx(train_all.std(), abs=1e-6)
    # Stratified val: every class present in proportion.
    assert np.bincount(splits.val.labels, minlength=10).min() >= 12


def test_digits_test_split_is_fixed_and_val_follows_split_seed():
    a = load_splits(DataConfig(name="digits", split_seed=0))
    b = load_splits(DataConfig(name="digits", split_seed=1))
    c = load_splits(DataConfig(name="digits", split_seed=0))
    np.testing.assert_array_equal(a.test.images, b.test.images)
    np.testing.assert_array_equal(a.val.images, c.val.images)
    assert not np.array_equal(a.val.images, b.val.images)

    # The val set comes out of train (same multiset of train + val), never out of test.
    def pool(s):
        return np.sort(np.concatenate([s.train.labels, s.val.labels]))

    np.testing.assert_array_equal(pool(a), pool(b))


def test_val_size_count_and_zero_and_augment_override():
    s = load_splits(DataConfig(name="digits", val_size=100, augment="crop-flip"))
    assert len(s.val) == 100 and s.info.augment == "crop-flip"
    s = load_splits(DataConfig(name="digits", val_size=0))
    assert len(s.val) == 0 and s.val.images.shape == (0, 1, 8, 8)
    assert len(s.train) == 1797 - 449


# ---------------------------------------------------------------------------------------------
# CIFAR


def _cfg(root: Path, name: str = "cifar10", **kw) -> DataConfig:
    kw.setdefault("val_size", 0)
    return DataConfig(name=name, root=str(root), download=False, **kw)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_folder_round_trip(tmp_path, name):
    out = write_cifar_like(tmp_path, name, n_train=230, n_test=120, seed=5)
    assert out == tmp_path / cifar_mod.SPECS[name].folder
    splits = load_splits(_cfg(tmp_path, name))
    num_classes = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(5)
    x_train, y_train = synthetic_images(230, num_classes, rng)
    x_test, y_test = synthetic_images(120, num_classes, rng)
    np.testing.assert_array_equal(splits.train.images, x_train)
    np.testing.assert_array_equal(splits.train.labels, y_train)
    np.testing.assert_array_equal(splits.test.images, x_test)
    np.testing.assert_array_equal(splits.test.labels, y_test)
    info = splits.info
    assert info.num_classes == num_classes and info.image_shape == (3, 32, 32)
    assert info.class_names[:2] == ("class_0", "class_1") and len(info.class_names) == num_classes
    assert info.augment == "crop-flip"
    assert info.mean == cifar_mod.SPECS[name].mean


def test_cifar_pixel_layout_is_channel_planes_row_major(tmp_path):
    """The official rows are 1024 red, 1024 green, 1024 blue bytes, each plane row-major."""
    write_cifar_like(tmp_path, "cifar10", n_train=10, n_test=10, seed=0)
    row = np.zeros(3072, np.uint8)
    row[:1024] = 200  # red plane
    row[1024 + 1] = 7  # green, row 0, column 1
    row[2048 + 32] = 9  # blue, row 1, column 0
    batch = {b"data": np.stack([row, row]), b"labels": [3, 4]}
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    img = load_splits(_cfg(tmp_path)).train.images[0]
    assert (img[0] == 200).all()
    assert img[1, 0, 1] == 7 and img[1].sum() == 7
    assert img[2, 1, 0] == 9 and img[2].sum() == 9


def _use_md5_of(monkeypatch, path: Path, name: str = "cifar10") -> None:
    spec = dataclasses.replace(cifar_mod.SPECS[name], md5=cifar_mod.file_md5(path))
    monkeypatch.setitem(cifar_mod.SPECS, name, spec)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_tarball_round_trip(tmp_path, monkeypatch, name):
    tar_root, dir_root = tmp_path / "tar", tmp_path / "dir"
    tarball = write_cifar_like(tar_root, name, n_train=120, n_test=40, seed=1, tarball=True)
    assert tarball.name == cifar_mod.SPECS[name].tarball
    write_cifar_like(dir_root, name, n_train=120, n_test=40, seed=1)
    _use_md5_of(monkeypatch, tarball, name)
    from_tar = load_splits(_cfg(tar_root, name, val_size=0.25))
    from_dir = load_splits(_cfg(dir_root, name, val_size=0.25))
    assert from_tar.train.images.shape == (90, 3, 32, 32) and len(from_tar.val) == 30
    assert from_tar.test.images.shape == (40, 3, 32, 32)
    for a, b in (
        (from_tar.train, from_dir.train),
        (from_tar.val, from_dir.val),
        (from_tar.test, from_dir.test),
    ):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert from_tar.info == from_dir.info


def test_cifar_tarball_with_the_wrong_md5(tmp_path):
    tarball = write_cifar_like(tmp_path, "cifar10", n_train=20, n_test=10, tarball=True)
    with pytest.raises(DataError, match="md5") as err:
        load_splits(_cfg(tmp_path))
    assert str(tarball) in str(err.value) and "c58f30108f718f92721af3b95e74349a" in str(err.value)


def test_truncated_tarball_with_matching_md5(tmp_path, monkeypatch):
    tarball = write_cifar_like(tmp_path, "cifar10", n_train=20, n_test=10, tarball=True)
    tarball.write_bytes(tarball.read_bytes()[:-300])
    _use_md5_of(monkeypatch, tarball)
    with pytest.raises(DataError, match=str(tarball)):
        load_splits(_cfg(tmp_path))


def test_tarball_missing_a_member(tmp_path, monkeypatch):
    tarball = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        blob = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})
        member = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        member.size = len(blob)
        archive.addfile(member, io.BytesIO(blob))
    _use_md5_of(monkeypatch, tarball)
    with pytest.raises(DataError, match="missing member.*test_batch"):
        load_splits(_cfg(tmp_path))


def test_truncated_pickle_names_the_file(tmp_path):
    folder = write_cifar_like(tmp_path, "cifar10", n_train=50, n_test=10)
    victim = folder / "data_batch_3"
    victim.write_bytes(victim.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated") as err:
        load_splits(_cfg(tmp_path))
    assert str(victim) in str(err.value)


def test_label_out_of_range_names_the_file(tmp_path):
    folder = write_cifar_like(tmp_path, "cifar100", n_train=50, n_test=10)
    victim = folder / "test"
    batch = pickle.loads(victim.read_bytes(), encoding="bytes")
    batch[b"fine_labels"][4] = 100
    victim.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"label 100 is outside \[0, 100\)") as err:
        load_splits(_cfg(tmp_path, "cifar100"))
    assert str(victim) in str(err.value)


def test_images_and_labels_of_different_length(tmp_path):
    folder = write_cifar_like(tmp_path, "cifar10", n_train=50, n_test=10)
    victim = folder / "test_batch"
    batch = pickle.loads(victim.read_bytes(), encoding="bytes")
    batch[b"labels"] = batch[b"labels"][:-1]
    victim.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="10 images but 9 labels") as err:
        load_splits(_cfg(tmp_path))
    assert str(victim) in str(err.value)


def test_missing_file_in_the_folder(tmp_path):
    folder = write_cifar_like(tmp_path, "cifar10", n_train=50, n_test=10)
    (folder / "batches.meta").unlink()
    with pytest.raises(DataError, match="batches.meta: file not found"):
        load_splits(_cfg(tmp_path))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    folder = write_cifar_like(tmp_path, "cifar10", n_train=50, n_test=10)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match="unexpected object .*print"):
        load_splits(_cfg(tmp_path))


def test_absent_without_download_says_where_to_put_what(tmp_path):
    with pytest.raises(DataError) as err:
        load_splits(_cfg(tmp_path / "nothing"))
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and cifar_mod.SPECS["cifar10"].url in msg
    assert str(tmp_path / "nothing") in msg


def test_offline_download_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as err:
        load_splits(DataConfig(name="cifar100", root=str(tmp_path), download=True))
    msg = str(err.value)
    assert "cifar-100-python.tar.gz" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in msg
    assert str(tmp_path) in msg and "name resolution" in msg
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_lands_atomically_and_is_checked(tmp_path, monkeypatch):
    blob = write_cifar_like(tmp_path / "src", "cifar10", 30, 10, seed=2, tarball=True).read_bytes()
    _use_md5_of(monkeypatch, tmp_path / "src" / "cifar-10-python.tar.gz")
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        return _FakeResponse(blob)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    root = tmp_path / "root"
    splits = load_splits(DataConfig(name="cifar10", root=str(root), download=True, val_size=0))
    assert urls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert len(splits.train) == 30 and len(splits.test) == 10
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]
    # A corrupted download is refused and leaves nothing behind.
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _FakeResponse(blob[:-10]))
    other = tmp_path / "other"
    with pytest.raises(DataError, match="downloaded file has md5"):
        load_splits(DataConfig(name="cifar10", root=str(other), download=True))
    assert list(other.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# npz


def _images(n, layout="nchw", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8)
    return x if layout == "nchw" else x.transpose(0, 2, 3, 1).copy(), x


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_npz_layouts_and_memory_map(tmp_path, layout):
    stored, x = _images(60, layout)
    stored_test, x_test = _images(20, layout, seed=1)
    y, y_test = np.arange(60) % 4, np.arange(20) % 4
    path = tmp_path / "d.npz"
    np.savez(path, x_train=stored, y_train=y, x_test=stored_test, y_test=y_test)
    splits = load_splits(DataConfig(name="npz", path=str(path), val_size=0))
    np.testing.assert_array_equal(splits.train.images, x)
    np.testing.assert_array_equal(splits.test.images, x_test)
    np.testing.assert_array_equal(splits.train.labels, y)
    # Uncompressed and no split copies: the arrays stay memory-mapped.
    assert isinstance(splits.train.images.base, np.memmap) or isinstance(
        splits.train.images, np.memmap
    )
    info = splits.info
    assert info.num_classes == 4 and info.image_shape == (3, 8, 8) and info.augment == "crop-flip"
    assert info.mean == pytest.approx(tuple((x / 255.0).mean(axis=(0, 2, 3))), abs=1e-9)
    assert info.std == pytest.approx(tuple((x / 255.0).std(axis=(0, 2, 3))), abs=1e-9)


def test_npz_compressed_custom_keys_and_num_classes(tmp_path):
    _, x = _images(40)
    path = tmp_path / "c.npz"
    np.savez_compressed(path, imgs=x, labs=np.arange(40) % 3, timgs=x[:10], tlabs=np.zeros(10, int))
    cfg = DataConfig(
        name="npz",
        path=str(path),
        image_key="imgs",
        label_key="labs",
        test_image_key="timgs",
        test_label_key="tlabs",
        num_classes=7,
        val_size=0.25,
    )
    splits = load_splits(cfg)
    assert splits.info.num_classes == 7 and len(splits.val) == 10 and len(splits.test) == 10


def test_npz_without_test_keys_carves_a_fixed_test_split(tmp_path):
    _, x = _images(100)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=np.arange(100) % 5)
    with pytest.warns(UserWarning, match="holding out a fixed stratified 10%"):
        a = load_splits(DataConfig(name="npz", path=str(path), val_size=0, split_seed=0))
    with pytest.warns(UserWarning):
        b = load_splits(DataConfig(name="npz", path=str(path), val_size=0, split_seed=9))
    assert len(a.test) == 10 and len(a.train) == 90
    assert np.bincount(a.test.labels).tolist() == [2] * 5
    np.testing.assert_array_equal(a.test.images, b.test.images)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (
            {"x_train": np.zeros((4, 3, 8, 8), np.float32), "y_train": np.zeros(4, int)},
            r"'x_train'.*uint8",
        ),
        ({"x_train": np.zeros((4, 3, 8, 8), np.uint8), "y_train": np.zeros(5, int)}, "4 images"),
        (
            {"x_train": np.zeros((4, 5, 8, 8), np.uint8), "y_train": np.zeros(4, int)},
            "channel dimension",
        ),
        (
            {"images": np.zeros((4, 3, 8, 8), np.uint8), "y_train": np.zeros(4, int)},
            r"no array 'x_train'; the file holds \['images', 'y_train'\]",
        ),
        (
            {
                "x_train": np.zeros((4, 3, 8, 8), np.uint8),
                "y_train": np.array([0, 1, -1, 0]),
                "x_test": np.zeros((1, 3, 8, 8), np.uint8),
                "y_test": np.zeros(1, int),
            },
            r"'y_train'.*label -1",
        ),
        (
            {
                "x_train": np.zeros((4, 3, 8, 8), np.uint8),
                "y_train": np.zeros(4, int),
                "x_test": np.zeros((1, 3, 8, 8), np.uint8),
            },
            "holds 'x_test' but not 'y_test'",
        ),
    ],
)
def test_npz_errors_name_the_file_and_key(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as err:
        load_splits(DataConfig(name="npz", path=str(path), val_size=0))
    assert str(path) in str(err.value)


def test_npz_label_outside_configured_num_classes(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=np.zeros((4, 3, 8, 8), np.uint8),
        y_train=np.array([0, 1, 2, 3]),
        x_test=np.zeros((1, 3, 8, 8), np.uint8),
        y_test=np.zeros(1, int),
    )
    with pytest.raises(DataError, match=r"label 3 is outside \[0, 3\)"):
        load_splits(DataConfig(name="npz", path=str(path), num_classes=3, val_size=0))


def test_npz_needs_a_path_and_an_existing_file(tmp_path):
    with pytest.raises(ConfigError, match="path"):
        load_splits(DataConfig(name="npz"))
    with pytest.raises(DataError, match="file not found"):
        load_splits(DataConfig(name="npz", path=str(tmp_path / "none.npz")))
