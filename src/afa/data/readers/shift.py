"""Test sets under distribution shift for CIFAR models: CIFAR-10.1 and CIFAR-10-C / CIFAR-100-C.

* CIFAR-10.1 (Recht et al. 2018, "Do CIFAR-10 Classifiers Generalize to CIFAR-10?"): new test
  images collected the way the originals were. ``cifar10.1_v6_data.npy`` holds (2000, 32, 32, 3)
  uint8 images, ``cifar10.1_v6_labels.npy`` their labels; v4 has 2021 images.
* CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich 2019, "Benchmarking Neural Network Robustness
  to Common Corruptions and Perturbations"): ``<corruption>.npy`` of shape (50000, 32, 32, 3),
  the 10,000 test images corrupted at severity 1, then 2, ... then 5, stacked in that order, and
  ``labels.npy`` (the test labels, five times). 15 benchmark corruptions plus 4 extra ones.

Both are test-only: their datasets have an empty training set, and training on one is refused
by ``build_train_loader``. The arrays are memory-mapped (``np.load(mmap_mode="r")``), so a
corruption file of 150 MB costs no memory until its rows are read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from afa.data.arrays import check_labels
from afa.data.base import DataConfig, DatasetInfo, ImageSet
from afa.data.readers.cifar import SPECS as CIFAR_SPECS
from afa.data.readers.download import check_md5, extract, fetch
from afa.data.registry import DATASETS, DatasetFactory
from afa.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# The fine label names of CIFAR-100 in label order (its meta file's fine_label_names).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

# Hendrycks & Dietterich 2019, the 15 benchmark corruptions in their paper's order (noise, blur,
# weather, digital), and the 4 extra ones released with them for validation.
CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES = (1, 2, 3, 4, 5)

CIFAR_IMAGE_HW = (32, 32)


@dataclass(frozen=True)
class CorruptedSpec:
    """Where one CIFAR-C variant lives."""

    name: str
    base: str  # the clean dataset: its statistics and class names
    folder: str
    tarball: str
    url: str
    md5: str  # of the tarball (as listed on Zenodo)
    class_names: tuple[str, ...]


CORRUPTED_SPECS: dict[str, CorruptedSpec] = {
    "cifar10-c": CorruptedSpec(
        name="cifar10-c",
        base="cifar10",
        folder="CIFAR-10-C",
        tarball="CIFAR-10-C.tar",
        url="https://zenodo.org/records/2535967/files/CIFAR-10-C.tar",
        md5="56bf5dcef84df0e2308c6dcbcbbd8499",
        class_names=CIFAR10_CLASSES,
    ),
    "cifar100-c": CorruptedSpec(
        name="cifar100-c",
        base="cifar100",
        folder="CIFAR-100-C",
        tarball="CIFAR-100-C.tar",
        url="https://zenodo.org/records/3555552/files/CIFAR-100-C.tar",
        md5="11f0ed0f1191edbf9fa23466ae6021d3",
        class_names=CIFAR100_CLASSES,
    ),
}

# CIFAR-10.1: no checksums are published; the files are checked by shape, dtype and labels.
CIFAR10_1_URL = "https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/{file}"
CIFAR10_1_SIZES = {"v6": 2000, "v4": 2021}


# ---------------------------------------------------------------------------------------------
# CIFAR-10-C / CIFAR-100-C


def corrupted_folder(
    root: str | Path, dataset: str = "cifar10-c", *, download: bool = False
) -> Path:
    """The folder holding ``<corruption>.npy`` and ``labels.npy`` for ``dataset``.

    Looked for as ``root`` itself (when it holds ``labels.npy``), then ``root/CIFAR-10-C``; else
    ``root/CIFAR-10-C.tar`` is extracted (md5 checked), downloading it first when allowed.

    Raises:
        ConfigError: an unknown dataset name.
        DataError: nothing found (the message says what to put where), or a bad tarball.
    """
    spec = _corrupted_spec(dataset)
    root = Path(root)
    if (root / "labels.npy").is_file():
        return root
    folder, tarball = root / spec.folder, root / spec.tarball
    if folder.is_dir():
        return folder
    if not tarball.is_file():
        hint = (
            f": put {spec.tarball} (from {spec.url}, md5 {spec.md5}) in {root}/, or its "
            f"extracted folder at {folder}/"
        )
        if not download:
            raise DataError(f"{spec.name} not found and download is off{hint}")
        log.warning("downloading %s (about 2.9 GB)", spec.url)
        fetch(spec.url, tarball, md5=spec.md5, hint=hint)
    check_md5(tarball, spec.md5, spec.url)
    extract(tarball, root)
    if not folder.is_dir():
        raise DataError(f"{tarball}: holds no {spec.folder}/ folder")
    return folder


def available_corruptions(root: str | Path, dataset: str = "cifar10-c") -> list[str]:
    """The known corruptions (benchmark first, then extra) whose ``.npy`` is in the folder."""
    folder = corrupted_folder(root, dataset)
    return [c for c in (*CORRUPTIONS, *EXTRA_CORRUPTIONS) if (folder / f"{c}.npy").is_file()]


def load_cifar_c(
    root: str | Path,
    corruption: str,
    severity: int | None = None,
    *,
    dataset: str = "cifar10-c",
    download: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of one corruption of CIFAR-10-C (or CIFAR-100-C).

    Args:
        root: the extracted folder (``.../CIFAR-10-C``) or the folder holding it (or its tar).
        corruption: one of ``CORRUPTIONS`` or ``EXTRA_CORRUPTIONS``.
        severity: 1..5, or ``None`` for all five (stacked in order, severity 1 first).
        dataset: ``"cifar10-c"`` or ``"cifar100-c"``.
        download: fetch the official tarball from Zenodo when absent (about 2.9 GB).

    Returns:
        ``(images, labels)``: images a read-only memory-mapped uint8 view, labels int64.

    Shape:
        images: (N, 3, 32, 32) with N = 10,000 per severity in the official files;
        labels: (N,).

    Raises:
        ConfigError: an unknown dataset, corruption or severity.
        DataError: a missing file, a wrong shape or dtype, labels that do not match the images.
    """
    spec = _corrupted_spec(dataset)
    known = (*CORRUPTIONS, *EXTRA_CORRUPTIONS)
    if corruption not in known:
        raise ConfigError(
            f"corruption: expected one of {', '.join(known)} ({spec.name}); got {corruption!r}"
        )
    if severity is not None and severity not in SEVERITIES:
        raise ConfigError(f"severity: expected 1..5 or null (all five), got {severity!r}")
    folder = corrupted_folder(root, dataset, download=download)
    images = _load_npy(folder / f"{corruption}.npy")
    labels = _load_npy(folder / "labels.npy")
    path = folder / f"{corruption}.npy"
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (*CIFAR_IMAGE_HW, 3):
        raise DataError(
            f"{path}: expected uint8 images of shape (N, 32, 32, 3), got {images.dtype} "
            f"{images.shape}"
        )
    n = images.shape[0]
    if n == 0 or n % len(SEVERITIES):
        raise DataError(
            f"{path}: {n} images is not five equal severities (the official files hold 50000)"
        )
    if labels.shape != (n,):
        raise DataError(
            f"{folder / 'labels.npy'}: shape {labels.shape} does not match the {n} images of {path}"
        )
    labels = check_labels(np.array(labels), len(spec.class_names), str(folder / "labels.npy"))
    if severity is not None:
        per = n // len(SEVERITIES)
        rows = slice(per * (severity - 1), per * severity)
        images, labels = images[rows], labels[rows]
    return images.transpose(0, 3, 1, 2), labels


