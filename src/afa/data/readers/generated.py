"""Generated training images in the format of Wang et al. 2023 (DM-Improves-AT).

Each file is an uncompressed ``.npz`` with ``image`` (uint8, (N, H, W, C)) and ``label``
(integers). Files of millions of images are memory-mapped, never read whole: the images become
a (N, C, H, W) view of the mapped NHWC bytes, and each batch is gathered and made contiguous
NCHW only after indexing (``afa.data.pipeline.loader``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from afa.data.arrays import check_labels
from afa.data.base import DatasetInfo, ImageSet
from afa.data.readers.npz import read_npz_array
from afa.errors import DataError

IMAGE_KEY = "image"
LABEL_KEY = "label"


def load_generated(paths: Sequence[str | Path], info: DatasetInfo) -> list[ImageSet]:
    """Memory-map each generated ``.npz`` and check it fits the dataset described by ``info``.

    Returns:
        One ImageSet per file; ``images`` is a read-only (N, C, H, W) view of an NHWC memory map,
        ``labels`` int64 in memory.

    Raises:
        DataError: naming the file and key, for a compressed member, images that are not uint8
            or not of the dataset's (H, W, C), labels outside [0, num_classes), or lengths that
            differ.
    """
    sets = []
    c, h, w = info.image_shape
    for path in map(Path, paths):
        images = read_npz_array(path, IMAGE_KEY, require_mmap=True)
        where = f"{path} (key {IMAGE_KEY!r})"
        if images.dtype != np.uint8:
            raise DataError(f"{where}: expected uint8 images, got dtype {images.dtype}")
        if images.ndim != 4 or images.shape[1:] != (h, w, c):
            raise DataError(
                f"{where}: expected images of shape (N, {h}, {w}, {c}) (NHWC, to match "
                f"{info.name}), got {images.shape}"
            )
        labels = check_labels(
            np.array(read_npz_array(path, LABEL_KEY)),  # small: copied into memory
            info.num_classes,
            f"{path} (key {LABEL_KEY!r})",
        )
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{path}: {images.shape[0]} images but {labels.shape[0]} labels")
        sets.append(ImageSet(images=images.transpose(0, 3, 1, 2), labels=labels))
    return sets
