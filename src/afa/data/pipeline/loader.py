"""Batches of uint8 images: seeded per-epoch order, rank sharding, and real + generated mixing.

Both loaders yield ``(x, y)``: ``x`` a (B, C, H, W) torch.uint8 CPU tensor, ``y`` (B,) int64.
The order of an epoch is a pure function of ``(seed, epoch)`` drawn from a local numpy
Generator, never a global RNG, so ``set_epoch`` is all a resumed run needs to replay it.

Each batch is read with its indices sorted (then put back in the batch's order), so a
memory-mapped array is read front to back rather than by random jumps.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from afa.data.arrays import file_mapping
from afa.data.base import DataConfig, ImageSet, Splits
from afa.data.readers.generated import load_generated
from afa.errors import DataError

#: What both loaders yield: ``(x, y)``, uint8 images and int64 labels on the CPU (the loop
#: makes the training step's :class:`afa.methods.Batch` of it on the device).
LoaderBatch = tuple[Tensor, Tensor]


# Rows read from a memory map between two releases of its pages (see arrays.file_mapping).
MAPPED_CHUNK = 16


def _read(
    data: ImageSet, idx: np.ndarray, images: np.ndarray, labels: np.ndarray, pos: np.ndarray
) -> None:
    """Write examples ``idx`` of ``data`` into rows ``pos`` of ``images`` and ``labels``.

    Reads in sorted index order. ``images`` is C-contiguous NCHW, so an NHWC memory map viewed as
    NCHW is transposed here, one batch at a time. A memory map is read ``MAPPED_CHUNK`` rows at a
    time and its pages released after each, so the resident set stays flat.
    """
    labels[pos] = data.labels[idx]
    order = np.argsort(idx, kind="stable")
    idx, pos = idx[order], pos[order]
    mapping = file_mapping(data.images)
    step = MAPPED_CHUNK if mapping is not None else max(len(idx), 1)
    for start in range(0, len(idx), step):
        rows = slice(start, start + step)
        images[pos[rows]] = data.images[idx[rows]]
        if mapping is not None:
            mapping.madvise(mmap.MADV_DONTNEED)


def _empty_batch(n: int, image_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    return np.empty((n, *image_shape), np.uint8), np.empty(n, np.int64)


class BatchLoader:
    """Batches of one ImageSet, optionally shuffled per epoch and sharded across ranks.

    With ``world_size > 1`` each rank takes every ``world_size``-th index of the epoch's order
    (disjoint shards). So that every rank runs the same number of batches, the order is cut to a
    multiple of ``world_size`` when ``drop_last`` (the tail is dropped) and otherwise padded by
    repeating its first indices (a few examples then appear twice in the epoch, as with torch's
    DistributedSampler). Within a rank, ``drop_last`` drops the final short batch.

    Args:
        data: the images and labels.
        batch_size: examples per batch on each rank.
        shuffle: a new order each epoch (``set_epoch``); otherwise dataset order.
        drop_last: see above; use True for training, False for evaluation.
        seed: seeds the order together with the epoch.
        rank / world_size: this process's shard.
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        n = len(data)
        self.per_rank = n // world_size if drop_last else math.ceil(n / world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` for the following iterations."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, in the order they are served."""
        n = len(self.data)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            order = np.arange(n)
        # np.resize cuts, or pads by repeating from the start.
        order = np.resize(order, self.per_rank * self.world_size)
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[LoaderBatch]:
        idx = self.indices()
        shape = self.data.images.shape[1:]
        for k in range(len(self)):
            batch = idx[k * self.batch_size : (k + 1) * self.batch_size]
            images, labels = _empty_batch(len(batch), shape)
            _read(self.data, batch, images, labels, np.arange(len(batch)))
            yield torch.from_numpy(images), torch.from_numpy(labels)


