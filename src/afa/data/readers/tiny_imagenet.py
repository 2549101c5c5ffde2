"""Tiny-ImageNet-200 (the Stanford CS231n release) in its official layout.

``tiny-imagenet-200/`` holds ``wnids.txt`` (the 200 WordNet ids), ``words.txt`` (id -> names),
``train/<wnid>/images/<wnid>_<k>.JPEG`` (500 per class, 64x64), ``val/images/val_<i>.JPEG``
with ``val/val_annotations.txt`` (file, wnid, box; 10,000 images) and ``test/images`` (no
labels, so unused). The official validation set is our test set, and a validation set is held
out of train as for every dataset (``data.val_size``).

Labels follow the sorted wnids, as torchvision's ImageFolder over ``train/`` gives them (the
usual order in robust-training code). Images are decoded once into the memory-mapped cache of
``afa.data.readers.folder`` (the few grayscale JPEGs become RGB); the folder, the official ``.zip``
(read in place, md5 checked) or any archive of the layout (e.g. a ``.tar.gz`` sample) works.

A copy of another shape than the official one (200 classes of 500 training images, 10,000
validation images) is read as it is, with one warning line saying how it departs: a sample
with fewer images is a legitimate use, and extra classes listed in ``wnids.txt`` with their
folders make a classifier with that many classes (compare such a run with no published one).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from afa.data.base import DataConfig, DatasetInfo, ImageSet
from afa.data.readers.download import check_md5, fetch
from afa.data.readers.folder import (
    DecodePlan,
    FileTree,
    cache_path,
    cached_splits,
    fingerprint_of,
    is_image,
)
from afa.data.registry import DATASETS
from afa.errors import DataError

log = logging.getLogger(__name__)

FOLDER = "tiny-imagenet-200"
ZIP = "tiny-imagenet-200.zip"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
IMAGE_SIZE = 64
# The official release's shape: classes, training images per class, validation images.
CLASSES, TRAIN_PER_CLASS, VAL_IMAGES = 200, 500, 10_000
# The per-channel normalisation used across robust-training code for Tiny-ImageNet; fixed, so
# a model's normalisation does not depend on the copy read. Measured on the 10,000 training
# images of the shipped sample: mean (0.4825, 0.4504, 0.3997) agrees; the pixel standard
# deviation is (0.2766, 0.2690, 0.2818): the customary STD is smaller (it is not the pixel std
# of the data), which only scales the normalised inputs and is kept for comparability.
MEAN = (0.4802, 0.4481, 0.3975)
STD = (0.2302, 0.2265, 0.2262)


def locate(root: Path, *, download: bool) -> tuple[FileTree, bool]:
    """The tree holding the layout, and whether it is the official zip (to be md5-checked).

    ``root`` may be the layout folder itself, a folder holding ``tiny-imagenet-200/`` or
    ``tiny-imagenet-200.zip``, or an archive of the layout.
    """
    if root.is_file():
        return FileTree(root), root.name == ZIP
    if (root / "wnids.txt").is_file():
        return FileTree(root), False
    if (root / FOLDER).is_dir():
        return FileTree(root / FOLDER), False
    archive = root / ZIP
    if not archive.is_file():
        hint = f": put {ZIP} (from {URL}, md5 {MD5}) in {root}/, or its extracted {FOLDER}/"
        if not download:
            raise DataError(f"tiny-imagenet not found in {root} and download is off{hint}")
        fetch(URL, archive, md5=MD5, hint=hint)
    return FileTree(archive), True


@DATASETS.register("tiny-imagenet")
def load_tiny_imagenet(cfg: DataConfig) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """Tiny-ImageNet-200: train (500 per class) and the official val as test, 64x64 RGB,
    200 classes; augment auto = crop-flip. Downloads the official zip when allowed."""
    tree, official_zip = locate(Path(cfg.root), download=cfg.download)
    cache = cache_path(tree.path, cfg.cache_dir, "tiny-imagenet", size=IMAGE_SIZE, color="rgb")

    def plan() -> DecodePlan:
        if official_zip:
            check_md5(tree.path, MD5, URL)
        top = tree.find_prefix("wnids.txt")
        wnids = _wnids(tree, top + "wnids.txt")
        names = _class_names(tree, top + "words.txt", wnids)
        splits = {"train": _train(tree, top, wnids), "test": _val(tree, top, wnids)}
        return DecodePlan(tree, splits, names, (IMAGE_SIZE, IMAGE_SIZE), False, "rgb")

    fingerprint = fingerprint_of(tree, layout="tiny-imagenet")
    splits, names = cached_splits(cache, fingerprint, plan)
    departures = _departures(splits["train"].labels, len(names), len(splits["test"]))
    if departures:
        log.warning(
            "%s: not the official Tiny-ImageNet-200 shape (%d classes of %d training images, "
            "%s validation images): %s; read as it is (a %d-class classifier)",
            tree.path,
            CLASSES,
            TRAIN_PER_CLASS,
            f"{VAL_IMAGES:,}",
            "; ".join(departures),
            len(names),
        )
    info = DatasetInfo(
        name="tiny-imagenet",
        num_classes=len(names),
        image_shape=(3, IMAGE_SIZE, IMAGE_SIZE),
        mean=MEAN,
        std=STD,
        class_names=names,
        augment="crop-flip",
    )
    return splits["train"], splits["test"], info


def _departures(train_labels: np.ndarray, classes: int, val: int) -> list[str]:
    """How a copy departs from the official shape, one short phrase per count (none: [])."""
    out = []
    if classes != CLASSES:
        out.append(f"{classes} classes")
    per_class = np.bincount(train_labels, minlength=classes)
    low, high = int(per_class.min()), int(per_class.max())
    if low != TRAIN_PER_CLASS or high != TRAIN_PER_CLASS:
        counts = f"{low:,}" if low == high else f"{low:,} to {high:,}"
        out.append(f"{counts} training images per class")
    if val != VAL_IMAGES:
        out.append(f"{val:,} validation images")
    return out


def _wnids(tree: FileTree, name: str) -> tuple[str, ...]:
    if name not in tree.listing():
        raise DataError(f"{tree.where(name)}: file not found")
    lines = [line.strip() for line in tree.read_text(name).splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{tree.where(name)}: no class ids")
    seen: set[str] = set()
    for number, wnid in enumerate(lines, start=1):
        if wnid in seen:
            raise DataError(f"{tree.where(name)}: line {number}: {wnid} appears twice")
        seen.add(wnid)
    return tuple(sorted(lines))


def _class_names(tree: FileTree, name: str, wnids: tuple[str, ...]) -> tuple[str, ...]:
    """The first name of each wnid in ``words.txt`` (``goldfish`` for ``n01443537``)."""
    if name not in tree.listing():
        raise DataError(f"{tree.where(name)}: file not found")
    words = {}
    for line in tree.read_text(name).splitlines():
        wnid, _, text = line.partition("\t")
        words[wnid.strip()] = text.split(",")[0].strip()
    return tuple(words.get(w) or w for w in wnids)


def _train(tree: FileTree, top: str, wnids: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    prefix = top + "train/"
    per_class: dict[str, list[str]] = {w: [] for w in wnids}
    folders = set()
    for name in tree.listing():
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        if len(parts) > 1:  # a file directly in train/ is no class folder
            folders.add(parts[0])
        if (
            len(parts) == 3
            and parts[1] == "images"
            and is_image(parts[2])
            and parts[0] in per_class
        ):
            per_class[parts[0]].append(name)
    extra = sorted(folders - set(wnids))
    if extra:
        raise DataError(f"{tree.where(prefix + extra[0])}: class folder not listed in wnids.txt")
    for wnid, files in per_class.items():
        if not files:
            raise DataError(
                f"{tree.where(prefix + wnid + '/images')}: missing or empty class folder "
                f"(expected {wnid}_<k>.JPEG files)"
            )
    names = [f for w in wnids for f in per_class[w]]
    labels = np.repeat(np.arange(len(wnids)), [len(per_class[w]) for w in wnids])
    return names, labels.astype(np.int64)


def _val(tree: FileTree, top: str, wnids: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    ann = top + "val/val_annotations.txt"
    images = top + "val/images/"
    if ann not in tree.listing():
        raise DataError(f"{tree.where(ann)}: file not found")
    present = {n for n in tree.listing() if n.startswith(images) and is_image(n)}
    index = {w: i for i, w in enumerate(wnids)}
    names, labels = [], []
    for number, line in enumerate(tree.read_text(ann).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{tree.where(ann)}: line {number}: expected file<TAB>wnid<TAB>box")
        file, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise DataError(f"{tree.where(ann)}: line {number}: {wnid} is not in wnids.txt")
        if images + file not in present:
            raise DataError(
                f"{tree.where(images + file)}: listed in val_annotations.txt (line {number}) "
                "but not found"
            )
        names.append(images + file)
        labels.append(index[wnid])
    unlisted = sorted(present - set(names))
    if unlisted:
        raise DataError(
            f"{tree.where(images)}: {len(unlisted)} image(s) have no label in "
            f"val_annotations.txt (e.g. {unlisted[0].rsplit('/', 1)[1]})"
        )
    if not names:
        raise DataError(f"{tree.where(ann)}: no labelled validation images")
    return names, np.array(labels, dtype=np.int64)
