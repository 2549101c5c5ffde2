"""imagefolder: class-per-folder images (folder, .tar.gz, .zip), decoded once into a checked cache."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import data_files  # tests/data_files.py: archives and PNGs crafted byte by byte
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from afa.data import DataConfig, load_splits
from afa.data.arrays import class_interleaved
from afa.data.readers import folder as folder_mod
from afa.errors import ConfigError, DataError

CLASSES = ("zebra", "ant", "cat")  # written unsorted: the labels follow the sorted names


def _write_layout(root: Path, counts=None, size=(10, 8), fmt="png", seed=0) -> dict:
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
    assert splits.info.image_shape == (3, 10, 8) and splits.info.augment == "crop-flip"
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
    Image.fromarray(np.zeros((10, 8, 3), np.uint8)).save(path)
    splits = load_splits(cfg)
    assert len(splits.train) == 16
    assert np.all(splits.train.images[5] == 0)  # ant/new.ppm sorts after ant/004.png
    # Same size, new content, new mtime: decoded again too.
    size = path.stat().st_size
    Image.fromarray(np.full((10, 8, 3), 7, np.uint8)).save(path)
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
    assert splits.train.images.shape == (15, 1, 10, 8) and splits.info.augment == "none"
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
    x = rng.integers(0, 256, (9, 8, 3), dtype=np.uint8)
    for fmt in ("PNG", "BMP", "PPM", "TIFF"):
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, fmt)
        got = folder_mod.decode_image(buf.getvalue(), "x", size=(9, 8), resize=False, color="rgb")
        np.testing.assert_array_equal(got, x.transpose(2, 0, 1))
    # A palette image with transparency becomes plain RGB.
    buf = io.BytesIO()
    Image.fromarray(x).convert("P").save(buf, "PNG", transparency=0)
    got = folder_mod.decode_image(buf.getvalue(), "x", size=None, resize=False, color="rgb")
    assert got.shape == (3, 9, 8)
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


# ---------------------------------------------------------------------------------------------
# bit depth: 16-bit samples keep their high byte, wider ones are refused by name


def _decode(data: bytes, color: str = "rgb") -> np.ndarray:
    return folder_mod.decode_image(data, "x", size=None, resize=False, color=color)


def _saved(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "PGM"])
def test_16_bit_grayscale_keeps_its_high_byte(fmt):
    x = np.random.default_rng(1).integers(0, 65536, (9, 8), dtype=np.uint16)
    if fmt == "PGM":  # Pillow writes no 16-bit PGM; it reads one as mode I
        data = b"P5 8 9 65535\n" + x.astype(">u2").tobytes()
    else:
        data = _saved(x, fmt)  # Pillow reads these back as I;16
    np.testing.assert_array_equal(_decode(data, "grayscale")[0], x >> 8)
    np.testing.assert_array_equal(_decode(data), np.broadcast_to(x >> 8, (3, 9, 8)))


@pytest.mark.parametrize("color_type", [2, 4, 6])  # RGB, gray+alpha, RGBA: Pillow's own path
def test_16_bit_colour_pngs_keep_their_high_byte(color_type):
    channels = {2: 3, 4: 2, 6: 4}[color_type]
    x = np.random.default_rng(2).integers(0, 65536, (9, 8, channels), dtype=np.uint16)
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in x)
    data = data_files.png_bytes(8, 9, bit_depth=16, color_type=color_type, rows=rows)
    got = _decode(data)
    high = (x >> 8).astype(np.uint8)
    expected = high[..., :3] if channels >= 3 else np.repeat(high[..., :1], 3, axis=2)
    np.testing.assert_array_equal(got, expected.transpose(2, 0, 1))


def test_wider_samples_are_refused_by_name():
    floats = _saved(np.random.default_rng(3).random((9, 8), dtype=np.float32), "TIFF")
    with pytest.raises(DataError, match=r"^x: floating-point samples \(Pillow mode F\); expected"):
        _decode(floats)
    ints = _saved(np.full((9, 8), 70000, np.int32), "TIFF")
    with pytest.raises(DataError, match=r"^x: 32-bit integer samples \(Pillow mode I"):
        _decode(ints)


def test_a_16_bit_png_folder_is_cached_as_its_high_bytes(tmp_path):
    """The cache held 255 for 99% of such pixels when Pillow's convert clipped them."""
    root = tmp_path / "ds"
    rng = np.random.default_rng(4)
    written = {}
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for k in range(3):
            x = rng.integers(0, 65536, (10, 8), dtype=np.uint16)
            Image.fromarray(x).save(root / "train" / cls / f"{k}.png")
            written[(cls, k)] = x
    splits = load_splits(_cfg(root, tmp_path, test_size=2, color="grayscale"))
    images = np.concatenate([splits.train.images, splits.test.images])[:, 0]
    expected = sorted((x >> 8).astype(np.uint8).tobytes() for x in written.values())
    assert sorted(im.tobytes() for im in images) == expected
    assert (images == 255).mean() < 0.01


