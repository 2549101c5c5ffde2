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
size and mtime of an archive, so a changed folder is decoded again; the CRC-32 of every member is
checked on opening, and a damaged cache is decoded again with a one-line warning.

Every folder dataset lists its files through :class:`FileTree`, which leaves out entries that
are not data (:func:`is_hidden`: dot entries such as ``.DS_Store`` and ``._<name>``,
``__MACOSX/``, ``Thumbs.db``, ``desktop.ini``) and bounds what reading may cost (the ``MAX_*``
constants below: a file's size, an archive's total and member count, an image's pixels), so a
crafted archive or image is refused by name before it is read.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import re
import stat
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from afa._io import atomic_open
from afa.data.arrays import (
    channel_stats,
    class_interleaved,
    holdout_count,
    subset,
)
from afa.data.base import DataConfig, DatasetInfo, ImageSet
from afa.data.readers.npz import CARVED_TEST_FRACTION, CARVED_TEST_SEED, carve_test, read_npz_array
from afa.data.registry import DATASETS
from afa.errors import ConfigError, DataError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# torchvision's IMG_EXTENSIONS, compared case-insensitively (Tiny-ImageNet writes .JPEG).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_VERSION = 1  # bump when the cache's content changes meaning
COLOR_MODES = {"rgb": ("RGB", 3), "grayscale": ("L", 1)}

# What reading a folder dataset may cost. Each bound is checked before the bytes are read
# (the size an archive or the file system declares) and again on the bytes read (a header
# that lies); sized for real datasets with a wide margin, far below what a crafted file
# (a "zip bomb", a "decompression bomb" image) would make a reader allocate.
MAX_FILE_BYTES = 64 * 2**20  # one image or text file: a Tiny-ImageNet JPEG is ~2 KB, its
# words.txt 2.7 MB, a 24-megapixel camera JPEG ~10 MB
MAX_ARCHIVE_BYTES = 4 * 2**30  # an archive's files together, uncompressed (a tar's wanted
# files are held in memory during its one pass): Tiny-ImageNet's zip ~0.25 GB, CIFAR-10 as
# JPEGs ~0.1 GB. A folder has no such total (it is read one file at a time)
MAX_ARCHIVE_MEMBERS = 500_000  # Tiny-ImageNet's zip holds ~120,000; a larger set: a folder
MAX_IMAGE_PIXELS = 8192 * 8192  # 67 megapixels: any camera photo, not a 20000x20000 bomb
MIN_IMAGE_SIDE = 8  # the digits' 8x8, the smallest input every model is tested at; a 1x1 or
# 2x2 file is a placeholder, not a training image (and the cnn's 2x2 max-pool needs two)
# Entries no folder dataset reads (compared lowercase), besides every dot entry (.DS_Store,
# ._<name> resource forks, .git/): macOS's zip resource-fork folder, Windows' thumbnail
# cache and folder settings.
HIDDEN_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini"})
# Modes Pillow gives 16-bit grayscale (PNG, TIFF); 16-bit RGB(A) and LA arrive as 8-bit
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_READ_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    RuntimeError,  # an encrypted zip member
    NotImplementedError,  # a zip compression method Python lacks
)


