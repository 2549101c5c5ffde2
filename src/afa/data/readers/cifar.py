"""CIFAR-10 and CIFAR-100 from the official python-pickle tarballs.

Files are looked for in ``cfg.root``: first the extracted folder (``cifar-10-batches-py/`` or
``cifar-100-python/``), then the ``.tar.gz`` (its md5 checked, its members read directly without
extracting). When both are absent and ``cfg.download`` is set, the tarball is downloaded from the
official address to a temporary file, checked, and moved into place atomically.

Pickles are read with an unpickler that only admits the numpy objects these files contain, so a
tampered file cannot run code.
"""

from __future__ import annotations

import io
import logging
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from afa.data.arrays import check_labels
from afa.data.base import DataConfig, DatasetInfo, ImageSet
from afa.data.readers.download import check_md5, fetch, file_md5  # noqa: F401  (file_md5: re-exported)
from afa.data.registry import DATASETS
from afa.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CifarSpec:
    """Where one CIFAR variant lives and how its pickles are laid out."""

    name: str
    folder: str  # the tarball's top-level folder
    tarball: str
    url: str
    md5: str  # of the tarball
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        name="cifar10",
        folder="cifar-10-batches-py",
        tarball="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
        # Per-channel statistics of the 50,000 training images.
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarSpec(
        name="cifar100",
        folder="cifar-100-python",
        tarball="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}

IMAGE_SHAPE = (3, 32, 32)


@DATASETS.register("cifar10")
def load_cifar10(cfg: DataConfig) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """CIFAR-10: 50,000 train / 10,000 test 32x32 RGB images; augment auto = crop-flip."""
    return load_cifar(SPECS["cifar10"], Path(cfg.root), download=cfg.download)


@DATASETS.register("cifar100")
def load_cifar100(cfg: DataConfig) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """CIFAR-100 (fine labels): 50,000 train / 10,000 test; augment auto = crop-flip."""
    return load_cifar(SPECS["cifar100"], Path(cfg.root), download=cfg.download)


def load_cifar(
    spec: CifarSpec, root: Path, *, download: bool
) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """Read (train, test, info) from ``root``, downloading the tarball if allowed and needed."""
    wanted = (*spec.train_files, *spec.test_files, spec.meta_file)
    folder, tarball = root / spec.folder, root / spec.tarball
    if folder.is_dir():
        pickles = {name: _read_pickle_file(folder / name) for name in wanted}
    else:
        if not tarball.is_file():
            if not download:
                raise DataError(_missing_message(spec, root, "download is off"))
            _download(spec, tarball)
        check_md5(tarball, spec.md5, spec.url)
        pickles = _read_tarball(tarball, spec.folder, wanted)

    def where(name: str) -> str:
        return str(folder / name) if folder.is_dir() else f"{tarball}:{spec.folder}/{name}"

    def batches(names: tuple[str, ...]) -> ImageSet:
        parts = [_parse_batch(pickles[n], where(n), spec) for n in names]
        return ImageSet(
            images=np.concatenate([p[0] for p in parts]),
            labels=np.concatenate([p[1] for p in parts]),
        )

    train, test = batches(spec.train_files), batches(spec.test_files)
    info = DatasetInfo(
        name=spec.name,
        num_classes=spec.num_classes,
        image_shape=IMAGE_SHAPE,
        mean=spec.mean,
        std=spec.std,
        class_names=_class_names(pickles[spec.meta_file], where(spec.meta_file), spec),
        augment="crop-flip",
    )
    return train, test, info


def _missing_message(spec: CifarSpec, root: Path, why: str) -> str:
    return (
        f"{spec.name} not found and {why}: put {spec.tarball} (from {spec.url}, md5 {spec.md5}) "
        f"in {root}/, or its extracted folder at {root / spec.folder}/"
    )


def _download(spec: CifarSpec, tarball: Path) -> None:
    """Download to a temporary file beside ``tarball``, check the md5, then rename into place."""
    hint = f"; {_missing_message(spec, tarball.parent, 'the download failed')}"
    fetch(spec.url, tarball, md5=spec.md5, hint=hint)


class _NumpyUnpickler(pickle.Unpickler):
    """Admits only what the CIFAR pickles hold: dicts, lists, bytes and numpy arrays."""

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str) -> dict[str, Any]:
    try:
        obj = _NumpyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # truncated or corrupted bytes raise many different types
        raise DataError(
            f"{where}: not a readable CIFAR pickle, corrupted or truncated "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    # Python 2 pickles load with bytes keys.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_pickle_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected from the extracted CIFAR tarball)")
    return _unpickle(path.read_bytes(), str(path))


def _read_tarball(tarball: Path, folder: str, wanted: tuple[str, ...]) -> dict[str, dict]:
    """Unpickle the members ``folder/name`` for each wanted name, in one pass over the archive."""
    members = {f"{folder}/{name}": name for name in wanted}
    found: dict[str, dict] = {}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                name = members.get(member.name)
                if name is None or not member.isfile():
                    continue
                f = archive.extractfile(member)
                assert f is not None
                found[name] = _unpickle(f.read(), f"{tarball}:{member.name}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{tarball}: not a readable .tar.gz ({exc})") from None
    missing = [m for m, name in members.items() if name not in found]
    if missing:
        raise DataError(f"{tarball}: missing member(s) {', '.join(missing)}")
    return found


def _parse_batch(
    batch: dict[str, Any], where: str, spec: CifarSpec
) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or spec.label_key not in batch:
        raise DataError(
            f"{where}: expected keys 'data' and {spec.label_key!r}, found {sorted(batch)}"
        )
    data = batch["data"]
    size = int(np.prod(IMAGE_SHAPE))
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != size
    ):
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: 'data' should be uint8 of shape (N, {size}), got {desc}")
    labels = np.asarray(batch[spec.label_key])
    if labels.shape != (data.shape[0],):
        raise DataError(
            f"{where}: {data.shape[0]} images but {labels.shape[0] if labels.ndim else 0} labels"
        )
    labels = check_labels(labels, spec.num_classes, where)
    return data.reshape(-1, *IMAGE_SHAPE), labels


def _class_names(meta: dict[str, Any], where: str, spec: CifarSpec) -> tuple[str, ...]:
    names = meta.get(spec.names_key)
    if not isinstance(names, list) or len(names) != spec.num_classes:
        raise DataError(f"{where}: expected {spec.num_classes} names under {spec.names_key!r}")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
