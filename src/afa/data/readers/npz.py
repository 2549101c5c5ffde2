"""``.npz`` files: memory-mapped member arrays, and the ``npz`` dataset.

``np.load(path, mmap_mode="r")`` memory-maps a ``.npy`` file but silently reads the members of a
``.npz`` whole. An uncompressed ``.npz`` (``np.savez``) is a zip archive whose members are stored
verbatim, so each member's array is a byte range of the file: ``read_npz_array`` finds it from
the zip local header and the ``.npy`` header and returns an ``np.memmap`` over it.
"""

from __future__ import annotations

import logging
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np

from afa.data.arrays import (
    channel_stats,
    check_labels,
    class_interleaved,
    stratified_split,
    subset,
)
from afa.data.base import DataConfig, DatasetInfo, ImageSet
from afa.data.registry import DATASETS
from afa.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, 22 bytes we skip, name and extra lengths
_LOCAL_SIGNATURE = b"PK\x03\x04"

# The test split carved out of an npz file that has no test arrays: fixed for every run.
CARVED_TEST_FRACTION = 0.1
CARVED_TEST_SEED = 20240101


def carve_test(
    train: ImageSet, n_test: int, notice: str | None = None
) -> tuple[ImageSet, ImageSet]:
    """Hold a fixed stratified ``n_test`` out of ``train`` as the test set (for data that
    ship without one), its classes taking turns so that any first N examples see every
    class (:func:`~afa.data.arrays.class_interleaved`). ``notice``, when given, is warned
    and logged first: the user did not choose this test set."""
    if notice is not None:
        warnings.warn(notice, stacklevel=3)
        log.warning(notice)
    keep, held = stratified_split(train.labels, n_test, CARVED_TEST_SEED)
    held = held[class_interleaved(train.labels[held], CARVED_TEST_SEED)]
    return subset(train, keep), subset(train, held)


def npz_keys(path: str | Path) -> list[str]:
    """The array names in an ``.npz`` file (member names without ``.npy``)."""
    path = Path(path)
    with _open_zip(path) as zf:
        return [n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")]


def read_npz_array(path: str | Path, key: str, *, require_mmap: bool = False) -> np.ndarray:
    """The array ``key`` of the ``.npz`` file ``path``, memory-mapped read-only when stored.

    Args:
        path: an ``.npz`` file.
        key: the array's name (as passed to ``np.savez``).
        require_mmap: raise instead of loading a compressed member into memory.

    Raises:
        DataError: the file is missing or not a zip, ``key`` is absent, the member is truncated
            or holds Python objects, or it is compressed and ``require_mmap`` is set.
    """
    path = Path(path)
    with _open_zip(path) as zf:
        info = _member(zf, path, key)
        stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1
    if not stored:
        if require_mmap:
            raise DataError(
                f"{path}: array {key!r} is compressed (np.savez_compressed), so it cannot be "
                f"memory-mapped; save it with np.savez instead, or convert it once with "
                f"python -c \"import numpy as np; np.savez('converted.npz', **np.load('{path}'))\""
            )
        return _load_whole(path, key)

    with path.open("rb") as f:
        f.seek(info.header_offset)
        raw = f.read(_LOCAL_HEADER.size)
        if len(raw) < _LOCAL_HEADER.size:
            raise DataError(f"{path}: array {key!r}: the file is truncated")
        signature, name_len, extra_len = _LOCAL_HEADER.unpack(raw)
        if signature != _LOCAL_SIGNATURE:
            raise DataError(f"{path}: array {key!r}: corrupted zip header")
        data_start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        member_end_limit = data_start + info.file_size
        f.seek(data_start)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except ValueError as exc:
            raise DataError(f"{path}: array {key!r}: not a valid .npy member ({exc})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: array {key!r} holds Python objects, not numbers")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset + nbytes > member_end_limit or offset + nbytes > path.stat().st_size:
        raise DataError(
            f"{path}: array {key!r} is truncated: its header says {shape} {dtype} "
            f"({nbytes} bytes) but the file holds fewer"
        )
    if nbytes == 0:
        return np.empty(shape, dtype)
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran_order else "C"
    )


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def _member(zf: zipfile.ZipFile, path: Path, key: str) -> zipfile.ZipInfo:
    try:
        return zf.getinfo(f"{key}.npy")
    except KeyError:
        keys = [n.removesuffix(".npy") for n in zf.namelist()]
        raise DataError(f"{path}: no array {key!r}; the file holds {keys}") from None


