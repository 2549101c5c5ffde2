"""Another test set for a trained model (``afa eval`` / ``afa analyze`` ``--test-data``).

A model trained on one copy of a dataset is scored on others: the official test set, a
held-out ``.npz``, CIFAR-10.1, a folder of one's own images. The test set is named like a
data section (``npz:FILE``, ``imagefolder:DIR``, ``cifar10:DIR`` or ``key=value`` items),
read through the dataset registry (its test split), checked against the facts the model was
trained with before any attack runs, and described by one JSON-ready record.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from afa.config import apply_overrides, from_dict
from afa.data.base import DataConfig, DatasetInfo, ImageSet, Splits
from afa.data.readers.npz import npz_keys
from afa.data.registry import DATASETS, load_splits
from afa.errors import ConfigError, DataError

log = logging.getLogger("afa")

TRAINING_KEYS = frozenset(
    {
        "val_size",
        "split_seed",
        "augment",
        "crop_padding",
        "contrastive",
        "generated",
        "generated_fraction",
        "train_size",
    }
)
"""Data keys that shape training only: refused for a test set, where they would do nothing."""

_DEFAULT = DataConfig()


@dataclass(frozen=True)
class LoadedTestSet:
    """The chosen test set: its images, the dataset's facts, and the record of what it is."""

    data: ImageSet
    info: DatasetInfo
    record: dict[str, Any]


def parse_test_data(items: Sequence[str]) -> DataConfig:
    """The data config of a test set named by ``items``.

    Each item is ``NAME[:LOCATION]`` (at most one: ``npz:FILE`` sets ``path``, any other
    dataset's location is its ``root``, e.g. ``imagefolder:DIR``, ``cifar10:data``,
    ``cifar10.1:data``) or a data key ``key=value`` (``data.`` optional, as in a recipe:
    ``data.name=npz``, ``test_image_key=images``, ``image_size=32``).

    Raises:
        ConfigError: no dataset named, an unknown dataset or key (the closest match
            named), two names, or a key that only shapes training (``augment``...).
    """
    raw: dict[str, Any] = {}
    overrides: list[str] = []
    for item in items:
        key, eq, _ = item.partition("=")
        if eq and ":" not in key and "/" not in key:
            overrides.append(f"data.{key.strip().removeprefix('data.')}={item.partition('=')[2]}")
            continue
        if "name" in raw:
            raise ConfigError(
                f"test data: one NAME[:LOCATION] only, got {raw['spec']!r} and {item!r}"
            )
        name, colon, where = item.partition(":")
        if not name or (colon and not where):
            raise ConfigError(
                f"test data: {item!r}: expected NAME[:LOCATION] such as npz:test.npz or "
                "imagefolder:DIR, or key=value"
            )
        raw = {"name": name, "spec": item}
        if colon:
            raw["path" if name == "npz" else "root"] = where
    raw.pop("spec", None)
    try:
        data = apply_overrides({"data": raw}, overrides)["data"]
    except ConfigError as exc:
        raise ConfigError(f"test data: {exc}") from None
    if "name" not in data:
        raise ConfigError(
            "test data: name the data: NAME[:LOCATION] (npz:FILE.npz, imagefolder:DIR, "
            f"cifar10:DIR, ...) or data.name=NAME; datasets: {', '.join(DATASETS.names())}"
        )
    if data["name"] == "npz" and not data.get("path"):
        raise ConfigError("test data: npz needs its file: npz:FILE.npz (or data.path=FILE.npz)")
    training = sorted(set(data) & TRAINING_KEYS)
    if training:
        raise ConfigError(
            f"test data: data.{training[0]} shapes training only; a test set is read whole"
        )
    try:
        DATASETS.get(str(data["name"]))
        cfg = from_dict(DataConfig, data, "data")
    except ConfigError as exc:
        raise ConfigError(f"test data: {exc}") from None
    return cfg


def test_data_label(cfg: DataConfig) -> str:
    """How the test set reads in a table: ``npz:held.npz``, ``cifar10:data``, ``digits``."""
    if cfg.path is not None:
        return f"{cfg.name}:{cfg.path}"
    if cfg.root != _DEFAULT.root:
        return f"{cfg.name}:{cfg.root}"
    return cfg.name


def load_test_data(cfg: DataConfig, model: DatasetInfo) -> LoadedTestSet:
    """Read the test split of ``cfg`` and check it against ``model``, the facts the model
    was trained with.

    An ``.npz`` holding only one pair of arrays is a test set whole: without
    ``x_test``/``y_test`` (``test_image_key``/``test_label_key``), its ``x_train``/
    ``y_train`` are used, all of them (not the 10% an npz training set carves out).

    Raises:
        DataError: the data is missing or unreadable, or does not fit the model (channels,
            image size, number of classes or class names; the one-line message names it).
        ConfigError: a bad data key.
    """
    label = test_data_label(cfg)
    if cfg.name == "npz" and cfg.path is not None:
        cfg = _whole_npz(cfg)
    splits = load_splits(dataclasses.replace(cfg, val_size=0))
    test, info = splits.test, splits.info
    check_test_data(test, info, model, label, cfg)
    record = {
        "label": label,
        "own": False,
        "dataset": cfg.name,
        "path": _location(cfg),
        "name": info.name,
        "n": len(test),
        "options": {
            f.name: getattr(cfg, f.name)
            for f in dataclasses.fields(DataConfig)
            if f.name not in ("name", "root", "path", "val_size")
            and getattr(cfg, f.name) != getattr(_DEFAULT, f.name)
        },
    }
    return LoadedTestSet(test, info, record)