def is_image(name: str) -> bool:
    """Whether ``name`` has an image suffix (case-insensitive)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


class FileTree:
    """A folder, a ``.tar(.gz|.bz2|.xz)`` or a ``.zip``, read as relative POSIX paths of
    regular files, hidden entries left out (:func:`is_hidden`).

    Archives are read in place: a tar in one sequential pass (gzip has no random access), a
    zip member by member. What reading may cost is bounded (``MAX_*`` above): an archive's
    member count and total size when it is listed, each file's size before it is read, and
    the bytes actually read (a header that lies).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.kind = "dir"
        elif not self.path.exists():
            raise DataError(f"{self.path}: not found (expected a folder, .tar, .tar.gz or .zip)")
        elif zipfile.is_zipfile(self.path):
            self.kind = "zip"
        elif _is_tar(self.path):
            self.kind = "tar"
        else:
            raise DataError(f"{self.path}: not a folder, a readable .tar(.gz) or a .zip archive")
        self._listing: dict[str, tuple[int, int]] | None = None  # name -> (size, mtime_ns)
        self._texts: dict[str, bytes] = {}  # a tar's .txt members, read during the listing

    def where(self, name: str) -> str:
        """How error messages name the file ``name``."""
        return str(self.path / name) if self.kind == "dir" else f"{self.path}:{name}"

    def listing(self) -> dict[str, tuple[int, int]]:
        """Every regular file but the hidden ones: relative path -> (size, mtime in ns),
        sorted by path.

        Raises:
            DataError: the archive is unreadable, or holds more members or more bytes than
                ``MAX_ARCHIVE_MEMBERS`` / ``MAX_ARCHIVE_BYTES``.
        """
        if self._listing is None:
            try:
                if self.kind == "dir":
                    found = self._list_dir()
                elif self.kind == "zip":
                    found = self._list_zip()
                else:
                    found = self._list_tar()
            except _READ_ERRORS as exc:
                raise DataError(f"{self.path}: could not be read ({exc})") from None
            self._listing = dict(sorted(found.items()))
        return self._listing

    def _list_dir(self) -> dict[str, tuple[int, int]]:
        found = {}
        for dirpath, dirnames, filenames in os.walk(self.path, followlinks=True):
            dirnames[:] = [d for d in dirnames if not is_hidden(d)]
            rel = Path(dirpath).relative_to(self.path).as_posix()
            for f in filenames:
                if is_hidden(f):
                    continue
                st = os.stat(os.path.join(dirpath, f))
                if stat.S_ISREG(st.st_mode):  # not a pipe or a device (a link to /dev/zero)
                    found[f if rel == "." else f"{rel}/{f}"] = (st.st_size, st.st_mtime_ns)
        return found

    def _list_zip(self) -> dict[str, tuple[int, int]]:
        with zipfile.ZipFile(self.path) as zf:
            infos = zf.infolist()
        self._check_archive(len(infos), sum(i.file_size for i in infos))
        return {
            i.filename: (i.file_size, 0)
            for i in infos
            if not i.is_dir() and not is_hidden(i.filename)
        }

    def _list_tar(self) -> dict[str, tuple[int, int]]:
        found = {}
        count = total = 0
        with _open_tar(self.path) as tf:
            for member in tf:  # each header is checked before the next is read
                count += 1
                total += member.size if member.isfile() else 0
                self._check_archive(count, total)
                name = _clean(member.name)
                if not member.isfile() or is_hidden(name):
                    continue
                found[name] = (member.size, int(member.mtime))
                if name.endswith(".txt"):  # keep the labels files: no 2nd pass
                    self._texts[name] = _read_capped(tf, member, self.where(name))
        return found

    def _check_archive(self, members: int, total: int) -> None:
        if members > MAX_ARCHIVE_MEMBERS:
            raise DataError(
                f"{self.path}: more than {MAX_ARCHIVE_MEMBERS:,} members, the most an archive "
                "may hold (afa.data.readers.folder.MAX_ARCHIVE_MEMBERS); extract it and give the folder"
            )
        if total > MAX_ARCHIVE_BYTES:
            raise DataError(
                f"{self.path}: members of more than {MAX_ARCHIVE_BYTES:,} bytes in all "
                "(uncompressed), the most an archive may hold "
                "(afa.data.readers.folder.MAX_ARCHIVE_BYTES); extract it and give the folder"
            )

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
        """``(name, bytes)`` for each name, in the given order.

        Raises:
            DataError: a file not found, unreadable, or larger than ``MAX_FILE_BYTES`` (its
                declared size is checked before it is read, the bytes read as well).
        """
        if self.kind != "dir":
            self.listing()  # an archive's totals are checked before any member is read
        if self.kind == "tar" and all(n in self._texts for n in names):
            yield from ((n, self._texts[n]) for n in names)
            return
        if self.kind == "tar":
            # One pass over the archive keeps the bytes of the wanted members (at most
            # MAX_ARCHIVE_BYTES in all).
            wanted, found = set(names), {}
            try:
                with _open_tar(self.path) as tf:
                    for member in tf:
                        name = _clean(member.name)
                        if member.isfile() and name in wanted:
                            found[name] = _read_capped(tf, member, self.where(name))
            except _READ_ERRORS as exc:
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
                        info = zf.getinfo(name)
                        _check_file_size(info.file_size, self.where(name))
                        with zf.open(info) as f:  # inflating no more than it declares
                            data = f.read(info.file_size + 1)
                    else:
                        with open(self.path / name, "rb") as f:
                            _check_file_size(os.fstat(f.fileno()).st_size, self.where(name))
                            data = f.read(MAX_FILE_BYTES + 1)
                except (KeyError, FileNotFoundError):
                    raise DataError(f"{self.where(name)}: file not found") from None
                except _READ_ERRORS as exc:
                    raise DataError(f"{self.where(name)}: could not be read ({exc})") from None
                _check_file_size(len(data), self.where(name), declared=False)
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