def _corrupted_spec(dataset: str) -> CorruptedSpec:
    if dataset not in CORRUPTED_SPECS:
        raise ConfigError(f"dataset: expected one of {', '.join(CORRUPTED_SPECS)}, got {dataset!r}")
    return CORRUPTED_SPECS[dataset]


def _corrupted_info(spec: CorruptedSpec) -> DatasetInfo:
    base = CIFAR_SPECS[spec.base]
    return DatasetInfo(
        name=spec.name,
        num_classes=base.num_classes,
        image_shape=(3, *CIFAR_IMAGE_HW),
        mean=base.mean,
        std=base.std,
        class_names=spec.class_names,
        augment="none",
    )


def _corrupted_factory(name: str) -> DatasetFactory:
    spec = CORRUPTED_SPECS[name]

    def factory(cfg: DataConfig) -> tuple[ImageSet, ImageSet, DatasetInfo]:
        if cfg.corruption is None:
            raise ConfigError(
                f"corruption: {name} needs data.corruption (one of "
                f"{', '.join((*CORRUPTIONS, *EXTRA_CORRUPTIONS))})"
            )
        images, labels = load_cifar_c(
            cfg.root, cfg.corruption, cfg.severity, dataset=name, download=cfg.download
        )
        return _empty_train(), ImageSet(images=images, labels=labels), _corrupted_info(spec)

    factory.__doc__ = (
        f"{spec.folder} (Hendrycks & Dietterich 2019), test-only: the corruption "
        "``cfg.corruption`` at ``cfg.severity`` (all five when null), memory-mapped."
    )
    return factory


