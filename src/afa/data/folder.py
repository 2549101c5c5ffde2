"""Images in a class-per-folder layout, decoded once and cached as a memory-mapped array.

``imagefolder`` reads ``root/<split>/<class>/**/*.jpg|png|...`` as torchvision's ImageFolder
does (classes are the folder names, sorted; files found recursively, in sorted path order),
without torchvision. ``root`` is a folder, a ``.tar``/``.tar.gz`` or a ``.zip`` (read in place,
never extracted); the layout may sit inside one top-level folder of the archive.

Decoding (Pillow) happens once: the uint8 (N, C, H, W) images of every split, their labels, the
class names and a fingerprint go into one uncompressed ``.npz`` beside the data
(``<root>.afa-cache/imagefolder-<options>.npz``, or under ``data.cache_dir``), written
atomically (afa._io) and memory-mapped afterwards (``read_npz_array``). The fingerprint hashes
the decoding options and the source: the names, sizes and mtimes of the files of a folder, or the
size and mtime of an archive, so a changed folder is decoded again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from afa._io import atomic_open
from afa.data.arrays import (
    channel_stats,
    class_interleaved,
    holdout_count,
    subset,
)
from afa.data.base import DataConfig, DatasetInfo, ImageSet
from afa.data.npz import CARVED_TEST_FRACTION, CARVED_TEST_SEED, carve_test, read_npz_array
from afa.data.registry import DATASETS
from afa.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# torchvision's IMG_EXTENSIONS, compared case-insensitively (Tiny-ImageNet writes .JPEG).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_VERSION = 1  # bump when the cache's content changes meaning
COLOR_MODES = {"rgb": ("RGB", 3), "grayscale": ("L", 1)}


def is_image(name: str) -> bool:
    """Whether ``name`` has an image suffix (case-insensitive)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


