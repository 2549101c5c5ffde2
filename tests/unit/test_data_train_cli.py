"""``afa train`` end to end on the new datasets, on files made here: an imagefolder tarball, the
Tiny-ImageNet layout (1 epoch each, tiny models), and a test-only dataset refused."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

# Sibling test modules (pytest puts this folder on sys.path): the files in their real layouts.
from test_data_shift import _cifar10_1_files
from test_data_tiny_imagenet import _write as write_tiny_imagenet

from afa.cli.main import main

TINY = [
    "train.epochs=1",
    "train.batch_size=8",
    "train.val_examples=8",
    "threat.steps=1",
    "model.name=cnn",
    "model.options={width: 4}",
]


def _imagefolder_tarball(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for cls in ("cat", "dog", "frog"):
        (src / "train" / cls).mkdir(parents=True)
        for k in range(12):
            x = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(x).save(src / "train" / cls / f"{k:04d}.jpg")
    archive = tmp_path / "jpeg-train.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src / "train", arcname="train")
    return archive


def _epochs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_one_epoch_on_an_imagefolder_tarball(tmp_path):
    archive = _imagefolder_tarball(tmp_path)
    argv = [
        "train", "cifar10-pgd-at", "data.name=imagefolder", f"data.root={archive}",
        f"data.cache_dir={tmp_path / 'cache'}", "data.test_size=6", "data.val_size=6",
        f"out_dir={tmp_path / 'runs'}", "name=run", *TINY,
    ]  # fmt: skip
    assert main(argv) == 0
    rows = _epochs(tmp_path / "runs" / "run")
    assert rows[-1]["epoch"] == 1 and np.isfinite(rows[-1]["train/loss"])
    assert (tmp_path / "runs" / "run" / "best.pt").is_file()


def test_train_one_epoch_on_the_tiny_imagenet_layout(tmp_path):
    write_tiny_imagenet(tmp_path / "data")
    argv = [
        "train", "tiny-imagenet-pgd-at", f"data.root={tmp_path / 'data'}",
        f"data.cache_dir={tmp_path / 'cache'}", "data.val_size=3",
        f"out_dir={tmp_path / 'runs'}", "name=run", *TINY, "train.batch_size=3",
    ]  # fmt: skip
    assert main(argv) == 0
    rows = _epochs(tmp_path / "runs" / "run")
    assert rows[-1]["epoch"] == 1 and np.isfinite(rows[-1]["train/loss"])
    assert (tmp_path / "runs" / "run" / "last.pt").is_file()


def test_training_on_a_test_only_dataset_is_refused(tmp_path, capsys):
    _cifar10_1_files(tmp_path / "c101")
    argv = [
        "train", "cifar10-pgd-at", "data.name=cifar10.1", f"data.root={tmp_path / 'c101'}",
        f"out_dir={tmp_path / 'runs'}", "name=run", *TINY,
    ]  # fmt: skip
    assert main(argv) == 2
    assert "test-only dataset" in capsys.readouterr().err