for _name in CORRUPTED_SPECS:
    DATASETS.register(_name)(_corrupted_factory(_name))


# ---------------------------------------------------------------------------------------------
# CIFAR-10.1


def load_cifar10_1(
    root: str | Path, version: str = "v6", *, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10.1 (Recht et al. 2018): a new test set for CIFAR-10 models.

    Args:
        root: the folder holding ``cifar10.1_<version>_data.npy`` and ``..._labels.npy``.
        version: ``"v6"`` (2,000 images, the paper's main set) or ``"v4"`` (2,021 images).
        download: fetch the two files from the official repository when absent.

    Returns:
        ``(images, labels)``: images a read-only memory-mapped uint8 view, labels int64, in the
        CIFAR-10 class order.

    Shape:
        images: (2000, 3, 32, 32) for v6, (2021, 3, 32, 32) for v4; labels: (N,).

    Raises:
        ConfigError: an unknown version.
        DataError: a missing file, a wrong shape or dtype, mismatched or out-of-range labels.
    """
    if version not in CIFAR10_1_SIZES:
        raise ConfigError(f"version: expected one of v6, v4 (CIFAR-10.1), got {version!r}")
    root = Path(root)
    paths = {}
    for kind in ("data", "labels"):
        file = f"cifar10.1_{version}_{kind}.npy"
        path = paths[kind] = root / file
        if not path.is_file():
            url = CIFAR10_1_URL.format(file=file)
            hint = f": put {file} (from {url}) in {root}/"
            if not download:
                raise DataError(f"{path}: file not found and download is off{hint}")
            fetch(url, path, hint=hint)
    images, labels = _load_npy(paths["data"]), _load_npy(paths["labels"])
    n = CIFAR10_1_SIZES[version]
    if images.dtype != np.uint8 or images.shape != (n, *CIFAR_IMAGE_HW, 3):
        raise DataError(
            f"{paths['data']}: expected uint8 images of shape ({n}, 32, 32, 3) for {version}, "
            f"got {images.dtype} {images.shape}"
        )
    if labels.shape != (n,):
        raise DataError(
            f"{paths['labels']}: shape {labels.shape} does not match the {n} images of "
            f"{paths['data'].name}"
        )
    labels = check_labels(np.array(labels), len(CIFAR10_CLASSES), str(paths["labels"]))
    return images.transpose(0, 3, 1, 2), labels


@DATASETS.register("cifar10.1")
def load_cifar10_1_dataset(cfg: DataConfig) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """CIFAR-10.1 (Recht et al. 2018) ``cfg.version``, test-only, with CIFAR-10's statistics."""
    images, labels = load_cifar10_1(cfg.root, cfg.version, download=cfg.download)
    base = CIFAR_SPECS["cifar10"]
    info = DatasetInfo(
        name="cifar10.1",
        num_classes=base.num_classes,
        image_shape=(3, *CIFAR_IMAGE_HW),
        mean=base.mean,
        std=base.std,
        class_names=CIFAR10_CLASSES,
        augment="none",
    )
    return _empty_train(), ImageSet(images=images, labels=labels), info


# ---------------------------------------------------------------------------------------------


def _empty_train() -> ImageSet:
    return ImageSet(
        images=np.empty((0, 3, *CIFAR_IMAGE_HW), np.uint8), labels=np.empty(0, np.int64)
    )


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # bad magic, truncated, pickled objects
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None
