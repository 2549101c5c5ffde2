"""CIFAR-10.1 and CIFAR-10-C / CIFAR-100-C: official layouts written by the tests, bad files named."""

from __future__ import annotations

import io
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from afa.data import DataConfig, build_train_loader, load_splits
from afa.data.readers import shift as shift_mod
from afa.data.readers.download import file_md5
from afa.data.readers.shift import (
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    available_corruptions,
    load_cifar10_1,
    load_cifar_c,
)
from afa.errors import ConfigError, DataError

PER = 4  # images per severity in the test files (10,000 in the official ones)


def _corrupted_files(folder: Path, corruptions=("fog", "snow"), per=PER, classes=10) -> dict:
    """``folder/<corruption>.npy`` (5 * per, 32, 32, 3) and ``labels.npy``, as published."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = np.tile(rng.integers(0, classes, per), 5)
    arrays = {}
    for c in corruptions:
        x = rng.integers(0, 256, (5 * per, 32, 32, 3), dtype=np.uint8)
        # Severity s is recognisable: the first pixel's red value is s.
        for s in range(5):
            x[s * per : (s + 1) * per, 0, 0, 0] = s + 1
        np.save(folder / f"{c}.npy", x)
        arrays[c] = x
    np.save(folder / "labels.npy", labels)
    return {"labels": labels, **arrays}


def test_corruption_lists_are_the_published_ones():
    assert len(CORRUPTIONS) == 15 and len(set(CORRUPTIONS)) == 15
    assert set(EXTRA_CORRUPTIONS) == {"speckle_noise", "gaussian_blur", "spatter", "saturate"}
    assert not set(CORRUPTIONS) & set(EXTRA_CORRUPTIONS)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_severity_selects_its_block_of_rows_memory_mapped(tmp_path, severity):
    files = _corrupted_files(tmp_path / "CIFAR-10-C")
    images, labels = load_cifar_c(tmp_path, "fog", severity)
    assert images.shape == (PER, 3, 32, 32) and images.dtype == np.uint8
    assert isinstance(images.base, np.memmap) or isinstance(images, np.memmap)
    rows = slice((severity - 1) * PER, severity * PER)
    np.testing.assert_array_equal(images, files["fog"][rows].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(labels, files["labels"][rows])
    assert labels.dtype == np.int64
    assert np.all(images[:, 0, 0, 0] == severity)


def test_all_severities_and_the_folder_itself_as_root(tmp_path):
    files = _corrupted_files(tmp_path / "CIFAR-10-C")
    images, labels = load_cifar_c(tmp_path / "CIFAR-10-C", "snow")
    assert images.shape == (5 * PER, 3, 32, 32)
    np.testing.assert_array_equal(images, files["snow"].transpose(0, 3, 1, 2))
    assert available_corruptions(tmp_path) == ["snow", "fog"]  # the paper's order


def test_dataset_is_test_only_and_training_refuses_it(tmp_path):
    _corrupted_files(tmp_path / "CIFAR-10-C")
    cfg = DataConfig(name="cifar10-c", root=str(tmp_path), corruption="fog", severity=2)
    splits = load_splits(cfg)
    assert len(splits.train) == 0 and len(splits.val) == 0 and len(splits.test) == PER
    assert splits.info.num_classes == 10 and splits.info.class_names[0] == "airplane"
    assert splits.info.image_shape == (3, 32, 32)
    with pytest.raises(DataError, match="test-only"):
        build_train_loader(splits, cfg, batch_size=2, seed=0)
    with pytest.raises(ConfigError, match="data.corruption"):
        load_splits(DataConfig(name="cifar10-c", root=str(tmp_path)))


def test_cifar100_c_labels_up_to_99(tmp_path):
    _corrupted_files(tmp_path / "CIFAR-100-C", ("contrast",), classes=100)
    splits = load_splits(DataConfig(name="cifar100-c", root=str(tmp_path), corruption="contrast"))
    assert splits.info.num_classes == 100 and splits.info.class_names[-1] == "worm"
    assert len(splits.test) == 5 * PER
    # CIFAR-100 labels are out of range for CIFAR-10-C.
    labels = np.load(tmp_path / "CIFAR-100-C" / "labels.npy")
    labels[:] = 3
    labels[0] = 57
    np.save(tmp_path / "CIFAR-100-C" / "labels.npy", labels)
    (tmp_path / "CIFAR-10-C").mkdir()
    for f in ("contrast.npy", "labels.npy"):
        (tmp_path / "CIFAR-10-C" / f).write_bytes((tmp_path / "CIFAR-100-C" / f).read_bytes())
    with pytest.raises(DataError, match=r"labels\.npy: label 57 is outside \[0, 10\)"):
        load_cifar_c(tmp_path, "contrast")


def test_unknown_corruption_and_severity(tmp_path):
    _corrupted_files(tmp_path / "CIFAR-10-C")
    with pytest.raises(ConfigError, match="'gaussian_nose'"):
        load_cifar_c(tmp_path, "gaussian_nose")
    with pytest.raises(ConfigError, match="severity: expected 1..5"):
        load_cifar_c(tmp_path, "fog", 6)


def test_missing_corruption_file_is_named(tmp_path):
    _corrupted_files(tmp_path / "CIFAR-10-C")
    with pytest.raises(DataError, match=r"frost\.npy: file not found"):
        load_cifar_c(tmp_path, "frost")


def test_absent_folder_says_what_to_put_where(tmp_path):
    with pytest.raises(
        DataError, match=r"CIFAR-10-C\.tar .*zenodo.*56bf5dcef84df0e2308c6dcbcbbd8499"
    ):
        load_cifar_c(tmp_path, "fog")


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((5 * PER, 32, 32), np.uint8), r"expected uint8 images of shape \(N, 32, 32, 3\)"),
        (np.zeros((5 * PER, 32, 32, 3), np.float32), "float32"),
        (np.zeros((5 * PER - 1, 32, 32, 3), np.uint8), "not five equal severities"),
    ],
)
def test_bad_corruption_array_is_named(tmp_path, bad, match):
    folder = tmp_path / "CIFAR-10-C"
    _corrupted_files(folder)
    np.save(folder / "fog.npy", bad)
    with pytest.raises(DataError, match=rf"fog\.npy: .*{match}"):
        load_cifar_c(tmp_path, "fog")


def test_label_count_mismatch_is_named(tmp_path):
    folder = tmp_path / "CIFAR-10-C"
    _corrupted_files(folder)
    np.save(folder / "labels.npy", np.zeros(3 * PER, np.int64))
    with pytest.raises(DataError, match=r"labels\.npy: shape \(12,\) does not match the 20 images"):
        load_cifar_c(tmp_path, "fog")


def test_truncated_and_pickled_npy_are_named(tmp_path):
    folder = tmp_path / "CIFAR-10-C"
    _corrupted_files(folder)
    raw = (folder / "fog.npy").read_bytes()
    (folder / "fog.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"fog\.npy: not a readable \.npy file"):
        load_cifar_c(tmp_path, "fog")
    np.save(folder / "snow.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"snow\.npy: not a readable \.npy file"):
        load_cifar_c(tmp_path, "snow")


def test_tarball_is_checked_and_extracted(tmp_path, monkeypatch):
    src = tmp_path / "src"
    files = _corrupted_files(src / "CIFAR-10-C")
    tar = tmp_path / "root" / "CIFAR-10-C.tar"
    tar.parent.mkdir()
    with tarfile.open(tar, "w") as tf:
        tf.add(src / "CIFAR-10-C", arcname="CIFAR-10-C")
    with pytest.raises(DataError, match=r"CIFAR-10-C\.tar: md5 .* does not match"):
        load_cifar_c(tar.parent, "fog")
    real_md5 = file_md5(tar)
    spec = shift_mod.CORRUPTED_SPECS["cifar10-c"]
    monkeypatch.setitem(
        shift_mod.CORRUPTED_SPECS,
        "cifar10-c",
        shift_mod.CorruptedSpec(**{**spec.__dict__, "md5": real_md5}),
    )
    images, _ = load_cifar_c(tar.parent, "fog", 1)
    np.testing.assert_array_equal(images, files["fog"][:PER].transpose(0, 3, 1, 2))
    assert (tar.parent / "CIFAR-10-C" / "labels.npy").is_file()


def test_tarball_member_escaping_the_root_is_refused(tmp_path, monkeypatch):
    tar = tmp_path / "CIFAR-10-C.tar"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    monkeypatch.setattr(shift_mod, "check_md5", lambda *a: None)
    with pytest.raises(DataError, match="could not be extracted"):
        load_cifar_c(tmp_path, "fog")
    assert not (tmp_path.parent / "evil.txt").exists()


# ---------------------------------------------------------------------------------------------
# CIFAR-10.1


def _cifar10_1_files(root: Path, version="v6", n=None) -> tuple[np.ndarray, np.ndarray]:
    n = n or shift_mod.CIFAR10_1_SIZES[version]
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int64)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / f"cifar10.1_{version}_data.npy", x)
    np.save(root / f"cifar10.1_{version}_labels.npy", y)
    return x, y


@pytest.mark.parametrize("version, n", [("v6", 2000), ("v4", 2021)])
def test_cifar10_1_versions(tmp_path, version, n):
    x, y = _cifar10_1_files(tmp_path, version)
    images, labels = load_cifar10_1(tmp_path, version)
    assert images.shape == (n, 3, 32, 32)
    np.testing.assert_array_equal(images, x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(labels, y)


def test_cifar10_1_dataset_is_a_test_set_for_cifar10_models(tmp_path):
    _cifar10_1_files(tmp_path)
    cfg = DataConfig(name="cifar10.1", root=str(tmp_path))
    splits = load_splits(cfg)
    assert len(splits.test) == 2000 and len(splits.train) == 0
    assert splits.info.class_names == shift_mod.CIFAR10_CLASSES
    assert splits.info.mean == shift_mod.CIFAR_SPECS["cifar10"].mean
    with pytest.raises(DataError, match=r"data.name=cifar10.1: a test-only dataset"):
        build_train_loader(splits, cfg, batch_size=8, seed=0)


def test_cifar10_1_bad_files(tmp_path):
    with pytest.raises(DataError, match=r"cifar10\.1_v6_data\.npy: file not found.*modestyachts"):
        load_cifar10_1(tmp_path)
    with pytest.raises(ConfigError, match="version"):
        load_cifar10_1(tmp_path, "v5")
    _cifar10_1_files(tmp_path, "v6", n=1999)
    with pytest.raises(DataError, match=r"v6_data\.npy: expected uint8 images of shape \(2000"):
        load_cifar10_1(tmp_path)
    _cifar10_1_files(tmp_path)
    np.save(tmp_path / "cifar10.1_v6_labels.npy", np.zeros(7, np.int64))
    with pytest.raises(DataError, match=r"v6_labels\.npy: shape \(7,\) does not match the 2000"):
        load_cifar10_1(tmp_path)
    np.save(tmp_path / "cifar10.1_v6_labels.npy", np.full(2000, 10))
    with pytest.raises(DataError, match=r"v6_labels\.npy: label 10 is outside"):
        load_cifar10_1(tmp_path)


def test_cifar10_1_download_keeps_the_official_address(tmp_path, monkeypatch):
    x, y = _cifar10_1_files(tmp_path / "src")
    asked = []

    def fake_urlopen(url, timeout):
        asked.append(url)
        name = url.rsplit("/", 1)[1]
        return io.BytesIO((tmp_path / "src" / name).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    images, labels = load_cifar10_1(tmp_path / "dl", download=True)
    assert asked == [
        "https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/cifar10.1_v6_data.npy",
        "https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/cifar10.1_v6_labels.npy",
    ]
    np.testing.assert_array_equal(labels, y)

    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="downloading .* failed .*no network"):
        load_cifar10_1(tmp_path / "none", download=True)
    assert not list((tmp_path / "none").glob("*.npy"))