class MixedLoader:
    """Training batches of real and generated images (Wang et al. 2023, DM-Improves-AT).

    Each batch holds ``batch_size - round(fraction * batch_size)`` real examples (first) and
    ``round(fraction * batch_size)`` generated ones (after). An epoch is one pass over this
    rank's shard of the real set (a BatchLoader with ``drop_last``), so ``len`` is the number
    of real batches. The generated examples of an epoch are drawn without replacement from all
    generated files together (a seeded function of ``(seed, epoch)``; if an epoch needs more than
    there are, successive permutations are chained), and ranks take disjoint parts of them.

    Args:
        real: the real training set.
        generated: generated sets (``load_generated``), typically memory-mapped.
        batch_size: examples per batch on each rank.
        fraction: the generated share of each batch, in [0, 1) with at least one real example.
        seed / rank / world_size: as for BatchLoader.
    """

    def __init__(
        self,
        real: ImageSet,
        generated: Sequence[ImageSet],
        batch_size: int,
        fraction: float = 0.7,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n_gen = int(round(fraction * batch_size))
        self.n_real = batch_size - self.n_gen
        if not 0 <= fraction < 1 or self.n_real < 1:
            raise ValueError(
                f"fraction={fraction} of batch_size={batch_size} leaves no real example per batch"
            )
        self.generated = list(generated)
        self.offsets = np.cumsum([0] + [len(g) for g in self.generated])
        if self.n_gen and self.offsets[-1] == 0:
            raise ValueError("fraction > 0 but the generated sets are empty")
        for g in self.generated:
            if g.images.shape[1:] != real.images.shape[1:]:
                raise ValueError(
                    f"generated images are {g.images.shape[1:]} but real ones "
                    f"{real.images.shape[1:]} (C, H, W)"
                )
        self.real = BatchLoader(
            real,
            self.n_real,
            shuffle=True,
            drop_last=True,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` (real and generated) for the following iterations."""
        self.epoch = epoch
        self.real.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.real)

    def generated_indices(self) -> np.ndarray:
        """(len(self), n_gen) indices into the concatenated generated sets, for this rank."""
        total = int(self.offsets[-1])
        need = len(self) * self.n_gen * self.world_size
        # Its own stream: the real order uses the entropy (seed, epoch).
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        if need <= total:
            stream = rng.choice(total, size=need, replace=False)
        else:
            stream = np.concatenate([rng.permutation(total) for _ in range(-(-need // total))])
        stream = stream[:need].reshape(len(self), self.world_size, self.n_gen)
        return stream[:, self.rank]

    def __iter__(self) -> Iterator[LoaderBatch]:
        real_idx = self.real.indices()
        gen_idx = self.generated_indices()
        shape = self.real.data.images.shape[1:]
        real_pos = np.arange(self.n_real)
        for k in range(len(self)):
            images, labels = _empty_batch(self.batch_size, shape)
            _read(
                self.real.data,
                real_idx[k * self.n_real : (k + 1) * self.n_real],
                images,
                labels,
                real_pos,
            )
            idx = gen_idx[k]
            which = np.searchsorted(self.offsets, idx, side="right") - 1
            for f in np.unique(which):
                rows = np.flatnonzero(which == f)
                _read(
                    self.generated[f],
                    idx[rows] - self.offsets[f],
                    images,
                    labels,
                    self.n_real + rows,
                )
            yield torch.from_numpy(images), torch.from_numpy(labels)


def build_train_loader(
    splits: Splits,
    cfg: DataConfig,
    *,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> BatchLoader | MixedLoader:
    """The training loader: shuffled, last short batch dropped, sharded over ranks.

    A MixedLoader over ``cfg.generated`` (checked against ``splits.info``) with
    ``cfg.generated_fraction`` of each batch generated when ``cfg.generated`` lists files;
    otherwise a BatchLoader over ``splits.train``. ``batch_size`` is per rank.

    Raises:
        DataError: the training set is empty (a test-only dataset such as ``cifar10.1``).
    """
    if len(splits.train) == 0:
        raise DataError(
            f"data.name={cfg.name}: a test-only dataset (no training images); train on the "
            "dataset it shifts (e.g. cifar10) and evaluate on this one"
        )
    if cfg.generated:
        return MixedLoader(
            splits.train,
            load_generated(cfg.generated, splits.info),
            batch_size,
            cfg.generated_fraction,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
    return BatchLoader(
        splits.train,
        batch_size,
        shuffle=True,
        drop_last=True,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )


def as_tensor(array: np.ndarray) -> Tensor:
    """``array`` as a CPU tensor: shared when it is writable, else copied.

    A memory-mapped dataset (an npz member, a decoded-image cache) is read-only, and torch
    cannot share memory it may not write: ``torch.from_numpy`` would warn that the array is
    not writable. Callers slice first, so only the examples used are copied.
    """
    if not array.flags.writeable:
        array = np.array(array)
    return torch.from_numpy(array)