def is_hidden(name: str) -> bool:
    """Whether the relative path ``name`` is, or lies in, an entry that is not data: a dot
    entry (``.DS_Store``, ``._<name>`` resource forks, ``.git/``) or one of ``HIDDEN_NAMES``
    (``__MACOSX/``, ``Thumbs.db``, ``desktop.ini``; any case)."""
    return any(p.startswith(".") or p.lower() in HIDDEN_NAMES for p in name.split("/") if p)


def _check_file_size(size: int, where: str, *, declared: bool = True) -> None:
    """Refuse a file of ``size`` bytes over ``MAX_FILE_BYTES``: as declared (before reading),
    or as read (``declared=False``: a header that understated it)."""
    if size > MAX_FILE_BYTES:
        what = f"{size:,} bytes" if declared else "more bytes than its header declares"
        raise DataError(
            f"{where}: {what}; a data file may have at most {MAX_FILE_BYTES:,} "
            "(afa.data.readers.folder.MAX_FILE_BYTES)"
        )


def _read_capped(tf: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> bytes:
    """A tar member's bytes, its declared size checked first and the read capped."""
    _check_file_size(member.size, where)
    f = tf.extractfile(member)
    assert f is not None
    data = f.read(MAX_FILE_BYTES + 1)
    _check_file_size(len(data), where, declared=False)
    return data


# (magic bytes, opener) of the compressions a tar may come in; else an uncompressed tar
_TAR_COMPRESSIONS: tuple[tuple[bytes, Callable[[Path], io.BufferedIOBase]], ...] = (
    (b"\x1f\x8b", lambda p: gzip.GzipFile(p, "rb")),
    (b"BZh", lambda p: bz2.BZ2File(p, "rb")),
    (b"\xfd7zXZ\x00", lambda p: lzma.LZMAFile(p, "rb")),
)


class _CappedStream:
    """The decompressed stream of a tar, refusing any single read larger than a file may be:
    tarfile reads a pax or GNU long-name header whole, before its member is returned."""

    def __init__(self, raw: io.BufferedIOBase, path: Path) -> None:
        self.raw, self.path = raw, path

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > MAX_FILE_BYTES + 1024:
            what = f"{size:,} bytes" if size is not None and size >= 0 else "unbounded size"
            raise DataError(
                f"{self.path}: a tar record of {what}; a data file may have at most "
                f"{MAX_FILE_BYTES:,} (afa.data.readers.folder.MAX_FILE_BYTES)"
            )
        return self.raw.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def write(self, b: bytes) -> int:
        raise io.UnsupportedOperation(f"{self.path}: read only")

    def close(self) -> None:
        self.raw.close()


@contextmanager
def _open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """``path`` as a TarFile read through :class:`_CappedStream` (gzip, bzip2, xz or none)."""
    with open(path, "rb") as f:
        magic = f.read(6)
    opener = next((o for m, o in _TAR_COMPRESSIONS if magic.startswith(m)), None)
    raw = opener(path) if opener is not None else open(path, "rb")  # noqa: SIM115
    try:
        with tarfile.open(fileobj=_CappedStream(raw, path), mode="r:") as tf:
            yield tf
    finally:
        raw.close()


def _is_tar(path: Path) -> bool:
    try:
        with _open_tar(path):
            return True
    except _READ_ERRORS:
        return False


def _clean(name: str) -> str:
    return str(PurePosixPath(name.removeprefix("./")))


# ---------------------------------------------------------------------------------------------
# decoding and the cache


def decode_image(
    data: bytes, where: str, *, size: tuple[int, int] | None, resize: bool, color: str
) -> np.ndarray:
    """One image file's bytes as uint8 (C, H, W) in ``color`` (``rgb`` or ``grayscale``).

    ``size`` is (height, width); an image of another size is resized (bilinear) when
    ``resize``, else refused. 16-bit samples keep their high byte (``>> 8``, as Pillow does
    for 16-bit RGB); 32-bit integer or floating-point samples are refused. The dimensions
    are checked from the header, before any pixel is decoded.

    Raises:
        DataError: not a readable image (corrupted, truncated, not an image), of the wrong
            size, smaller than ``MIN_IMAGE_SIDE`` or larger than ``MAX_IMAGE_PIXELS``, or of
            samples wider than 16 bits; the message names ``where``.
    """
    from PIL import Image, UnidentifiedImageError

    mode, _ = COLOR_MODES[color]
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb bound (89 megapixels) only warns below twice that.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                _check_dimensions(img.size, where)
                img.load()
                out = _eight_bit(img, where).convert(mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found[1]):,}" if found else "too many"
        raise DataError(
            f"{where}: image of {pixels} pixels; a dataset image may have at most "
            f"{MAX_IMAGE_PIXELS:,} (afa.data.readers.folder.MAX_IMAGE_PIXELS)"
        ) from None
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