class FileTree:
    """A folder, a ``.tar(.gz)`` or a ``.zip``, read as relative POSIX paths of regular files.

    Archives are read in place: a tar in one sequential pass (gzip has no random access), a
    zip member by member.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.kind = "dir"
        elif not self.path.exists():
            raise DataError(f"{self.path}: not found (expected a folder, .tar, .tar.gz or .zip)")
        elif zipfile.is_zipfile(self.path):
            self.kind = "zip"
        elif tarfile.is_tarfile(self.path):
            self.kind = "tar"
        else:
            raise DataError(f"{self.path}: not a folder, a readable .tar(.gz) or a .zip archive")
        self._listing: dict[str, tuple[int, int]] | None = None  # name -> (size, mtime_ns)
        self._texts: dict[str, bytes] = {}  # a tar's .txt members, read during the listing

    def where(self, name: str) -> str:
        """How error messages name the file ``name``."""
        return str(self.path / name) if self.kind == "dir" else f"{self.path}:{name}"

    def listing(self) -> dict[str, tuple[int, int]]:
        """Every regular file: relative path -> (size, mtime in ns), sorted by path."""
        if self._listing is None:
            found: dict[str, tuple[int, int]] = {}
            try:
                if self.kind == "dir":
                    for dirpath, dirnames, filenames in os.walk(self.path, followlinks=True):
                        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                        rel = Path(dirpath).relative_to(self.path).as_posix()
                        for f in filenames:
                            st = os.stat(os.path.join(dirpath, f))
                            name = f if rel == "." else f"{rel}/{f}"
                            found[name] = (st.st_size, st.st_mtime_ns)
                elif self.kind == "zip":
                    with zipfile.ZipFile(self.path) as zf:
                        for info in zf.infolist():
                            if not info.is_dir():
                                found[info.filename] = (info.file_size, 0)
                else:
                    with tarfile.open(self.path, "r:*") as tf:
                        for member in tf:
                            if member.isfile():
                                name = _clean(member.name)
                                found[name] = (member.size, int(member.mtime))
                                if name.endswith(".txt"):  # keep the labels files: no 2nd pass
                                    f = tf.extractfile(member)
                                    assert f is not None
                                    self._texts[name] = f.read()
            except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                raise DataError(f"{self.path}: could not be read ({exc})") from None
            self._listing = dict(sorted(found.items()))
        return self._listing

    def fingerprint(self) -> list:
        """What a cache must match: the files of a folder, or the archive file itself."""
        if self.kind == "dir":
            return [[n, s, t] for n, (s, t) in self.listing().items()]
        st = self.path.stat()
        return [self.path.name, st.st_size, st.st_mtime_ns]

    def read_text(self, name: str) -> str:
        """The UTF-8 text of one small file."""
        if self.kind == "tar":
            self.listing()
        for _, data in self.read([name]):
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{self.where(name)}: not UTF-8 text ({exc})") from None
        raise AssertionError("unreachable")

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """``(name, bytes)`` for each name, in the given order."""
        if self.kind == "tar" and all(n in self._texts for n in names):
            yield from ((n, self._texts[n]) for n in names)
            return
        if self.kind == "tar":
            # One pass over the archive keeps the (compressed) bytes of the wanted members.
            wanted, found = set(names), {}
            try:
                with tarfile.open(self.path, "r:*") as tf:
                    for member in tf:
                        name = _clean(member.name)
                        if member.isfile() and name in wanted:
                            f = tf.extractfile(member)
                            assert f is not None
                            found[name] = f.read()
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                raise DataError(f"{self.path}: not a readable archive ({exc})") from None
            for name in names:
                if name not in found:
                    raise DataError(f"{self.where(name)}: file not found")
                yield name, found.pop(name)
            return
        zf = zipfile.ZipFile(self.path) if self.kind == "zip" else None
        try:
            for name in names:
                try:
                    if zf is not None:
                        data = zf.read(name)
                    else:
                        data = (self.path / name).read_bytes()
                except KeyError:
                    raise DataError(f"{self.where(name)}: file not found") from None
                except (OSError, zipfile.BadZipFile, zlib.error) as exc:
                    raise DataError(f"{self.where(name)}: could not be read ({exc})") from None
                yield name, data
        finally:
            if zf is not None:
                zf.close()

    def find_prefix(self, marker: str) -> str:
        """``""`` when ``marker`` (a file or folder path) is at the top, else ``"<top>/"`` when
        it is inside exactly one top-level folder; a DataError otherwise."""
        names = self.listing()
        tops = {n.split("/", 1)[0] for n in names if "/" in n}

        def has(prefix: str) -> bool:
            p = prefix + marker
            return p in names or any(n.startswith(p + "/") for n in names)

        if has(""):
            return ""
        inside = [t for t in sorted(tops) if has(t + "/")]
        if len(inside) == 1:
            return inside[0] + "/"
        raise DataError(f"{self.path}: no {marker} (looked at the top and one folder down)")


def _clean(name: str) -> str:
    return str(PurePosixPath(name.removeprefix("./")))


# ---------------------------------------------------------------------------------------------
# decoding and the cache


def decode_image(
    data: bytes, where: str, *, size: tuple[int, int] | None, resize: bool, color: str
) -> np.ndarray:
    """One image file's bytes as uint8 (C, H, W) in ``color`` (``rgb`` or ``grayscale``).

    ``size`` is (height, width); an image of another size is resized (bilinear) when
    ``resize``, else refused.

    Raises:
        DataError: not a readable image (corrupted, truncated, not an image), or of the wrong
            size; the message names ``where``.
    """
    from PIL import Image, UnidentifiedImageError

    mode, _ = COLOR_MODES[color]
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            out = img.convert(mode)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{where}: not a readable image ({exc})") from None
    if size is not None and out.size != (size[1], size[0]):
        if not resize:
            raise DataError(
                f"{where}: image is {out.size[1]}x{out.size[0]} (HxW), expected "
                f"{size[0]}x{size[1]}; set data.resize=true to resize, or data.image_size"
            )
        out = out.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(out, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def fingerprint_of(tree: FileTree, **options: object) -> str:
    """sha256 of the cache version, the decoding options and the source's fingerprint."""
    payload = json.dumps([CACHE_VERSION, options, tree.fingerprint()], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class DecodePlan:
    """What to decode into a cache: per split, the files in order and their labels."""

    tree: FileTree
    splits: dict[str, tuple[list[str], np.ndarray]]
    classes: tuple[str, ...]
    size: tuple[int, int]  # (height, width)
    resize: bool
    color: str


def cached_splits(
    cache: Path, fingerprint: str, plan: Callable[[], DecodePlan]
) -> tuple[dict[str, ImageSet], tuple[str, ...]]:
    """The splits cached at ``cache`` when its fingerprint matches, else those of ``plan()``
    decoded into it first (one pass over the source for all splits).

    Returns:
        ``{split: ImageSet}`` with memory-mapped images, and the class names.

    Raises:
        DataError: a file of the source is unreadable or of the wrong size (named), or the
            cache cannot be written (then ``data.cache_dir`` is the fix).
    """
    hit = _read_cache(cache, fingerprint)
    if hit is not None:
        return hit
    _check_writable(cache)
    p = plan()
    n = sum(len(names) for names, _ in p.splits.values())
    log.info("decoding %d images of %s into %s", n, p.tree.path, cache)
    try:
        _write_cache(cache, fingerprint, p)
    except OSError as exc:  # read-only, not a folder, disk full (read errors are DataErrors)
        raise DataError(
            f"{cache}: cannot write the decoded-image cache ({exc}); "
            "set data.cache_dir to a writable folder"
        ) from None
    hit = _read_cache(cache, fingerprint)
    if hit is None:  # pragma: no cover - written just above
        raise DataError(f"{cache}: the cache just written cannot be read back")
    return hit


def _check_writable(cache: Path) -> None:
    """Refuse a folder marked read-only (no write bit at all), even where the process could
    write there anyway (root ignores the mode): shared data folders are marked so."""
    folder = cache.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.exists() and not folder.stat().st_mode & 0o222:
        raise DataError(
            f"{cache}: cannot write the decoded-image cache ({folder} is read-only); "
            "set data.cache_dir to a writable folder"
        )


def _read_cache(
    cache: Path, fingerprint: str
) -> tuple[dict[str, ImageSet], tuple[str, ...]] | None:
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                log.info("%s: the source changed, decoding again", cache)
                return None
            classes = tuple(str(c) for c in z["classes"])
            names = [str(s) for s in z["splits"]]
            labels = {s: np.array(z[f"{s}_labels"], dtype=np.int64) for s in names}
        splits = {}
        for s in names:
            images = read_npz_array(cache, f"{s}_images", require_mmap=True)
            if images.ndim != 4 or images.shape[0] != labels[s].shape[0]:
                return None
            splits[s] = ImageSet(images=images, labels=labels[s])
    except (DataError, OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        log.warning("%s: unreadable cache (%s), decoding again", cache, exc)
        return None
    return splits, classes


def _write_cache(cache: Path, fingerprint: str, plan: DecodePlan) -> None:
    """Stream the decoded images into an uncompressed .npz (one image in memory at a time)."""
    channels = COLOR_MODES[plan.color][1]
    tree = plan.tree
    order = [name for names, _ in plan.splits.values() for name in names]
    files = tree.read(order)
    with (
        atomic_open(cache, "wb") as f,
        zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf,
    ):
        for split, (names, _) in plan.splits.items():
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                "fortran_order": False,
                "shape": (len(names), channels, *plan.size),
            }
            with zf.open(f"{split}_images.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(member, header)
                for _ in range(len(names)):
                    name, data = next(files)
                    image = decode_image(
                        data, tree.where(name), size=plan.size, resize=plan.resize, color=plan.color
                    )
                    member.write(image.tobytes())
        small = {f"{s}_labels": np.asarray(y, np.int64) for s, (_, y) in plan.splits.items()}
        small["splits"] = np.array(list(plan.splits), dtype=str)
        small["classes"] = np.array(list(plan.classes), dtype=str)
        small["fingerprint"] = np.array(fingerprint)
        for key, array in small.items():
            with zf.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def cache_path(root: Path, cache_dir: str | None, layout: str, **options: object) -> Path:
    """``<cache_dir or <root>.afa-cache beside root>/<layout>-<options>.npz``: one file per set
    of decoding options, overwritten when the source changes."""
    folder = Path(cache_dir) if cache_dir else root.parent / f"{root.name}.afa-cache"
    tag = "-".join(f"{k}{v}" for k, v in sorted(options.items()))
    return folder / f"{layout}-{tag}.npz"


def first_image_size(tree: FileTree, name: str) -> tuple[int, int]:
    """(height, width) of one image, for ``image_size: null``."""
    for _, data in tree.read([name]):
        image = decode_image(data, tree.where(name), size=None, resize=False, color="rgb")
        return int(image.shape[1]), int(image.shape[2])
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# imagefolder


def class_files(tree: FileTree, split_dir: str) -> dict[str, list[str]]:
    """``{class: sorted image paths}`` under ``split_dir`` (e.g. ``"train"``), classes sorted.

    Raises:
        DataError: no class folder, or a class folder without images (both named).
    """
    prefix = split_dir.rstrip("/") + "/"
    classes: dict[str, list[str]] = {}
    stray = 0
    for name in tree.listing():
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        if len(parts) == 1:
            stray += 1  # a file directly in the split folder belongs to no class
            continue
        if any(p.startswith(".") for p in parts):
            continue
        files = classes.setdefault(parts[0], [])
        if is_image(parts[-1]):
            files.append(name)
    if stray:
        log.warning("%s: %d file(s) outside class folders ignored", tree.where(split_dir), stray)
    if not classes:
        raise DataError(
            f"{tree.where(split_dir)}: no class folders (expected {split_dir}/<class>/<image>)"
        )
    for cls, files in classes.items():
        if not files:
            raise DataError(
                f"{tree.where(prefix + cls)}: class folder without image files "
                f"({', '.join(IMAGE_SUFFIXES)})"
            )
    return dict(sorted(classes.items()))


def _split_dirs(tree: FileTree, top: str) -> set[str]:
    return {
        rest.split("/", 1)[0]
        for n in tree.listing()
        if n.startswith(top) and "/" in (rest := n[len(top) :])
    }


@DATASETS.register("imagefolder")
def load_imagefolder(cfg: DataConfig) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """``root/train/<class>/*`` and ``root/test/<class>/*`` (or ``val/``), as torchvision's
    ImageFolder; ``root`` a folder or an archive.

    Without a test folder, a stratified ``test_size`` (default 10%, with a warning) is carved
    out of train with a fixed seed. Images are ``image_size`` square (null: the first image's
    size), resized when ``resize``, in ``color``. Augment auto is crop-flip for RGB, none for
    grayscale; mean and std are those of the training split.
    """
    if cfg.color not in COLOR_MODES:
        raise ConfigError(f"color: expected rgb or grayscale, got {cfg.color!r}")
    if cfg.image_size is not None and cfg.image_size < 1:
        raise ConfigError(f"image_size: expected a positive size in pixels, got {cfg.image_size}")
    if cfg.resize and cfg.image_size is None:
        raise ConfigError("resize: true needs data.image_size (the size to resize to)")
    root = Path(cfg.root)
    tree = FileTree(root)
    options = {"size": cfg.image_size or "native", "resize": cfg.resize, "color": cfg.color}
    cache = cache_path(root, cfg.cache_dir, "imagefolder", **options)

    def plan() -> DecodePlan:
        top = tree.find_prefix("train")
        train_classes = class_files(tree, top + "train")
        classes = tuple(train_classes)
        splits = {"train": _labelled(train_classes, classes)}
        test_dir = next((d for d in ("test", "val") if d in _split_dirs(tree, top)), None)
        if test_dir is not None:
            test_classes = class_files(tree, top + test_dir)
            extra = sorted(set(test_classes) - set(classes))
            missing = sorted(set(classes) - set(test_classes))
            if extra or missing:
                raise DataError(
                    f"{tree.where(top + test_dir)}: class folders differ from train/'s "
                    f"(missing: {', '.join(missing) or '-'}; not in train/: "
                    f"{', '.join(extra) or '-'})"
                )
            splits["test"] = _labelled(test_classes, classes)
        if cfg.image_size is not None:
            size = (cfg.image_size, cfg.image_size)
        else:
            size = first_image_size(tree, splits["train"][0][0])
        return DecodePlan(tree, splits, classes, size, cfg.resize, cfg.color)

    fingerprint = fingerprint_of(tree, layout="imagefolder", **options)
    splits, class_names = cached_splits(cache, fingerprint, plan)
    train = splits["train"]
    if "test" in splits:
        if cfg.test_size is not None:
            raise ConfigError(
                f"test_size: {root} has a test/ (or val/) folder, used as the test set; "
                "remove data.test_size, or the folder"
            )
        test = splits["test"]
    else:
        n_test = holdout_count(
            CARVED_TEST_FRACTION if cfg.test_size is None else cfg.test_size,
            len(train),
            "test_size",
        )
        if cfg.test_size is None:
            message = (
                f"{root}: no test/ or val/ folder; holding out a fixed stratified "
                f"{CARVED_TEST_FRACTION:.0%} of train/ ({n_test} images, seed "
                f"{CARVED_TEST_SEED}) as the test set (set data.test_size to choose)"
            )
            warnings.warn(message, stacklevel=2)
            log.warning(message)
        train, test = carve_test(train, n_test)
    if "test" in splits:
        # The tree lists images class by class; "the first N test examples" of
        # `afa eval --n` must not be one or two classes.
        test = subset(test, class_interleaved(test.labels, CARVED_TEST_SEED))

    mean, std = channel_stats(train.images)
    channels = int(train.images.shape[1])
    info = DatasetInfo(
        name=root.name.split(".")[0],
        num_classes=len(class_names),
        image_shape=tuple(int(s) for s in train.images.shape[1:]),
        mean=mean,
        std=std,
        class_names=class_names,
        augment="crop-flip" if channels == 3 else "none",
    )
    return train, test, info


def _labelled(files: dict[str, list[str]], classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Paths of ``files`` in class order, and their labels (the class's index in ``classes``)."""
    index = {c: i for i, c in enumerate(classes)}
    names = [f for c in files for f in files[c]]
    labels = np.repeat([index[c] for c in files], [len(files[c]) for c in files]).astype(np.int64)
    return names, labels