def own_test_record(cfg: DataConfig, info: DatasetInfo, test: ImageSet) -> dict[str, Any]:
    """The record of a run's own test split (``own: true``), in the same shape."""
    return {
        "label": f"{info.name} test split",
        "own": True,
        "dataset": cfg.name,
        "path": _location(cfg),
        "name": info.name,
        "n": len(test),
    }


def test_only_splits(test: ImageSet, info: DatasetInfo) -> Splits:
    """``Splits`` holding only ``test`` (empty train and val), for code that reads
    ``splits.test`` and ``splits.info``."""
    empty = ImageSet(
        images=np.empty((0, *info.image_shape), np.uint8), labels=np.empty(0, np.int64)
    )
    return Splits(train=empty, val=empty, test=test, info=info)


def check_test_data(
    test: ImageSet,
    info: DatasetInfo,
    model: DatasetInfo,
    label: str,
    cfg: DataConfig | None = None,
) -> None:
    """Refuse a test set the model cannot be scored on, in one line naming the mismatch:
    no images, other channels, another image size, another number of classes, or other
    class names (compared where both sides name their classes, not only number them)."""
    where = f"test data {label}"
    trained = f"the model was trained on {model.name}"
    if len(test) == 0:
        raise DataError(f"{where}: no test images")
    c, h, w = (int(s) for s in test.images.shape[1:])
    mc, mh, mw = model.image_shape
    folder = cfg is not None and cfg.name == "imagefolder"
    if c != mc:
        hint = f"; color={'grayscale' if mc == 1 else 'rgb'} converts them" if folder else ""
        raise DataError(
            f"{where}: images have {c} channel(s), the model takes {mc} ({trained}){hint}"
        )
    if (h, w) != (mh, mw):
        hint = f"; image_size={mh} resize=true resizes them" if folder and mh == mw else ""
        raise DataError(f"{where}: images are {h}x{w}, the model takes {mh}x{mw} ({trained}){hint}")
    if info.num_classes != model.num_classes:
        hint = ""
        if cfg is not None and cfg.name == "npz" and cfg.num_classes is None:
            top = int(test.labels.max())
            if top < model.num_classes:
                hint = f"; if its labels are the model's, say num_classes={model.num_classes}"
        raise DataError(
            f"{where}: {info.num_classes} classes, the model has {model.num_classes} "
            f"({trained}){hint}"
        )
    if _named(info.class_names) and _named(model.class_names):
        if info.class_names != model.class_names:
            raise DataError(f"{where}: {_name_difference(info.class_names, model.class_names)}")


def _named(names: Sequence[str]) -> bool:
    """Whether ``names`` name the classes (an npz only numbers them: "0", "1", ...)."""
    return tuple(names) != tuple(str(i) for i in range(len(names)))


def _name_difference(test: Sequence[str], model: Sequence[str]) -> str:
    if set(test) == set(model):
        i = next(i for i, (a, b) in enumerate(zip(test, model, strict=True)) if a != b)
        return (
            f"the model's classes in another order (label {i} is {test[i]!r} here, "
            f"{model[i]!r} for the model)"
        )

    def some(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    extra = [n for n in test if n not in model]
    missing = [n for n in model if n not in test]
    return (
        f"class names differ from the model's: {some(extra) or '-'} not among the model's, "
        f"{some(missing) or '-'} missing"
    )


def _whole_npz(cfg: DataConfig) -> DataConfig:
    """Point the npz reader at the one pair of arrays a test-set file holds."""
    if cfg.path is None:  # nothing to point at; the npz reader names the missing path
        return cfg
    keys = set(npz_keys(cfg.path))
    test_pair = cfg.test_image_key in keys and cfg.test_label_key in keys
    train_pair = cfg.image_key in keys and cfg.label_key in keys
    if test_pair and not train_pair:
        return dataclasses.replace(cfg, image_key=cfg.test_image_key, label_key=cfg.test_label_key)
    if train_pair and not ({cfg.test_image_key, cfg.test_label_key} & keys):
        log.info(
            "%s: no %r/%r arrays; all of %r/%r are the test set",
            cfg.path,
            cfg.test_image_key,
            cfg.test_label_key,
            cfg.image_key,
            cfg.label_key,
        )
        return dataclasses.replace(cfg, test_image_key=cfg.image_key, test_label_key=cfg.label_key)
    return cfg


def _location(cfg: DataConfig) -> str | None:
    """The file or folder read (absolute); None for data without files (digits)."""
    if cfg.path is not None:
        return str(Path(cfg.path).resolve())
    if cfg.name == "digits":  # scikit-learn's copy: no file of ours
        return None
    return str(Path(cfg.root).resolve())
