"""Another test set for a trained model: parsing ``--test-data``, reading its test split
through the registry, the check against the model, and the record; and ``afa eval`` on
Tiny-ImageNet without PyTorch's read-only array warning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# A sibling test module (pytest puts this folder on sys.path): the official layout, small.
from test_data_tiny_imagenet import _write as write_tiny_imagenet

from afa.cli.main import main
from afa.data import DataConfig, DatasetInfo, ImageSet, as_tensor
from afa.data.pipeline.testset import check_test_data, load_test_data, parse_test_data
from afa.data.readers.npz import read_npz_array
from afa.errors import ConfigError, DataError
from afa.report.export import model_info

DIGITS = DatasetInfo(
    name="digits",
    num_classes=10,
    image_shape=(1, 8, 8),
    mean=(0.5,),
    std=(0.5,),
    class_names=tuple(str(i) for i in range(10)),
    augment="none",
)
PETS = DatasetInfo(
    name="pets",
    num_classes=3,
    image_shape=(3, 16, 16),
    mean=(0.5,) * 3,
    std=(0.5,) * 3,
    class_names=("cat", "dog", "frog"),
    augment="crop-flip",
)


def _images(n: int, shape=(1, 8, 8), classes: int = 10, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    return ImageSet(
        images=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
        labels=np.arange(n, dtype=np.int64) % classes,
    )


# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["npz:held.npz"], {"name": "npz", "path": "held.npz"}),
        (["data.name=npz", "data.path=held.npz"], {"name": "npz", "path": "held.npz"}),
        (["npz:a.npz", "test_image_key=images"], {"path": "a.npz", "test_image_key": "images"}),
        (["imagefolder:photos", "image_size=32"], {"root": "photos", "image_size": 32}),
        (["cifar10:/data/c10"], {"name": "cifar10", "root": "/data/c10", "path": None}),
        (["cifar10.1"], {"name": "cifar10.1", "root": "data"}),
    ],
)
def test_parse_test_data(items, expected):
    cfg = parse_test_data(items)
    assert {k: getattr(cfg, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("items", "words"),
    [
        (["npz:a.npz", "cifar10"], "one NAME[:LOCATION] only"),
        (["cifar:data"], "did you mean 'cifar10'?"),
        (["npz:a.npz", "imagesize=3"], "did you mean 'data.image_size'?"),
        (["npz:a.npz", "train_size=0.5"], "data.train_size shapes training only"),
        (["npz:"], "expected NAME[:LOCATION]"),
        (["image_key=x"], "name the data"),
        (["data.name=npz"], "npz needs its file"),
    ],
)
def test_parse_test_data_refuses_in_one_line(items, words):
    with pytest.raises(ConfigError, match="^test data") as info:
        parse_test_data(items)
    assert words in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------ the check


def _info(base: DatasetInfo, **kw) -> DatasetInfo:
    return DatasetInfo(**{**base.__dict__, **kw})


def test_check_accepts_a_fitting_test_set():
    check_test_data(_images(20), _info(DIGITS, name="held"), DIGITS, "npz:held.npz")
    # An npz only numbers its classes: names are not compared with real ones.
    numbered = _info(PETS, class_names=("0", "1", "2"))
    check_test_data(_images(6, (3, 16, 16), 3), numbered, PETS, "npz:x.npz")


@pytest.mark.parametrize(
    ("test", "info", "cfg", "words"),
    [
        (_images(0), DIGITS, None, "no test images"),
        (_images(4, (3, 16, 16), 3), _info(PETS, class_names=("cat", "dog", "fox")), None,
         "fox not among the model's, frog missing"),
        (_images(4, (3, 16, 16), 3), _info(PETS, class_names=("dog", "cat", "frog")), None,
         "another order (label 0 is 'dog' here, 'cat' for the model)"),
        (_images(4, (1, 16, 16), 3), _info(PETS, image_shape=(1, 16, 16)),
         DataConfig(name="imagefolder"), "1 channel(s), the model takes 3 (the model was "
         "trained on pets); color=rgb converts them"),
        (_images(4, (3, 32, 32), 3), _info(PETS, image_shape=(3, 32, 32)),
         DataConfig(name="imagefolder"), "32x32, the model takes 16x16 (the model was trained "
         "on pets); image_size=16 resize=true resizes them"),
        (_images(4, (3, 16, 16), 2), _info(PETS, num_classes=2, class_names=("0", "1")),
         DataConfig(name="npz", path="x.npz"), "2 classes, the model has 3 (the model was "
         "trained on pets); if its labels are the model's, say num_classes=3"),
    ],
)  # fmt: skip
def test_check_refuses_a_mismatch_in_one_line(test, info, cfg, words):
    with pytest.raises(DataError, match="^test data x: ") as exc:
        check_test_data(test, info, PETS if info is not DIGITS else DIGITS, "x", cfg)
    assert words in str(exc.value) and "\n" not in str(exc.value)


# ------------------------------------------------------------------------------ npz files


def test_an_npz_of_one_pair_is_a_test_set_whole(tmp_path):
    data = _images(30)
    np.savez(tmp_path / "test_only.npz", x_test=data.images, y_test=data.labels)
    np.savez(tmp_path / "train_only.npz", x_train=data.images, y_train=data.labels)
    np.savez(
        tmp_path / "both.npz",
        x_train=data.images[:20],
        y_train=data.labels[:20],
        x_test=data.images[20:],
        y_test=data.labels[20:],
    )
    for name, n, first in (("test_only", 30, 0), ("train_only", 30, 0), ("both", 10, 20)):
        chosen = load_test_data(DataConfig(name="npz", path=str(tmp_path / f"{name}.npz")), DIGITS)
        assert len(chosen.data) == chosen.record["n"] == n
        np.testing.assert_array_equal(chosen.data.images[:3], data.images[first : first + 3])
        np.testing.assert_array_equal(chosen.data.labels, data.labels[first : first + n])
        assert chosen.record["label"] == f"npz:{tmp_path / name}.npz"
        assert chosen.record["path"] == str((tmp_path / f"{name}.npz").resolve())


def test_as_tensor_copies_only_a_read_only_array(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.arange(12, dtype=np.uint8).reshape(3, 4))
    mapped = read_npz_array(tmp_path / "a.npz", "x")
    assert not mapped.flags.writeable
    t = as_tensor(mapped[:2])
    assert torch.equal(t, torch.arange(8, dtype=torch.uint8).reshape(2, 4))
    own = np.zeros(4)
    assert as_tensor(own).data_ptr() == own.ctypes.data  # shared, not copied


# ------------------------------------------------------------------------------ export


def test_export_names_the_test_set_evaluated():
    record = {
        "dataset": "imagefolder",
        "threat_model": {"norm": "linf", "eps": 8 / 255},
        "n_examples": 10_000,
        "clean_acc": 0.8,
        "attacks": {},
        "robust_acc": 0.5,
        "test_data": {"label": "cifar10:data", "own": False, "dataset": "cifar10"},
    }
    info, _, notes = model_info(record)
    assert info["dataset"] == "cifar10"
    assert "10000 cifar10 test images" in info["footnote"]
    assert any("cifar10:data, not the test split of the training data (imagefolder)" in n
               for n in notes)  # fmt: skip


# ------------------------------------------------------------------------------ Tiny-ImageNet


def test_eval_and_analyze_on_tiny_imagenet_print_no_numpy_warning(tmp_path):
    """Its test split is a read-only memory map; torch warns about one once per process,
    so each command runs in a fresh one."""
    write_tiny_imagenet(tmp_path / "data")
    argv = [
        "train", "tiny-imagenet-pgd-at", f"data.root={tmp_path / 'data'}",
        f"data.cache_dir={tmp_path / 'cache'}", "data.val_size=3", f"out_dir={tmp_path}",
        "name=run", "train.epochs=1", "train.batch_size=3", "train.val_examples=3",
        "threat.steps=1", "model.name=cnn", "model.options={width: 4}",
    ]  # fmt: skip
    assert main(argv) == 0
    run = Path(tmp_path / "run")
    # One fresh process for both: a warning from the first would hide one from the second
    # only when the first already fails.
    script = (
        "from afa.cli.main import main; "
        f"assert main(['eval', {str(run)!r}, '--attacks', 'pgd', '--no-sanity', '--steps', '1']) == 0; "
        f"assert main(['analyze', {str(run)!r}, '--no-figures', '--n-train', '6', '--k', '3']) == 0"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "not writable" not in done.stderr + done.stdout
    assert json.loads((run / "eval.json").read_text())["test_data"]["n"] == 3
    assert json.loads((run / "analysis.json").read_text())["test_data"]["own"] is True