def _load_whole(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]
    except Exception as exc:  # zlib, zip CRC, pickled objects: all mean a bad file
        raise DataError(f"{path}: array {key!r} could not be read ({exc})") from None


def as_nchw(images: np.ndarray, where: str) -> np.ndarray:
    """A (N, C, H, W) view of uint8 images stored NCHW or NHWC (C in {1, 3}); no copy.

    NHWC is chosen when the last dimension is 1 or 3 and the second is not.
    """
    if images.dtype != np.uint8:
        raise DataError(f"{where}: expected uint8 images (0..255), got dtype {images.dtype}")
    if images.ndim != 4:
        raise DataError(
            f"{where}: expected 4-D images (N, C, H, W) or (N, H, W, C), got shape {images.shape}"
        )
    if images.shape[3] in (1, 3) and images.shape[1] not in (1, 3):
        return images.transpose(0, 3, 1, 2)
    if images.shape[1] in (1, 3):
        return images
    raise DataError(
        f"{where}: cannot find the channel dimension (1 or 3) in image shape {images.shape}"
    )


def _read_pair(path: Path, image_key: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images = as_nchw(read_npz_array(path, image_key), f"{path} (key {image_key!r})")
    labels = np.asarray(read_npz_array(path, label_key))
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{path}: {image_key!r} has {images.shape[0]} images but {label_key!r} has shape "
            f"{labels.shape}"
        )
    return images, labels


@DATASETS.register("npz")
def load_npz(cfg: DataConfig) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """Any ``.npz`` of uint8 images (NCHW or NHWC) and integer labels, keys named by ``cfg``.

    Uncompressed members stay memory-mapped (until ``val_size`` or a carved test split copies the
    parts they select). Without the test keys, a stratified 10% test split is carved out with a
    fixed seed, and a warning says so. ``num_classes`` is ``cfg.num_classes`` or max label + 1;
    augment auto is crop-flip for 3-channel images and none for 1-channel ones.
    """
    if cfg.path is None:
        raise ConfigError("path: the npz dataset needs path: FILE.npz")
    path = Path(cfg.path)
    keys = npz_keys(path)
    images, labels = _read_pair(path, cfg.image_key, cfg.label_key)
    has_test = (cfg.test_image_key in keys, cfg.test_label_key in keys)
    if all(has_test):
        test_images, test_labels = _read_pair(path, cfg.test_image_key, cfg.test_label_key)
        if test_images.shape[1:] != images.shape[1:]:
            raise DataError(
                f"{path}: test images {cfg.test_image_key!r} are {test_images.shape[1:]} but "
                f"training images {cfg.image_key!r} are {images.shape[1:]} (C, H, W)"
            )
    elif any(has_test):
        present, absent = (
            (cfg.test_image_key, cfg.test_label_key)
            if has_test[0]
            else (cfg.test_label_key, cfg.test_image_key)
        )
        raise DataError(f"{path}: holds {present!r} but not {absent!r}")
    else:
        test_images, test_labels = None, None

    num_classes = cfg.num_classes
    if num_classes is None:
        all_labels = labels if test_labels is None else np.concatenate([labels, test_labels])
        num_classes = int(all_labels.max()) + 1 if all_labels.size else 0
    labels = check_labels(labels, num_classes, f"{path} (key {cfg.label_key!r})")
    train = ImageSet(images=images, labels=labels)
    if test_images is not None and test_labels is not None:
        test = ImageSet(
            images=test_images,
            labels=check_labels(test_labels, num_classes, f"{path} (key {cfg.test_label_key!r})"),
        )
    else:
        n_test = int(round(CARVED_TEST_FRACTION * len(train)))
        message = (
            f"{path}: no {cfg.test_image_key!r}/{cfg.test_label_key!r} arrays; holding out a "
            f"fixed stratified {CARVED_TEST_FRACTION:.0%} of {cfg.image_key!r} ({n_test} "
            f"images, seed {CARVED_TEST_SEED}) as the test set"
        )
        train, test = carve_test(train, n_test, notice=message)

    mean, std = channel_stats(train.images)
    channels, height, width = (int(s) for s in train.images.shape[1:])
    info = DatasetInfo(
        name=path.stem,
        num_classes=num_classes,
        image_shape=(channels, height, width),
        mean=mean,
        std=std,
        class_names=tuple(str(i) for i in range(num_classes)),
        augment="crop-flip" if channels == 3 else "none",
    )
    return train, test, info