# ---------------------------------------------------------------------------------------------
# the cache is verified when opened


def test_flipped_bytes_in_the_cache_are_noticed_and_rebuilt(tmp_path, caplog):
    root = tmp_path / "ds"
    written = _write_layout(root)
    cfg = _cfg(root, tmp_path)
    load_splits(cfg)
    cache = next((tmp_path / "cache").glob("*.npz"))
    with zipfile.ZipFile(cache) as zf:
        info = zf.getinfo("train_images.npy")
    raw = bytearray(cache.read_bytes())
    # a pixel in the middle of the training images (past the local and the .npy headers)
    at = info.header_offset + 30 + len(info.filename) + 128 + info.file_size // 2
    raw[at] ^= 0xFF
    cache.write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="afa.data.readers.folder"):
        splits = load_splits(cfg)
    notes = [r.getMessage() for r in caplog.records if "cache" in r.getMessage()]
    assert len(notes) == 1 and "damaged decoded-image cache" in notes[0], notes
    assert "CRC-32" in notes[0] and str(cache) in notes[0]
    np.testing.assert_array_equal(splits.train.images, written["train"][0])
    caplog.clear()
    with caplog.at_level("WARNING", logger="afa.data.readers.folder"):
        load_splits(cfg)  # the rebuilt cache verifies
    assert not caplog.records


def test_an_empty_cache_is_rebuilt(tmp_path, caplog):
    root = tmp_path / "ds"
    written = _write_layout(root)
    cfg = _cfg(root, tmp_path)
    load_splits(cfg)
    cache = next((tmp_path / "cache").glob("*.npz"))
    cache.write_bytes(b"")
    with caplog.at_level("WARNING", logger="afa.data.readers.folder"):
        splits = load_splits(cfg)
    assert [r.getMessage().count("damaged decoded-image cache") for r in caplog.records] == [1]
    np.testing.assert_array_equal(splits.train.images, written["train"][0])
    assert cache.stat().st_size > 0


# ---------------------------------------------------------------------------------------------
# entries that are not data


def test_is_hidden():
    for name in (".DS_Store", "train/._0.png", "__MACOSX/train/a/0.png", "train/Thumbs.db",
                 "a/THUMBS.DB", "a/desktop.ini", ".git/config", "train/.cache/x.png"):  # fmt: skip
        assert folder_mod.is_hidden(name), name
    for name in ("train/a/0.png", "train/a.b/0.png", "train/a/x.DS_Store.png", "Thumbs/0.png"):
        assert not folder_mod.is_hidden(name), name


