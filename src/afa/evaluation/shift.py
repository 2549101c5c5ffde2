"""Accuracy under distribution shift: a natural shift (CIFAR-10.1) and common corruptions.

Corruption accuracy follows Hendrycks & Dietterich (ICLR 2019): the model is scored on every
corruption at every severity (1-5), and the mean over all of them is the corruption accuracy,
"CA" in the tables of the robust self-supervised benchmark (one minus the unnormalised mean
corruption error). Images come from the official CIFAR-10-C / CIFAR-100-C files when given,
else :mod:`afa.data.transforms.corruptions` generates them from the test set with a seed.

Counts are kept per corruption and severity and divided once: every accuracy here is
``n_correct / n_examples``, and the mean is the sum of counts over ``n_examples`` times the
number of (corruption, severity) cells.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from afa._registry import unknown_name_message
from afa.attacks import attack_mode
from afa.data import DatasetInfo, ImageSet, to_float
from afa.data.readers.shift import (
    available_corruptions,
    corrupted_folder,
    load_cifar10_1,
    load_cifar_c,
)
from afa.data.transforms.corruptions import (
    COMMON,
    EXTRA,
    NOT_GENERATED,
    SEVERITIES,
    check_corruption,
    corrupt,
    corruption_names,
)
from afa.errors import ConfigError

log = logging.getLogger("afa")

CorruptionSource = Callable[[str, int], tuple[np.ndarray, np.ndarray]]
"""``(corruption, severity) -> (images, labels)``: uint8 (N, C, H, W) and int (N,)."""

GENERATION_CHUNK = 1000
"""Images corrupted per call: each chunk has its own seed, so results do not depend on the
evaluation batch size."""


@dataclass
class CorruptionResult:
    """Correct counts per corruption and severity.

    Attributes:
        source: ``"generated"``, or where the official files were read.
        n_examples: test images per (corruption, severity).
        severities: the severities scored, in order.
        n_correct: per corruption, one count per severity.
        clean_n_correct: correct on the uncorrupted images (None when not scored).
        not_run: corruptions left out, with the reason.
        seed: seed of the generated corruptions (None for official files).
        time_s: wall time, generation included.
    """

    source: str
    n_examples: int
    severities: list[int]
    n_correct: dict[str, list[int]] = field(default_factory=dict)
    clean_n_correct: int | None = None
    not_run: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    time_s: float = 0.0

    def acc(self, name: str, severity: int) -> float:
        return self.n_correct[name][self.severities.index(severity)] / self.n_examples

    def corruption_acc(self, name: str) -> float:
        """Mean over severities of one corruption."""
        return sum(self.n_correct[name]) / (self.n_examples * len(self.severities))

    def severity_acc(self, severity: int) -> float:
        """Mean over corruptions at one severity."""
        k = self.severities.index(severity)
        return sum(c[k] for c in self.n_correct.values()) / (self.n_examples * len(self.n_correct))

    @property
    def mean_acc(self) -> float:
        """Corruption accuracy (CA): the mean over every corruption and severity."""
        cells = len(self.n_correct) * len(self.severities)
        return sum(sum(c) for c in self.n_correct.values()) / (self.n_examples * cells)

    def record(self) -> dict[str, Any]:
        """The ``eval.json`` entry ``shift.corruptions``, numbers as numbers."""
        return {
            "source": self.source,
            "n_examples": self.n_examples,
            "severities": list(self.severities),
            "mean_acc": self.mean_acc,
            "clean_acc": None
            if self.clean_n_correct is None
            else self.clean_n_correct / self.n_examples,
            "per_corruption": {
                name: {
                    "acc": [c / self.n_examples for c in counts],
                    "n_correct": list(counts),
                    "mean_acc": self.corruption_acc(name),
                }
                for name, counts in self.n_correct.items()
            },
            "per_severity": {str(s): self.severity_acc(s) for s in self.severities},
            "not_run": dict(self.not_run),
            "seed": self.seed,
            "time_s": self.time_s,
        }


def count_correct(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    batch_size: int,
    device: torch.device | str,
) -> int:
    """How many ``images`` the model, in eval mode, classifies as ``labels``.

    Args:
        model: classifier on inputs in [0, 1]; put in eval mode here, its modes restored after.
        images: uint8 images, in batches to ``device``.
        labels: int labels.
        batch_size: images per forward.
        device: where to compute.

    Shape:
        images: (N, C, H, W); labels: (N,).
    """
    correct = 0
    with attack_mode(model, "eval"), torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            # One batch at a time out of a (read-only) memory map: a copy of the batch only.
            x = to_float(_tensor(images[start : start + batch_size]), device)
            y = _tensor(labels[start : start + batch_size]).to(device)
            correct += int((model(x).argmax(dim=1) == y).sum())
    return correct


def _tensor(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a))


def generated_source(images: np.ndarray, labels: np.ndarray, seed: int) -> CorruptionSource:
    """Corrupt ``images`` on request with :func:`afa.data.transforms.corruptions.corrupt`.

    Chunk ``j`` of corruption ``name`` at ``severity`` draws from
    ``default_rng([seed, crc32(name), severity, j])``: the images of a cell do not change
    when other corruptions, severities or batch sizes are chosen.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)

    def source(name: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
        out = np.empty_like(images)
        for j, start in enumerate(range(0, images.shape[0], GENERATION_CHUNK)):
            rng = np.random.default_rng([seed, zlib.crc32(name.encode()), severity, j])
            stop = start + GENERATION_CHUNK
            out[start:stop] = corrupt(np.ascontiguousarray(images[start:stop]), name, severity, rng)
        return out, labels

    return source


def corruption_accuracy(
    model: nn.Module,
    source: CorruptionSource,
    corruptions: Sequence[str],
    *,
    severities: Sequence[int] = SEVERITIES,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    clean: tuple[np.ndarray, np.ndarray] | None = None,
    source_name: str = "generated",
    seed: int | None = None,
    not_run: dict[str, str] | None = None,
    progress: bool = False,
) -> CorruptionResult:
    """Accuracy of ``model`` on each corruption at each severity.

    Args:
        model: classifier on inputs in [0, 1] (scored in eval mode; modes restored).
        source: gives the images of one (corruption, severity); see :func:`generated_source`.
        corruptions: names, in the order to report.
        severities: a subset of 1..5.
        batch_size: images per forward.
        device: where to compute; default: the model's device.
        clean: the uncorrupted (images, labels), to report clean accuracy beside CA.
        source_name: recorded as ``source``.
        seed: recorded (the generator's seed).
        not_run: corruptions left out and why, recorded.
        progress: log each cell.

    Returns:
        A :class:`CorruptionResult` with a count per cell.
    """
    start = time.perf_counter()
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise ConfigError(f"corruption severities: expected values in 1..5, got {list(severities)}")
    if not corruptions:
        raise ConfigError("corruptions: no corruption to evaluate")
    device = _device(model, device)
    n = None
    result = CorruptionResult(
        source=source_name,
        n_examples=0,
        severities=list(severities),
        seed=seed,
        not_run=dict(not_run or {}),
    )
    for name, severity, (x, y) in _cells(source, corruptions, severities):
        if n is None:
            n = int(y.shape[0])
        elif int(y.shape[0]) != n:
            raise ValueError(
                f"corruption {name!r} severity {severity}: {y.shape[0]} images, not {n}"
            )
        count = count_correct(model, x, y, batch_size=batch_size, device=device)
        result.n_correct.setdefault(name, []).append(count)
        if progress:
            log.info("%s %d: %.2f%%", name, severity, 100 * count / n)
    result.n_examples = int(n or 0)
    if clean is not None:
        result.clean_n_correct = count_correct(
            model, clean[0], clean[1], batch_size=batch_size, device=device
        )
    result.time_s = time.perf_counter() - start
    return result


def _cells(
    source: CorruptionSource, corruptions: Sequence[str], severities: Sequence[int]
) -> Iterator[tuple[str, int, tuple[np.ndarray, np.ndarray]]]:
    for name in corruptions:
        for severity in severities:
            yield name, severity, source(name, severity)


def _device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def generated_corruption_accuracy(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> CorruptionResult:
    """:func:`corruption_accuracy` on corruptions generated from ``images``.

    Args:
        corruptions: default: every corruption generated for these images
            (:func:`afa.data.transforms.corruptions.corruption_names`, the 15 of the benchmark less
            those in :data:`~afa.data.transforms.corruptions.NOT_GENERATED`).

    Shape:
        images: (N, C, H, W) uint8; labels: (N,).
    """
    channels = int(images.shape[1])
    if corruptions is None:
        corruptions = corruption_names(channels)
        not_run = {
            n: NOT_GENERATED.get(n, "needs RGB images") for n in COMMON if n not in corruptions
        }
    else:
        for name in corruptions:
            check_corruption(name, channels)
        not_run = {}
    return corruption_accuracy(
        model,
        generated_source(images, labels, seed),
        list(corruptions),
        severities=severities,
        batch_size=batch_size,
        device=device,
        clean=(images, labels),
        source_name="generated",
        seed=seed,
        not_run=not_run,
        progress=progress,
    )


def dataset_accuracy(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Accuracy on a whole shifted test set (e.g. CIFAR-10.1): the ``shift.<name>`` entry."""
    n = int(np.asarray(labels).shape[0])
    if n == 0:
        raise ValueError("dataset_accuracy: no examples")
    correct = count_correct(
        model, images, labels, batch_size=batch_size, device=_device(model, device)
    )
    return {"acc": correct / n, "n_correct": correct, "n_examples": n}


def format_corruption_table(record: dict[str, Any]) -> str:
    """A markdown table of a ``shift.corruptions`` record: one row per corruption, one column
    per severity, the mean per row and a last row of means per severity; accuracies in %."""
    sev = [str(s) for s in record["severities"]]
    head = ["corruption", *(f"s{s}" for s in sev), "mean"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for name, row in record["per_corruption"].items():
        cells = [name, *(f"{100 * a:.2f}" for a in row["acc"]), f"{100 * row['mean_acc']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    means = [f"{100 * record['per_severity'][s]:.2f}" for s in sev]
    lines.append(
        "| **mean (CA)** | " + " | ".join(means) + f" | **{100 * record['mean_acc']:.2f}** |"
    )
    return "\n".join(lines)


GENERATE = "generate"
"""``corruptions=GENERATE``: corrupt the run's own test images instead of reading files."""

OFFICIAL_CORRUPTED = {"cifar10": "cifar10-c", "cifar100": "cifar100-c"}
"""The datasets whose corrupted test sets are published, and their afa dataset names."""

SHIFT_SETS = ("cifar10.1", "cifar10.1-v4")
"""Natural-shift test sets ``evaluate_shift`` knows: CIFAR-10.1 v6 (the paper's) and v4."""


def official_source(
    root: str | Path, dataset: str, n_examples: int | None = None
) -> CorruptionSource:
    """Read one (corruption, severity) from the official files (memory-mapped), the first
    ``n_examples`` test images of that severity when given."""

    def source(name: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = load_cifar_c(root, name, severity, dataset=dataset)
        if n_examples is not None:
            images, labels = images[:n_examples], labels[:n_examples]
        return np.ascontiguousarray(images), np.asarray(labels)

    return source


@dataclass(frozen=True)
class ShiftRequest:
    """What ``afa eval --shift ... --corruptions ...`` asks for (see :func:`evaluate_shift`).

    Attributes:
        shift: natural-shift test sets from :data:`SHIFT_SETS`.
        shift_root: the folder of their files (None: the run's ``data.root``).
        corruptions: None, :data:`GENERATE`, or the folder of the official corrupted files.
        corruption_names: which corruptions (None: the benchmark's 15, as available).
        severities: a subset of 1..5.
    """

    shift: tuple[str, ...] = ()
    shift_root: str | None = None
    corruptions: str | None = None
    corruption_names: tuple[str, ...] | None = None
    severities: tuple[int, ...] = SEVERITIES

    def __bool__(self) -> bool:
        return bool(self.shift) or self.corruptions is not None


def check_shift_request(
    info: DatasetInfo,
    *,
    shift: Sequence[str] = (),
    corruptions: str | Path | None = None,
    corruption_names: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
) -> None:
    """Refuse, before any work, a shift evaluation that cannot run on this run's dataset.

    Raises:
        ConfigError: an unknown shift set, CIFAR-10.1 for a model that is not a CIFAR-10 one,
            official files for a dataset that has none, an unknown or impossible corruption,
            a severity outside 1..5.
    """
    for name in shift:
        if name not in SHIFT_SETS:
            raise ConfigError(unknown_name_message("shift set", name, SHIFT_SETS))
        if info.num_classes != 10 or tuple(info.image_shape) != (3, 32, 32):
            raise ConfigError(
                f"--shift {name}: CIFAR-10.1 is for CIFAR-10 models (10 classes, 3x32x32); "
                f"this run's dataset {info.name} has {info.num_classes} classes, "
                f"images {'x'.join(map(str, info.image_shape))}"
            )
    if corruptions is None:
        return
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise ConfigError(f"--severities: expected values in 1..5, got {list(severities)}")
    if str(corruptions) == GENERATE:
        for name in corruption_names or ():
            check_corruption(name, info.image_shape[0])
    elif info.name not in OFFICIAL_CORRUPTED:
        raise ConfigError(
            f"--corruptions {corruptions}: official corrupted files exist for "
            f"{', '.join(OFFICIAL_CORRUPTED)} only, this run's dataset is {info.name} "
            f"(give --corruptions without a folder to generate them)"
        )
    else:
        known = (*COMMON, *EXTRA)
        for name in corruption_names or ():
            if name not in known:
                raise ConfigError(unknown_name_message("corruption", name, known))


def evaluate_shift(
    model: nn.Module,
    test: ImageSet,
    info: DatasetInfo,
    *,
    shift: Sequence[str] = (),
    shift_root: str | Path = "data",
    corruptions: str | Path | None = None,
    corruption_names: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    n_examples: int | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything ``afa eval --shift ... --corruptions ...`` asks for: the ``shift`` entry of
    eval.json.

    Args:
        model: the evaluated classifier (scored in eval mode; modes restored).
        test: the run's test set (the clean images corruptions are generated from).
        info: the run's dataset facts (shift sets must fit its classes and image shape).
        shift: names from :data:`SHIFT_SETS`, read from ``shift_root``.
        shift_root: the folder holding the CIFAR-10.1 ``.npy`` files.
        corruptions: None (no corruption accuracy), :data:`GENERATE`, or the folder of the
            official CIFAR-10-C / CIFAR-100-C files (only for cifar10 / cifar100 runs).
        corruption_names: which corruptions (default: the benchmark's 15, those that can be
            generated or whose files are there).
        severities: a subset of 1..5.
        n_examples: the first N images of each set (each severity for the official files).
        batch_size: images per forward.
        device: where to compute.
        seed: seed of the generated corruptions.

    Returns:
        ``{"cifar10.1": {acc, n_correct, n_examples, version}, "corruptions": {...}}`` with
        only the keys asked for.

    Raises:
        ConfigError: a shift set or official files that do not fit the run's dataset.
    """
    check_shift_request(
        info,
        shift=shift,
        corruptions=corruptions,
        corruption_names=corruption_names,
        severities=severities,
    )
    out: dict[str, Any] = {}
    for name in shift:
        version = "v4" if name.endswith("-v4") else "v6"
        images, labels = load_cifar10_1(shift_root, version)
        images, labels = images[:n_examples], labels[:n_examples]
        out[name] = {
            **dataset_accuracy(model, images, labels, batch_size=batch_size, device=device),
            "version": version,
            "root": str(shift_root),
        }
    if corruptions is None:
        return out
    clean = (np.asarray(test.images[:n_examples]), np.asarray(test.labels[:n_examples]))
    if str(corruptions) == GENERATE:
        result = generated_corruption_accuracy(
            model,
            *clean,
            corruptions=corruption_names,
            severities=severities,
            seed=seed,
            batch_size=batch_size,
            device=device,
        )
    else:
        dataset = OFFICIAL_CORRUPTED[info.name]
        present = available_corruptions(corruptions, dataset)
        wanted = list(corruption_names) if corruption_names is not None else list(COMMON)
        missing = [c for c in wanted if c not in present]
        if corruption_names is not None and missing:
            raise ConfigError(
                f"--corruptions {corruptions}: no {', '.join(f'{c}.npy' for c in missing)} there"
            )
        result = corruption_accuracy(
            model,
            official_source(corruptions, dataset, n_examples),
            [c for c in wanted if c in present],
            severities=severities,
            batch_size=batch_size,
            device=device,
            clean=clean,
            source_name=str(corrupted_folder(corruptions, dataset)),
            not_run={c: "file not found" for c in missing},
        )
    out["corruptions"] = result.record()
    return out


def format_shift_summary(record: dict[str, Any]) -> str:
    """The shift part of an eval.json record in words and a table, for ``afa eval`` to print;
    empty when the record has none."""
    shift = record.get("shift") or {}
    lines = []
    for name, r in shift.items():
        if name != "corruptions":
            lines.append(f"{name}: {100 * r['acc']:.2f}% ({r['n_correct']}/{r['n_examples']})")
    corr = shift.get("corruptions")
    if corr:
        lines.append(
            f"corruptions ({corr['source']}, {corr['n_examples']} images each): "
            f"CA {100 * corr['mean_acc']:.2f}%"
            + (
                f", clean {100 * corr['clean_acc']:.2f}%"
                if corr.get("clean_acc") is not None
                else ""
            )
        )
        lines.append(format_corruption_table(corr))
        lines += [f"not run: {k} ({v})" for k, v in corr.get("not_run", {}).items()]
    return "\n".join(lines)
