"""Array helpers shared by the datasets: stratified splits, subsets, statistics, memory maps."""

from __future__ import annotations

import mmap

import numpy as np

from afa.data.base import ImageSet
from afa.errors import ConfigError, DataError


def holdout_count(size: float, n: int, what: str = "val_size") -> int:
    """How many of ``n`` examples a split of ``size`` holds out.

    ``size`` is a fraction in (0, 1), a whole count >= 1, or 0 (nothing held out).
    """
    if size == 0:
        return 0
    if 0 < size < 1:
        count = int(round(size * n))
    elif size >= 1 and float(size).is_integer():
        count = int(size)
    else:
        raise ConfigError(
            f"{what}: expected 0, a fraction in (0, 1) or a whole count >= 1, got {size!r}"
        )
    if count >= n:
        raise ConfigError(f"{what}={size!r} holds out {count} of only {n} examples")
    return count


def stratified_split(labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held out) with ``count`` held out, class by class.

    Each class gives up its proportional share of ``count`` (largest-remainder rounding, so the
    total is exact). The result is a pure function of (labels, count, seed); both index arrays
    are sorted.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if not 0 <= count < max(n, 1):
        raise ValueError(f"cannot hold out {count} of {n} examples")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = count * counts / n
    take = np.floor(quota).astype(np.int64)
    # Hand the remaining examples to the classes with the largest fractional parts.
    remainder = count - int(take.sum())
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:remainder]] += 1
    held = []
    for cls, k in zip(classes, take, strict=True):
        members = np.flatnonzero(labels == cls)
        held.append(rng.permutation(members)[:k])
    held_idx = np.sort(np.concatenate(held)) if held else np.empty(0, np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def class_interleaved(labels: np.ndarray, seed: int) -> np.ndarray:
    """An order of ``range(len(labels))`` in which the classes take turns.

    Each class's members come in a seeded random order and are spread evenly over the
    result (member j of a class of n sits at about position (j + 1/2) / n of the way), so
    every prefix is as close to class-balanced as the counts allow. Evaluation takes "the
    first N test examples": on a class-ordered source (an ImageFolder tree) the first N of
    a sorted split would be one or two classes. A pure function of (labels, seed).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    key = np.empty(labels.shape[0], np.float64)
    classes = np.unique(labels)
    offset = rng.permutation(len(classes)) / max(len(classes), 1)  # who goes first in a tie
    for c, cls in enumerate(classes):
        members = rng.permutation(np.flatnonzero(labels == cls))
        key[members] = (np.arange(len(members)) + 0.5 + 1e-6 * offset[c]) / len(members)
    return np.argsort(key, kind="stable")


def subset(data: ImageSet, idx: np.ndarray) -> ImageSet:
    """The examples ``idx`` of ``data`` in that order, copied into memory."""
    idx = np.asarray(idx, dtype=np.int64)
    return ImageSet(images=np.ascontiguousarray(data.images[idx]), labels=data.labels[idx])


def channel_stats(
    images: np.ndarray, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images scaled to [0, 1].

    Read in chunks so a memory-mapped array is never loaded whole.
    """
    n, c = images.shape[:2]
    total = np.zeros(c, np.float64)
    total_sq = np.zeros(c, np.float64)
    mapping = file_mapping(images)
    for start in range(0, n, chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        total_sq += np.square(block).sum(axis=(0, 2, 3))
        if mapping is not None:
            mapping.madvise(mmap.MADV_DONTNEED)
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Labels as int64, or a DataError naming ``where`` when any is outside [0, num_classes)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"{where}: expected 1-D labels, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: expected integer labels, got dtype {labels.dtype}")
    labels = labels.astype(np.int64, copy=False)
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise DataError(f"{where}: label {bad} is outside [0, {num_classes})")
    return labels


def file_mapping(array: np.ndarray) -> mmap.mmap | None:
    """The read-only file mapping behind ``array`` (a memory map or a view of one), else None.

    Loaders call ``madvise(MADV_DONTNEED)`` on it after each read: every page a random batch
    touches, with the neighbours the kernel maps in alongside it (fault-around, large page-cache
    folios: about 1 MiB per image read here), would otherwise stay mapped, and the resident set
    of a long run would climb to the file's size although nothing was loaded. Dropping the
    mapping keeps the pages in the page cache, so the next read faults them back in cheaply.
    None for in-memory or writeable arrays (where dropping pages could lose changes) and where
    the platform has no ``MADV_DONTNEED``.
    """
    if array.flags.writeable or not hasattr(mmap, "MADV_DONTNEED"):
        return None
    base = array.base
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base
