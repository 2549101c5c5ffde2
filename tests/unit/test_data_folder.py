"""imagefolder: class-per-folder images (folder, .tar.gz, .zip), decoded once into a checked cache."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from afa.data import DataConfig, load_splits
from afa.data import folder as folder_mod
from afa.data.arrays import class_interleaved
from afa.errors import ConfigError, DataError

CLASSES = ("zebra", "ant", "cat")  # written unsorted: the labels follow the sorted names


def _write_layout(root: Path, counts=None, size=(8, 6), fmt="png", seed=0) -> dict:
    """``root/<split>/<class>/<k>.<fmt>`` with random pixels; returns the arrays written, in
    the expected (sorted) order, per split."""
    counts = counts or {"train": 5, "test": 2}
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in counts.items():
        images, labels = [], []
        for label, cls in enumerate(sorted(CLASSES)):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                x = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
                path = d / f"{k:03d}.{fmt}"
                Image.fromarray(x).save(path)
                # JPEG is lossy: compare against what Pillow decodes.
                images.append(np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1))
                labels.append(label)
        out[split] = (np.stack(images), np.array(labels))
    return out


def _cfg(root, tmp_path, **kw) -> DataConfig:
    kw.setdefault("val_size", 0)
    return DataConfig(name="imagefolder", root=str(root), cache_dir=str(tmp_path / "cache"), **kw)


def test_folder_layout_labels_pixels_and_memory_map(tmp_path):
    written = _write_layout(tmp_path / "ds")
    splits = load_splits(_cfg(tmp_path / "ds", tmp_path))
    assert splits.info.class_names == ("ant", "cat", "zebra")
    assert splits.info.image_shape == (3, 8, 6) and splits.info.augment == "crop-flip"
    # the test split comes with its classes taking turns (class_interleaved), train as listed
    test_x, test_y = written["test"]
    order = class_interleaved(test_y, folder_mod.CARVED_TEST_SEED)
    expected = {"train": written["train"], "test": (test_x[order], test_y[order])}
    for part, (x, y) in expected.items():
        data = getattr(splits, part)
        np.testing.assert_array_equal(data.images, x)
        np.testing.assert_array_equal(data.labels, y)
    assert sorted(splits.test.labels[:3]) == [0, 1, 2]  # the first 3 hold every class
    assert isinstance(splits.train.images, np.memmap)
    mean = written["train"][0].astype(np.float64).mean(axis=(0, 2, 3)) / 255
    np.testing.assert_allclose(splits.info.mean, mean, rtol=1e-9)


def test_default_cache_sits_beside_the_data(tmp_path):
    _write_layout(tmp_path / "ds")
    load_splits(DataConfig(name="imagefolder", root=str(tmp_path / "ds"), val_size=0))
    assert len(list((tmp_path / "ds.afa-cache").glob("imagefolder-*.npz"))) == 1


def _tar(src: Path, dest: Path, arcname: str) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(src, arcname=arcname)
    return dest


def _zip(src: Path, dest: Path, prefix: str) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, f"{prefix}{p.relative_to(src).as_posix()}")
    return dest


@pytest.mark.parametrize("kind", ["tar-top", "tar-nested", "zip-nested"])
def test_archives_read_in_place_give_the_same_arrays(tmp_path, kind):
    written = _write_layout(tmp_path / "ds", fmt="jpg")
    if kind == "tar-top":
        archive = _tar(tmp_path / "ds" / "train", tmp_path / "a.tar.gz", "train")
    elif kind == "tar-nested":
        archive = _tar(tmp_path / "ds", tmp_path / "a.tar.gz", "my-data")
    else:
        archive = _zip(tmp_path / "ds", tmp_path / "a.zip", "my-data/")
    with pytest.warns(UserWarning) if kind == "tar-top" else _nothing():
        splits = load_splits(_cfg(archive, tmp_path))
    if kind == "tar-top":  # train only: the test set is carved out of it
        assert len(splits.train) + len(splits.test) == 15
    else:
        np.testing.assert_array_equal(splits.train.images, written["train"][0])
        y = written["test"][1]
        np.testing.assert_array_equal(splits.test.labels, y[_turns(y)])


def _turns(labels: np.ndarray) -> np.ndarray:
    """The order the test split comes in: classes taking turns."""
    return class_interleaved(labels, folder_mod.CARVED_TEST_SEED)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_cache_is_reused_and_a_changed_folder_is_decoded_again(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    _write_layout(root)
    cfg = _cfg(root, tmp_path)
    load_splits(cfg)
    cache = next((tmp_path / "cache").glob("*.npz"))
    stamp = cache.stat().st_mtime_ns

    def no_decoding(*a, **k):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(folder_mod, "decode_image", no_decoding)
    assert len(load_splits(cfg).train) == 15
    assert cache.stat().st_mtime_ns == stamp
    monkeypatch.undo()

    path = root / "train" / "ant" / "new.ppm"  # raw pixels: the file size is fixed
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(path)
    splits = load_splits(cfg)
    assert len(splits.train) == 16
    assert np.all(splits.train.images[5] == 0)  # ant/new.ppm sorts after ant/004.png
    # Same size, new content, new mtime: decoded again too.
    size = path.stat().st_size
    Image.fromarray(np.full((8, 6, 3), 7, np.uint8)).save(path)
    os.utime(path, ns=(stamp, stamp + 10**9))
    assert path.stat().st_size == size
    assert np.all(load_splits(cfg).train.images[5] == 7)


def test_a_corrupt_cache_is_rebuilt(tmp_path):
    root = tmp_path / "ds"
    written = _write_layout(root)
    cfg = _cfg(root, tmp_path)
    load_splits(cfg)
    cache = next((tmp_path / "cache").glob("*.npz"))
    cache.write_bytes(cache.read_bytes()[:100])
    np.testing.assert_array_equal(load_splits(cfg).train.images, written["train"][0])


def test_resize_or_refuse(tmp_path):
    root = tmp_path / "ds"
    _write_layout(root, size=(8, 8))
    odd = root / "train" / "cat" / "odd.png"
    big = np.random.default_rng(5).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(big).save(odd)
    with pytest.raises(DataError, match=r"odd\.png: image is 12x10 \(HxW\), expected 8x8.*resize"):
        load_splits(_cfg(root, tmp_path))
    splits = load_splits(_cfg(root, tmp_path, image_size=8, resize=True))
    expected = np.asarray(Image.fromarray(big).resize((8, 8), Image.Resampling.BILINEAR))
    index = 5 + 5  # ant's five, then cat/000..004 before cat/odd
    np.testing.assert_array_equal(splits.train.images[index], expected.transpose(2, 0, 1))
    with pytest.raises(ConfigError, match="resize: true needs data.image_size"):
        load_splits(_cfg(root, tmp_path, resize=True))


def test_grayscale(tmp_path):
    root = tmp_path / "ds"
    _write_layout(root)
    splits = load_splits(_cfg(root, tmp_path, color="grayscale"))
    assert splits.train.images.shape == (15, 1, 8, 6) and splits.info.augment == "none"
    first = root / "train" / "ant" / "000.png"
    np.testing.assert_array_equal(
        splits.train.images[0, 0], np.asarray(Image.open(first).convert("L"))
    )
    # rgb and grayscale caches coexist.
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    load_splits(_cfg(root, tmp_path))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_carved_test_split_is_stratified_and_fixed(tmp_path):
    root = tmp_path / "ds"
    _write_layout(root, counts={"train": 10})
    with pytest.warns(UserWarning, match="no test/ or val/ folder"):
        a = load_splits(_cfg(root, tmp_path))
    assert len(a.test) == 3 and sorted(a.test.labels) == [0, 1, 2]
    b = load_splits(_cfg(root, tmp_path, test_size=6, split_seed=7, val_size=3))
    assert np.bincount(b.test.labels).tolist() == [2, 2, 2]
    assert len(b.train) + len(b.val) + len(b.test) == 30
    c = load_splits(_cfg(root, tmp_path, test_size=6, split_seed=8, val_size=3))
    # The test split does not move with split_seed (it is the same fixed carve).
    np.testing.assert_array_equal(b.test.images, c.test.images)
    _write_layout(root, counts={"test": 1})
    with pytest.raises(ConfigError, match="test_size: .* has a test/"):
        load_splits(_cfg(root, tmp_path, test_size=6))


def test_val_folder_is_the_test_set(tmp_path):
    root = tmp_path / "ds"
    written = _write_layout(root, counts={"train": 3, "val": 2})
    splits = load_splits(_cfg(root, tmp_path))
    x, y = written["val"]
    np.testing.assert_array_equal(splits.test.images, x[_turns(y)])


# ---------------------------------------------------------------------------------------------
# every bad file is a DataError naming it


def test_missing_root_and_train_folder(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: not found"):
        load_splits(_cfg(tmp_path / "nowhere", tmp_path))
    (tmp_path / "ds" / "images").mkdir(parents=True)
    (tmp_path / "ds" / "images" / "a.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"ds: no train"):
        load_splits(_cfg(tmp_path / "ds", tmp_path))
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(DataError, match=r"junk\.tar\.gz: not a folder"):
        load_splits(_cfg(tmp_path / "junk.tar.gz", tmp_path))


def test_test_split_missing_a_class_folder(tmp_path):
    root = tmp_path / "ds"
    _write_layout(root)
    for f in (root / "test" / "cat").iterdir():
        f.unlink()
    (root / "test" / "cat").rmdir()
    with pytest.raises(DataError, match=r"test: class folders differ from train/'s \(missing: cat"):
        load_splits(_cfg(root, tmp_path))


def test_empty_class_folder(tmp_path):
    root = tmp_path / "ds"
    _write_layout(root)
    (root / "train" / "dog").mkdir()
    (root / "train" / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"train/dog: class folder without image files"):
        load_splits(_cfg(root, tmp_path))


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_unreadable_image_is_named(tmp_path, how):
    root = tmp_path / "ds"
    _write_layout(root, fmt="jpg")
    bad = root / "train" / "cat" / "002.jpg"
    if how == "garbage":
        bad.write_bytes(b"this is not a jpeg")
    else:
        bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match=r"train/cat/002\.jpg: not a readable image"):
        load_splits(_cfg(root, tmp_path))


def test_unwritable_cache_names_cache_dir(tmp_path):
    root = tmp_path / "ds"
    _write_layout(root)
    (tmp_path / "file").write_text("a file, not a folder")
    cfg = DataConfig(name="imagefolder", root=str(root), cache_dir=str(tmp_path / "file"))
    with pytest.raises(DataError, match="cannot write the decoded-image cache.*data.cache_dir"):
        load_splits(cfg)


def test_decode_image_formats_and_modes():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    for fmt in ("PNG", "BMP", "PPM", "TIFF"):
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, fmt)
        got = folder_mod.decode_image(buf.getvalue(), "x", size=(5, 4), resize=False, color="rgb")
        np.testing.assert_array_equal(got, x.transpose(2, 0, 1))
    # A palette image with transparency becomes plain RGB.
    buf = io.BytesIO()
    Image.fromarray(x).convert("P").save(buf, "PNG", transparency=0)
    got = folder_mod.decode_image(buf.getvalue(), "x", size=None, resize=False, color="rgb")
    assert got.shape == (3, 5, 4)
    assert folder_mod.is_image("A/B.JPEG") and not folder_mod.is_image("a_boxes.txt")


def test_a_folder_marked_read_only_is_refused_even_for_root(tmp_path):
    root = tmp_path / "shared" / "ds"
    _write_layout(root)
    (tmp_path / "shared").chmod(0o555)
    try:
        with pytest.raises(DataError, match=r"shared is read-only\); set data.cache_dir"):
            load_splits(DataConfig(name="imagefolder", root=str(root), val_size=0))
        assert not (tmp_path / "shared" / "ds.afa-cache").exists()
    finally:
        (tmp_path / "shared").chmod(0o755)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_class_interleaved_prefixes_are_balanced(counts, seed):
    """Every prefix holds each class in proportion, to within half an example plus the
    rounding the other classes force; the order is a permutation fixed by the seed."""
    labels = np.repeat(np.arange(len(counts)), counts)
    labels = labels[np.random.default_rng(seed).permutation(len(labels))]
    order = class_interleaved(labels, seed)
    assert sorted(order.tolist()) == list(range(len(labels)))
    assert np.array_equal(order, class_interleaved(labels, seed))
    n, c = len(labels), len(counts)
    seen = np.zeros(c)
    for k, i in enumerate(order, start=1):
        seen[labels[i]] += 1
        share = np.array(counts) / n
        assert np.all(np.abs(seen - k * share) <= 0.5 + 0.5 * c * share + 1e-9), (k, seen)
