"""Tiny-ImageNet-200 in its official layout (written here, small), and 64x64 inputs to every model."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from afa.data import DataConfig, load_splits
from afa.data.readers import tiny_imagenet as tin
from afa.data.readers.download import file_md5
from afa.errors import DataError
from afa.models import MODELS, create_model

WNIDS = ("n09999999", "n01443537", "n02124075")  # wnids.txt order is not the label order
WORDS = {"n01443537": "goldfish, Carassius auratus", "n02124075": "Egyptian cat"}
TRAIN_PER_CLASS = 3
VAL = [("val_0.JPEG", "n02124075"), ("val_1.JPEG", "n01443537"), ("val_2.JPEG", "n02124075")]


def _write(root: Path, *, gray_first: bool = True) -> dict:
    """``root/tiny-imagenet-200`` in the official layout; returns what Pillow decodes, by file."""
    base = root / tin.FOLDER
    rng = np.random.default_rng(0)
    decoded = {}

    def image(path: Path, gray: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (64, 64) if gray else (64, 64, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, "JPEG")
        rel = path.relative_to(base).as_posix()
        decoded[rel] = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)

    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (base / "words.txt").write_text(
        "n00001740\tentity\n" + "".join(f"{w}\t{t}\n" for w, t in WORDS.items())
    )
    for wnid in WNIDS:
        folder = base / "train" / wnid
        (folder / f"{wnid}_boxes.txt").parent.mkdir(parents=True, exist_ok=True)
        (folder / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        for k in range(TRAIN_PER_CLASS):
            image(folder / "images" / f"{wnid}_{k}.JPEG", gray=gray_first and k == 0)
    for file, _ in VAL:
        image(base / "val" / "images" / file)
    (base / "val" / "val_annotations.txt").write_text(
        "".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in VAL)
    )
    (base / "test" / "images").mkdir(parents=True)
    image(base / "test" / "images" / "test_0.JPEG")  # no labels: unused
    return decoded


def _cfg(root: Path, tmp_path: Path, **kw) -> DataConfig:
    kw.setdefault("val_size", 0)
    return DataConfig(name="tiny-imagenet", root=str(root), cache_dir=str(tmp_path / "c"), **kw)


def test_official_layout_labels_follow_sorted_wnids(tmp_path):
    decoded = _write(tmp_path)
    splits = load_splits(_cfg(tmp_path, tmp_path))
    order = sorted(WNIDS)
    assert splits.info.class_names == ("goldfish", "Egyptian cat", "n09999999")
    assert splits.info.image_shape == (3, 64, 64) and splits.info.augment == "crop-flip"
    assert splits.info.mean == tin.MEAN
    assert len(splits.train) == 3 * TRAIN_PER_CLASS
    np.testing.assert_array_equal(splits.train.labels, np.repeat([0, 1, 2], TRAIN_PER_CLASS))
    for i, wnid in enumerate(order):
        for k in range(TRAIN_PER_CLASS):
            np.testing.assert_array_equal(
                splits.train.images[i * TRAIN_PER_CLASS + k],
                decoded[f"train/{wnid}/images/{wnid}_{k}.JPEG"],
            )
    # The official val is the test set, in annotation order; a grayscale JPEG is RGB here.
    np.testing.assert_array_equal(splits.test.labels, [order.index(w) for _, w in VAL])
    np.testing.assert_array_equal(splits.test.images[1], decoded["val/images/val_1.JPEG"])
    assert isinstance(splits.test.images, np.memmap)


@pytest.mark.parametrize("where", ["layout", "zip", "tar"])
def test_folder_or_archive_gives_the_same_arrays(tmp_path, where, monkeypatch):
    _write(tmp_path / "src")
    expected = load_splits(_cfg(tmp_path / "src", tmp_path / "a"))
    if where == "layout":
        root = tmp_path / "src" / tin.FOLDER
    elif where == "zip":
        root = tmp_path / "dl"
        root.mkdir()
        with zipfile.ZipFile(root / tin.ZIP, "w") as zf:
            for p in sorted((tmp_path / "src").rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(tmp_path / "src").as_posix())
        with pytest.raises(DataError, match=r"tiny-imagenet-200\.zip: md5 .* does not match"):
            load_splits(_cfg(root, tmp_path / "b"))
        monkeypatch.setattr(tin, "MD5", file_md5(root / tin.ZIP))
    else:
        import tarfile

        root = tmp_path / "sample.tar.gz"
        with tarfile.open(root, "w:gz") as tf:
            tf.add(tmp_path / "src" / tin.FOLDER, arcname=tin.FOLDER)
    got = load_splits(_cfg(root, tmp_path / "b"))
    np.testing.assert_array_equal(got.train.images, expected.train.images)
    np.testing.assert_array_equal(got.test.labels, expected.test.labels)
    assert got.info.class_names == expected.info.class_names


def test_absent_says_where_and_keeps_the_official_address(tmp_path):
    with pytest.raises(DataError, match=r"cs231n\.stanford\.edu/tiny-imagenet-200\.zip.*90528d7c"):
        load_splits(_cfg(tmp_path, tmp_path, download=False))


def test_missing_class_folder(tmp_path):
    _write(tmp_path)
    folder = tmp_path / tin.FOLDER / "train" / "n02124075" / "images"
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"train/n02124075/images: missing or empty class folder"):
        load_splits(_cfg(tmp_path, tmp_path))


def test_class_folder_not_in_wnids(tmp_path):
    _write(tmp_path)
    (tmp_path / tin.FOLDER / "wnids.txt").write_text("n01443537\nn02124075\n")
    with pytest.raises(DataError, match=r"train/n09999999: class folder not listed in wnids"):
        load_splits(_cfg(tmp_path, tmp_path))


def test_duplicate_wnid(tmp_path):
    _write(tmp_path)
    (tmp_path / tin.FOLDER / "wnids.txt").write_text("\n".join(WNIDS + WNIDS[:1]))
    with pytest.raises(DataError, match=r"wnids\.txt: line 4: n09999999 appears twice"):
        load_splits(_cfg(tmp_path, tmp_path))


def test_val_annotation_problems_are_named(tmp_path):
    _write(tmp_path)
    ann = tmp_path / tin.FOLDER / "val" / "val_annotations.txt"
    good = ann.read_text()
    ann.write_text(good + "val_9.JPEG\tn01443537\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_9\.JPEG: listed in val_annotations\.txt \(line 4\)"):
        load_splits(_cfg(tmp_path, tmp_path))
    ann.write_text(good.replace("n01443537", "n00000000"))
    with pytest.raises(DataError, match=r"val_annotations\.txt: line 2: n00000000 is not in wnids"):
        load_splits(_cfg(tmp_path, tmp_path))
    ann.write_text("".join(good.splitlines(keepends=True)[:2]))
    with pytest.raises(DataError, match=r"1 image\(s\) have no label .*val_2\.JPEG"):
        load_splits(_cfg(tmp_path, tmp_path))
    ann.unlink()
    with pytest.raises(DataError, match=r"val_annotations\.txt: file not found"):
        load_splits(_cfg(tmp_path, tmp_path))


def test_wrong_size_and_unreadable_images_are_named(tmp_path):
    _write(tmp_path)
    bad = tmp_path / tin.FOLDER / "train" / "n01443537" / "images" / "n01443537_1.JPEG"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(bad, "JPEG")
    with pytest.raises(
        DataError, match=r"n01443537_1\.JPEG: image is 32x32 \(HxW\), expected 64x64"
    ):
        load_splits(_cfg(tmp_path, tmp_path))
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match=r"n01443537_1\.JPEG: not a readable image"):
        load_splits(_cfg(tmp_path, tmp_path))


@pytest.mark.parametrize("name", ["cnn", "resnet18", "preact_resnet18", "wrn"])
def test_registered_models_take_64x64_inputs(name):
    assert name in MODELS.names()
    torch.manual_seed(0)
    kwargs = {"depth": 10, "widen_factor": 1} if name == "wrn" else {"width": 4}
    model = create_model(
        name, 200, in_channels=3, image_size=64, mean=tin.MEAN, std=tin.STD, **kwargs
    )
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 200) and torch.isfinite(logits).all()
    assert model.features(x).shape == (2, model.num_features)


def _shape_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Tiny-ImageNet-200 shape" in r.getMessage()]


def test_a_copy_of_another_shape_says_so_in_one_line(tmp_path, caplog):
    _write(tmp_path)
    with caplog.at_level("WARNING", logger="afa.data.readers.tiny_imagenet"):
        load_splits(_cfg(tmp_path, tmp_path))
    lines = _shape_lines(caplog)
    assert len(caplog.records) == 1 and len(lines) == 1, caplog.text
    assert lines[0].startswith(str(tmp_path / tin.FOLDER)), lines
    assert "(200 classes of 500 training images, 10,000 validation images)" in lines[0]
    assert "3 classes; 3 training images per class; 3 validation images" in lines[0]
    assert lines[0].endswith("read as it is (a 3-class classifier)")
    caplog.clear()
    with caplog.at_level("WARNING", logger="afa.data.readers.tiny_imagenet"):
        load_splits(_cfg(tmp_path, tmp_path))  # from the cache: said again, once
    assert len(_shape_lines(caplog)) == 1


def test_the_official_shape_is_silent_and_extra_classes_are_named(tmp_path, caplog, monkeypatch):
    """The fake layout made official (constants scaled down), then two extra classes listed in
    wnids.txt with their folders and validation images: 202 of 200, in small."""
    monkeypatch.setattr(tin, "CLASSES", len(WNIDS))
    monkeypatch.setattr(tin, "TRAIN_PER_CLASS", TRAIN_PER_CLASS)
    monkeypatch.setattr(tin, "VAL_IMAGES", len(VAL))
    _write(tmp_path)
    with caplog.at_level("WARNING", logger="afa.data.readers.tiny_imagenet"):
        load_splits(_cfg(tmp_path, tmp_path))
    assert not caplog.records
    base = tmp_path / tin.FOLDER
    extra = ("n11111111", "n22222222")
    (base / "wnids.txt").write_text("\n".join(WNIDS + extra) + "\n")
    source = base / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_0.JPEG"
    for wnid in extra:
        (base / "train" / wnid / "images").mkdir(parents=True)
        for k in range(TRAIN_PER_CLASS):
            (base / "train" / wnid / "images" / f"{wnid}_{k}.JPEG").write_bytes(source.read_bytes())
        (base / "val" / "images" / f"val_{wnid}.JPEG").write_bytes(source.read_bytes())
    with (base / "val" / "val_annotations.txt").open("a") as f:
        f.write("".join(f"val_{w}.JPEG\t{w}\t0\t0\t63\t63\n" for w in extra))
    with caplog.at_level("WARNING", logger="afa.data.readers.tiny_imagenet"):
        splits = load_splits(_cfg(tmp_path, tmp_path))
    assert splits.info.num_classes == 5  # what the user asked for: carried on, and said
    lines = _shape_lines(caplog)
    assert len(caplog.records) == 1 and len(lines) == 1, caplog.text
    assert (
        "(3 classes of 3 training images, 3 validation images): 5 classes; 5 validation"
        in (lines[0])
    )
    assert lines[0].endswith("(a 5-class classifier)")


@pytest.mark.parametrize("where", ["layout", "zip"])
def test_hidden_files_are_not_classes_or_images(tmp_path, where):
    expected = _write(tmp_path / "clean")
    _write(tmp_path / "src")
    base = tmp_path / "src" / tin.FOLDER
    junk = {
        ".DS_Store": b"\0\0\0\1Bud1",
        "train/.DS_Store": b"\0\0\0\1Bud1",  # was taken for a class folder
        "train/Thumbs.db": b"\xd0\xcf\x11\xe0",
        f"train/{WNIDS[0]}/images/._{WNIDS[0]}_0.JPEG": b"\0\5\26\7 AppleDouble",
        "val/images/._val_0.JPEG": b"\0\5\26\7",  # was an image without a label
        "val/images/.DS_Store": b"\0\0\0\1Bud1",
    }
    for name, data in junk.items():
        (base / name).write_bytes(data)
    root = tmp_path / "src"
    if where == "zip":
        root = tmp_path / "a.zip"
        with zipfile.ZipFile(root, "w") as zf:
            for p in sorted((tmp_path / "src").rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(tmp_path / "src").as_posix())
            zf.writestr(f"__MACOSX/{tin.FOLDER}/._wnids.txt", b"\0\5\26\7")
    splits = load_splits(_cfg(root, tmp_path))
    assert splits.info.num_classes == len(WNIDS) and len(splits.test) == len(VAL)
    order = sorted(WNIDS)
    first = expected[f"train/{order[0]}/images/{order[0]}_0.JPEG"]
    np.testing.assert_array_equal(splits.train.images[0], first)