def _check_dimensions(size: tuple[int, int], where: str) -> None:
    """Refuse an image (width, height) beyond ``MAX_IMAGE_PIXELS`` or below
    ``MIN_IMAGE_SIDE``, from its header alone."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{where}: image is {height}x{width} (HxW), {width * height:,} pixels; a dataset "
            f"image may have at most {MAX_IMAGE_PIXELS:,} (afa.data.readers.folder.MAX_IMAGE_PIXELS)"
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        raise DataError(
            f"{where}: image is {height}x{width} (HxW), smaller than the "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} minimum (afa.data.readers.folder.MIN_IMAGE_SIDE)"
        )


def _eight_bit(img: Image.Image, where: str) -> Image.Image:
    """``img`` with 8-bit samples: 16-bit grayscale keeps its high byte; 32-bit refused.

    Pillow's ``convert`` clips 16-bit values to 255 instead (a 16-bit PNG turns white).
    Pillow opens 16-bit grayscale as ``I;16*``, or as ``I`` (32-bit) for PGM and older
    versions' PNG, formats whose samples have at most 16 bits.
    """
    from PIL import Image

    if img.mode in SIXTEEN_BIT_MODES or (img.mode == "I" and img.format in ("PNG", "PPM")):
        samples = np.clip(np.asarray(img), 0, 0xFFFF)  # "I" is 32-bit: its PNG/PPM are not
        return Image.fromarray((samples >> 8).astype(np.uint8))
    if img.mode in ("I", "F") or img.mode.startswith(("I;", "F;")):
        kind = "floating-point" if img.mode.startswith("F") else "32-bit integer"
        raise DataError(
            f"{where}: {kind} samples (Pillow mode {img.mode}); expected an image of 8- or "
            "16-bit samples"
        )
    return img


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
    """The cached splits, or None (with a one-line note) when the cache is absent, of another
    source, or damaged: every member's CRC-32 is checked before the images are memory-mapped
    (a memory map reads no CRC, so flipped bytes would otherwise become silent pixels)."""
    if not cache.is_file():
        return None
    try:
        if cache.stat().st_size == 0:  # a write cut short before its first byte
            raise DataError("empty file")
        with np.load(cache, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                log.info("%s: the source changed, decoding again", cache)
                return None
            classes = tuple(str(c) for c in z["classes"])
            names = [str(s) for s in z["splits"]]
            labels = {s: np.array(z[f"{s}_labels"], dtype=np.int64) for s in names}
        with zipfile.ZipFile(cache) as zf:
            bad = zf.testzip()  # reads every member once (about 1 s per GB)
        if bad is not None:
            raise DataError(f"{bad}: CRC-32 mismatch")
        splits = {}
        for s in names:
            images = read_npz_array(cache, f"{s}_images", require_mmap=True)
            if images.ndim != 4 or images.shape[0] != labels[s].shape[0]:
                raise DataError(f"{s}_images: shape {images.shape} for {len(labels[s])} labels")
            splits[s] = ImageSet(images=images, labels=labels[s])
    except (DataError, KeyError, ValueError, *_READ_ERRORS) as exc:
        log.warning("%s: damaged decoded-image cache (%s); decoding the images again", cache, exc)
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
    if cfg.image_size is not None and cfg.image_size < MIN_IMAGE_SIDE:
        raise ConfigError(
            f"image_size: expected a size in pixels of at least {MIN_IMAGE_SIDE}, "
            f"got {cfg.image_size}"
        )
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
        notice = (
            f"{root}: no test/ or val/ folder; holding out a fixed stratified "
            f"{CARVED_TEST_FRACTION:.0%} of train/ ({n_test} images, seed "
            f"{CARVED_TEST_SEED}) as the test set (set data.test_size to choose)"
        )
        train, test = carve_test(train, n_test, notice if cfg.test_size is None else None)
    if "test" in splits:
        # The tree lists images class by class; "the first N test examples" of
        # `afa eval --n` must not be one or two classes.
        test = subset(test, class_interleaved(test.labels, CARVED_TEST_SEED))

    mean, std = channel_stats(train.images)
    channels, height, width = (int(s) for s in train.images.shape[1:])
    info = DatasetInfo(
        name=root.name.split(".")[0],
        num_classes=len(class_names),
        image_shape=(channels, height, width),
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
