"""CIFAR stand-ins written in the real on-disk formats, for the tests (not shipped with afa).

``write_cifar_like`` writes the official CIFAR python-pickle layout (``data_batch_1..5``,
``test_batch``, ``batches.meta`` for CIFAR-10; ``train``, ``test``, ``meta`` for CIFAR-100), so
that code reading real CIFAR runs unchanged on a machine with no network and no data.

Each class has its own random prototype image and examples are noisy copies of it, so the
classes are learnable: a small model should beat chance on them within a few steps.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from afa.data.readers.cifar import IMAGE_SHAPE, SPECS


def synthetic_images(
    n: int, num_classes: int, rng: np.random.Generator, shape: tuple[int, ...] = IMAGE_SHAPE
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images (N, *shape) and balanced int64 labels: per-class prototype + noise."""
    prototypes = rng.integers(0, 256, size=(num_classes, *shape))
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    noise = rng.normal(0.0, 40.0, size=(n, *shape))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels


def write_cifar_like(
    root: str | Path, name: str, n_train: int, n_test: int, seed: int = 0, *, tarball: bool = False
) -> Path:
    """Write a synthetic CIFAR-10/100 in the official pickle format under ``root``.

    Args:
        root: the directory a DataConfig's ``root`` will point at.
        name: ``cifar10`` or ``cifar100``.
        n_train / n_test: number of images (CIFAR-10's training images are spread over its five
            batches as the real files are).
        seed: seeds the images and labels.
        tarball: write ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` instead of the
            extracted folder. Its md5 is not the official one, so reading it through
            ``load_splits`` needs the expected md5 patched (see ``afa.data.readers.cifar.SPECS``).

    Returns:
        The folder or the tarball written.
    """
    spec = SPECS[name]
    rng = np.random.default_rng(seed)
    x_train, y_train = synthetic_images(n_train, spec.num_classes, rng)
    x_test, y_test = synthetic_images(n_test, spec.num_classes, rng)

    files: dict[str, dict[bytes, object]] = {}
    chunks = zip(
        spec.train_files,
        np.array_split(x_train, len(spec.train_files)),
        np.array_split(y_train, len(spec.train_files)),
        strict=True,
    )
    for fname, x, y in (*chunks, (spec.test_files[0], x_test, y_test)):
        batch: dict[bytes, object] = {
            b"batch_label": f"synthetic {fname}".encode(),
            b"data": x.reshape(len(x), -1),
            b"filenames": [f"synthetic_{i}.png".encode() for i in range(len(x))],
        }
        if name == "cifar100":
            batch[b"fine_labels"] = y.tolist()
            batch[b"coarse_labels"] = (y // 5).tolist()
        else:
            batch[b"labels"] = y.tolist()
        files[fname] = batch
    names = [f"class_{i}".encode() for i in range(spec.num_classes)]
    if name == "cifar100":
        files[spec.meta_file] = {
            b"fine_label_names": names,
            b"coarse_label_names": [f"superclass_{i}".encode() for i in range(20)],
        }
    else:
        files[spec.meta_file] = {
            b"num_cases_per_batch": len(x_train) // len(spec.train_files),
            b"label_names": names,
            b"num_vis": int(np.prod(IMAGE_SHAPE)),
        }

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # Protocol 2 and bytes keys, as in the official (Python 2) files.
    blobs = {fname: pickle.dumps(obj, protocol=2) for fname, obj in files.items()}
    if tarball:
        out = root / spec.tarball
        with tarfile.open(out, "w:gz") as archive:
            for fname, blob in blobs.items():
                member = tarfile.TarInfo(f"{spec.folder}/{fname}")
                member.size = len(blob)
                archive.addfile(member, io.BytesIO(blob))
        return out
    out = root / spec.folder
    out.mkdir(exist_ok=True)
    for fname, blob in blobs.items():
        (out / fname).write_bytes(blob)
    return out