@pytest.mark.parametrize("kind", ["folder", "zip", "tar"])
def test_hidden_entries_are_skipped_everywhere(tmp_path, kind, caplog):
    written = _write_layout(tmp_path / "ds")
    junk = {  # what macOS, Windows and tools leave beside the images
        ".DS_Store": b"\0\0\0\1Bud1",
        "train/.DS_Store": b"\0\0\0\1Bud1",
        "train/Thumbs.db": b"\xd0\xcf\x11\xe0",
        "test/desktop.ini": b"[.ShellClassInfo]",
        "train/ant/._000.png": b"\0\5\26\7 AppleDouble",
        "train/.ipynb_checkpoints/000.png": b"not an image",
        "__MACOSX/train/ant/._001.png": b"\0\5\26\7",
    }
    for name, data in junk.items():
        (tmp_path / "ds" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ds" / name).write_bytes(data)
    if kind == "folder":
        root = tmp_path / "ds"
    elif kind == "zip":
        root = _zip(tmp_path / "ds", tmp_path / "a.zip", "")
    else:
        root = _tar(tmp_path / "ds", tmp_path / "a.tar.gz", "ds")
    with caplog.at_level("WARNING", logger="afa.data.readers.folder"):
        splits = load_splits(_cfg(root, tmp_path))
    assert splits.info.class_names == ("ant", "cat", "zebra")
    np.testing.assert_array_equal(splits.train.images, written["train"][0])
    assert not caplog.records  # no "file(s) outside class folders" either
    assert not any("DS_Store" in n or "Thumbs" in n for n in folder_mod.FileTree(root).listing())


def test_a_link_to_a_device_is_not_read(tmp_path):
    root = tmp_path / "ds"
    written = _write_layout(root)
    (root / "train" / "ant" / "zero.png").symlink_to("/dev/zero")  # would read forever
    splits = load_splits(_cfg(root, tmp_path))
    np.testing.assert_array_equal(splits.train.images, written["train"][0])


# ---------------------------------------------------------------------------------------------
# what reading may cost: sizes, counts and pixels are bounded before anything is read


def test_image_dimensions_are_bounded_from_the_header():
    png = data_files.png_bytes(20000, 20000, bit_depth=1)  # 48 KB; Pillow: DecompressionBomb
    assert len(png) < 100_000
    with pytest.raises(DataError, match=r"^x: image of 400,000,000 pixels; .* at most 67,108,864"):
        _decode(png)
    big = data_files.png_bytes(9000, 9000, bit_depth=1)  # under Pillow's bound, over ours
    with pytest.raises(DataError, match=r"^x: image is 9000x9000 \(HxW\), 81,000,000 pixels"):
        _decode(big)
    with pytest.raises(DataError, match=r"^x: image is 1x1 \(HxW\), smaller than the 8x8 min"):
        _decode(_saved(np.zeros((1, 1, 3), np.uint8), "PNG"))
    with pytest.raises(DataError, match=r"^x: image is 7x300 \(HxW\), smaller than the 8x8"):
        _decode(data_files.png_bytes(300, 7))


def test_too_small_images_and_image_size_are_refused(tmp_path):
    root = tmp_path / "ds"
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((1, 1, 3), k, np.uint8)).save(root / "train" / cls / f"{k}.png")
    with pytest.raises(DataError, match=r"train/a/0\.png: image is 1x1 \(HxW\), smaller than"):
        load_splits(_cfg(root, tmp_path, test_size=2))
    # resized or not: a 1x1 file is not a training image
    with pytest.raises(DataError, match=r"train/a/0\.png: image is 1x1"):
        load_splits(_cfg(root, tmp_path, test_size=2, image_size=32, resize=True))
    with pytest.raises(ConfigError, match=r"image_size: expected a size in pixels of at least 8"):
        load_splits(_cfg(root, tmp_path, image_size=4))


@pytest.mark.parametrize("kind", ["folder", "zip", "tar"])
def test_a_file_over_the_size_bound_is_refused_before_it_is_read(tmp_path, kind, monkeypatch):
    _write_layout(tmp_path / "ds")  # PNGs of a few hundred bytes
    if kind == "folder":
        root = tmp_path / "ds"
    elif kind == "zip":
        root = _zip(tmp_path / "ds", tmp_path / "a.zip", "")
    else:
        root = _tar(tmp_path / "ds", tmp_path / "a.tar.gz", "ds")
    monkeypatch.setattr(folder_mod, "MAX_FILE_BYTES", 100)
    with pytest.raises(
        DataError, match=r"train/ant/000\.png: [\d,]+ bytes; a data file may have at most 100 "
    ):
        load_splits(_cfg(root, tmp_path))


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_archive_totals_are_bounded(tmp_path, kind, monkeypatch):
    _write_layout(tmp_path / "ds")  # 21 images, a few KB
    if kind == "zip":
        root = _zip(tmp_path / "ds", tmp_path / "a.zip", "")
    else:
        root = _tar(tmp_path / "ds", tmp_path / "a.tar.gz", "ds")
    monkeypatch.setattr(folder_mod, "MAX_ARCHIVE_MEMBERS", 20)
    with pytest.raises(DataError, match=r"a\.(zip|tar\.gz): more than 20 members, .*folder"):
        load_splits(_cfg(root, tmp_path))
    monkeypatch.setattr(folder_mod, "MAX_ARCHIVE_MEMBERS", 1000)
    monkeypatch.setattr(folder_mod, "MAX_ARCHIVE_BYTES", 1000)
    with pytest.raises(DataError, match=r"members of more than 1,000 bytes in all"):
        load_splits(_cfg(root, tmp_path))


#: How much address space loading a crafted file may add to the process (the bombs inflate to
#: 1 GiB, the tar's member to 512 MiB: reading one whole, as before, fails under it), and how
#: long each load may take (a tar is listed in one pass, which inflates all of it).
BOUND = 256 * 2**20
SECONDS = 60
BOMBS = ["zip-member", "zip-lying-size", "tar-member", "tar-pax-header", "png"]

# Loads each source in turn, in one process (one import of torch) whose address space is
# capped at what it holds after the imports plus BOUND; prints {kind, error, seconds} lines.
_CHILD = """
import json, resource, sys, time
from afa.data import DataConfig, load_splits
from afa.errors import UserError

def vm_size():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))

resource.setrlimit(resource.RLIMIT_AS, (vm_size() + {bound}, resource.RLIM_INFINITY))
for kind, root, cache in json.loads(sys.argv[1]):
    start = time.perf_counter()
    try:
        load_splits(DataConfig(name="imagefolder", root=root, cache_dir=cache, val_size=0))
        error = None
    except UserError as exc:
        error = str(exc)
    except MemoryError:
        error = "MemoryError"
    print(json.dumps({{"kind": kind, "error": error, "seconds": time.perf_counter() - start}}))
"""


@pytest.fixture(scope="module")
def bomb_loads(tmp_path_factory) -> dict[str, dict]:
    """Every crafted source of BOMBS loaded under the memory bound: kind -> its result."""
    if not Path("/proc/self/status").exists():
        pytest.skip("reads /proc (Linux)")
    cases = []
    for kind in BOMBS:
        folder = tmp_path_factory.mktemp(kind)
        root = _bomb(folder, kind)
        assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 2_000_000
        cases.append([kind, str(root), str(folder / "cache")])
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD.format(bound=BOUND), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=SECONDS * len(cases) + 60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return {row["kind"]: row for row in rows}


#: What each refusal must say.
BOMB_MESSAGES = {
    "zip-member": r"bomb\.zip:train/a/0\.png: 1,073,741,824 bytes; a data file may have at most 67,108,864",
    "zip-lying-size": r"bomb\.zip:train/a/0\.png: could not be read \(Bad CRC-32",
    "tar-member": r"b\.tar\.gz:train/a/0\.png: 536,870,912 bytes; a data file may have at most",
    "tar-pax-header": r"b\.tar\.gz: a tar record of 1,073,741,824 bytes",
    "png": r"train/a/0\.png: image of 400,000,000 pixels; .* at most 67,108,864",
}


def _bomb(folder: Path, kind: str) -> Path:
    """A crafted source of at most 1 MB in ``folder``: a member inflating to 1 GiB (declared,
    or hidden behind a smaller declared size; 512 MiB in a tar), a pax header of 1 GiB, a
    20000x20000 PNG."""
    small = {"train/a/1.png": _saved(np.zeros((8, 8, 3), np.uint8), "PNG")}
    bomb = {"train/a/0.png": data_files.GiB}
    if kind == "zip-member":
        return data_files.write_zip(folder / "bomb.zip", small, zeros=bomb)
    if kind == "zip-lying-size":
        lie = {"train/a/0.png": 900}
        return data_files.write_zip(folder / "bomb.zip", small, zeros=bomb, declared=lie)
    if kind == "tar-member":
        half = {"train/a/0.png": data_files.GiB // 2}
        return data_files.write_tar_gz(folder / "b.tar.gz", small, zeros=half)
    if kind == "tar-pax-header":
        return data_files.write_tar_gz(folder / "b.tar.gz", small, pax_header=data_files.GiB)
    root = folder / "ds"
    (root / "train" / "a").mkdir(parents=True)
    (root / "train" / "a" / "0.png").write_bytes(data_files.png_bytes(20000, 20000, bit_depth=1))
    (root / "train" / "a" / "1.png").write_bytes(small["train/a/1.png"])
    return root


@pytest.mark.parametrize("kind", BOMBS)
def test_crafted_files_are_refused_within_a_memory_bound(bomb_loads, kind):
    """A 1 MB archive inflating to 1 GiB cost 2.3 GB of memory before its error; a
    20000x20000 PNG of 48 KB was a traceback. Each is refused by name, in one line, within
    BOUND more address space than the imports took and SECONDS."""
    row = bomb_loads[kind]
    assert row["error"] is not None and re.search(BOMB_MESSAGES[kind], row["error"]), row
    assert "\n" not in row["error"] and row["seconds"] < SECONDS, row
