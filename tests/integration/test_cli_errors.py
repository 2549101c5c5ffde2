"""Bad input at the command line: one line naming the key or file, exit status 2, no traceback.

The battery of issue 13 (a new user's bad inputs across ``train``, ``eval``, ``analyze``,
``compare`` and ``quickstart``) is kept as one table, :data:`CASES`; the valid inputs beside
them must exit 0. Tests of single cases check what the table cannot (nothing trained or
written before a refusal, the message's wording). One tiny trained run per module serves
every row that needs a run.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import data_files  # tests/data_files.py: archives and PNGs crafted byte by byte
import numpy as np
import pytest
import torch
from PIL import Image

from afa.cli.checks import check_device, check_output_dir, check_run_dirs
from afa.cli.main import main
from afa.errors import ConfigError, UserError

#: Every `afa train` row carries these, so a row whose check is missing trains for seconds,
#: not for the recipe's 100 epochs.
TINY = ["train.epochs=1", "model.options={width: 4}", "eval.n_examples=24", "eval.attacks=[pgd]"]


#: The progress log's lines (``HH:MM:SS message``), which are not the error.
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d ")


def _train_row(recipe: str, *overrides: str) -> list[str]:
    return ["train", recipe, "out_dir={tmp}", "name=r", *TINY, *overrides]


class _RunsCode:
    """Pickles as a call of os.system: a checkpoint that would run code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, Path]:
    """One trained run, plus the files and directories the table points at."""
    root = tmp_path_factory.mktemp("cli_errors")
    assert main(["train", "digits-pgd-at", f"out_dir={root}", "name=run", *TINY]) == 0
    (root / "file.txt").write_text("not a directory\n")
    (root / "empty").mkdir()
    (root / "empty.yaml").write_text("# nothing here yet\n")
    (root / "defaults.yaml").write_text("{}\n")
    (root / "broken.yaml").write_text("data: [1, 2\n")
    (root / "scalar.yaml").write_text("3\n")
    (root / "bad.pt").write_bytes(b"not a checkpoint")
    torch.save({"format": "afa-checkpoint/1", "model": _RunsCode(root / "ran")}, root / "evil.pt")
    (root / "trunc.pt").write_bytes((root / "run" / "best.pt").read_bytes()[:4096])
    (root / "corrupt").mkdir()  # a run whose last.pt was cut short (a disk filled up)
    (root / "corrupt" / "last.pt").write_bytes((root / "run" / "last.pt").read_bytes()[:4096])
    _data_files(root)
    _config_files(root)
    return {
        "run": root / "run",
        "runs": root,
        "file": root / "file.txt",
        "empty": root / "empty",
        "emptyyaml": root / "empty.yaml",
        "defaultsyaml": root / "defaults.yaml",
        "brokenyaml": root / "broken.yaml",
        "scalaryaml": root / "scalar.yaml",
        "badpt": root / "bad.pt",
        "evilpt": root / "evil.pt",
        "truncpt": root / "trunc.pt",
        "ran": root / "ran",
        **{k.replace(".", ""): root / k for k in CONFIG_FILES},
        "otherpt": root / "other.pt",
        **{k: root / k for k in ("bomb.zip", "pax.tar.gz", "pngbomb", "tiny", "float", "ok16")},
    }


def _image_folder(root: Path, first: bytes | None = None, size: int = 8, **extra: bytes) -> None:
    """``root/train/<a|b>/<k>.png``, 8 small RGB images per class; ``first`` replaces the first
    file's bytes, ``extra`` adds files (relative path -> bytes)."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for k in range(8):
            x = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(x).save(root / "train" / cls / f"{k}.png")
    if first is not None:
        (root / "train" / "a" / "0.png").write_bytes(first)
    for name, data in extra.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def _data_files(root: Path) -> None:
    """Crafted and odd image data, each about 1 MB at most."""
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, "PNG")
    small = {"train/a/1.png": png.getvalue()}
    data_files.write_zip(root / "bomb.zip", small, zeros={"train/a/0.png": data_files.GiB})
    data_files.write_tar_gz(root / "pax.tar.gz", small, pax_header=data_files.GiB)
    _image_folder(root / "pngbomb", data_files.png_bytes(20000, 20000, bit_depth=1))
    _image_folder(root / "tiny", size=1)
    floats = io.BytesIO()
    Image.fromarray(np.ones((8, 8), np.float32)).save(floats, "TIFF")
    _image_folder(root / "float", **{"train/b/9.tif": floats.getvalue()})
    # valid: 16-bit PNGs and the files macOS and Windows leave beside images
    sixteen = np.random.default_rng(1).integers(0, 65536, (8, 8), dtype=np.uint16)
    png16 = io.BytesIO()
    Image.fromarray(sixteen).save(png16, "PNG")
    _image_folder(
        root / "ok16",
        **{f"train/b/{k}.png": png16.getvalue() for k in range(8)},
        **{"train/.DS_Store": b"\0\0\0\1Bud1", "train/a/._0.png": b"\0\5\26\7"},
        **{"train/Thumbs.db": b"\xd0\xcf\x11\xe0"},
    )


def alias_bomb(levels: int, width: int = 10) -> str:
    """YAML whose last line expands to ``width ** levels`` strings: the "billion laughs"."""
    rows = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(rows) + "\n"


#: Config files the table reads (their placeholder: the name without the dot).
CONFIG_FILES: dict[str, bytes] = {
    "dup.yaml": b"train:\n  epochs: 1\n  epochs: 2\n",
    "deep.yaml": b"data: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "bigint.yaml": b"train:\n  seed: " + b"9" * 5000 + b"\n",
    "latin1.yaml": "name: café\n".encode("latin-1"),
    "utf16.yaml": "train:\n  seed: 3\n".encode("utf-16"),  # with its byte-order mark: read
    "utf16le.yaml": "train:\n  seed: 3\n".encode("utf-16-le"),  # without: refused
    "bomb.yaml": alias_bomb(6).encode(),  # 10**6 values once expanded: refused before
    "self.yaml": b"data: &a [1, *a]\n",
}


def _config_files(root: Path) -> None:
    """The config files above; weights of another width under a config that names 4;
    a run directory whose lock file is a directory; the run's eval.json (for export)."""
    for name, data in CONFIG_FILES.items():
        (root / name).write_bytes(data)
    ckpt = torch.load(root / "run" / "best.pt", weights_only=True)
    ckpt["config"]["model"]["options"] = {"width": 8}
    torch.save(ckpt, root / "other.pt")
    (root / "lockdir" / ".lock").mkdir(parents=True)
    assert main(["eval", str(root / "run"), "--n", "8", "--attacks", "pgd", "--no-sanity"]) == 0


def _data_row(root: str, *overrides: str) -> list[str]:
    return _train_row(
        "digits-pgd-at",
        "data.name=imagefolder",
        f"data.root={root}",
        "data.cache_dir={tmp}/cache",
        "train.batch_size=4",
        *overrides,
    )


# (row id, argv with {placeholders}, exit status, text the message must contain)
CASES: list[tuple[str, list[str], int, str]] = [
    # --- afa train: the recipe file
    ("train-unknown-recipe", _train_row("digits-nosuch"), 2, "digits-nosuch"),
    ("train-missing-yaml", _train_row("{tmp}/missing.yaml"), 2, "missing.yaml"),
    ("train-empty-yaml", _train_row("{emptyyaml}"), 2, "empty.yaml: empty config file"),
    ("train-broken-yaml", _train_row("{brokenyaml}"), 2, "broken.yaml: not valid YAML"),
    ("train-scalar-yaml", _train_row("{scalaryaml}"), 2, "scalar.yaml: expected a mapping"),
    ("train-duplicate-key", _train_row("{dupyaml}"), 2, "line 3, column 3: duplicate key 'epochs'"),
    ("train-yaml-too-deep", _train_row("{deepyaml}"), 2, "deep.yaml: line 1, column 38: nested"),
    ("train-yaml-5000-digits", _train_row("{bigintyaml}"), 2, "an integer of 5000 digits"),
    ("train-yaml-latin1", _train_row("{latin1yaml}"), 2, "latin1.yaml: not UTF-8 text (byte 0xe9"),
    ("train-yaml-utf16-no-bom", _train_row("{utf16leyaml}"), 2, "utf16le.yaml: not UTF-8 text"),
    ("train-yaml-alias-bomb", _train_row("{bombyaml}"), 2, "bomb.yaml: line 5, column 5: more"),
    ("train-yaml-alias-loop", _train_row("{selfyaml}"), 2, "self.yaml: line 1, column 7: an alias"),
    # --- afa train: overrides
    ("train-not-key-value", _train_row("digits-pgd-at", "epochs"), 2, "expected key=value"),
    ("train-empty-key", _train_row("digits-pgd-at", "=5"), 2, "empty key"),
    ("train-unknown-key", _train_row("digits-pgd-at", "threat.epss=0.1"), 2, "threat.epss"),
    ("train-unknown-top-key", _train_row("digits-pgd-at", "epochs=3"), 2, "'epochs'"),
    (
        "train-override-5000-digits",
        _train_row("digits-pgd-at", "train.seed=" + "9" * 5000),
        2,
        "override train.seed: an integer of 5000 digits (expected at most 100)",
    ),
    (
        "train-override-duplicate-key",
        _train_row("digits-pgd-at", "model.options={width: 4, width: 8}"),
        2,
        "override model.options: duplicate key 'width'",
    ),
    ("train-name-parent", _train_row("digits-pgd-at", "name=../x"), 2, "name='../x': expected"),
    ("train-name-separator", _train_row("digits-pgd-at", "name=a/b"), 2, "name='a/b': expected"),
    ("train-name-300", _train_row("digits-pgd-at", "name=" + "n" * 300), 2, "200 bytes, got 300"),
    (
        "train-override-after-option",
        ["train", "digits-pgd-at", "out_dir={tmp}", "--resume", "name=r", *TINY, "train.x=1"],
        2,
        "unknown key 'train.x'",
    ),
    ("train-option-unknown", [*_train_row("digits-pgd-at"), "--fast"], 2, "afa train: error: unr"),
    ("train-section-scalar", _train_row("digits-pgd-at", "train.optimizer=5"), 2, "optimizer"),
    # --- afa train: values
    ("threat-eps-negative", _train_row("digits-pgd-at", "threat.eps=-0.1"), 2, "threat.eps"),
    ("threat-eps-text", _train_row("digits-pgd-at", "threat.eps=abc"), 2, "threat.eps"),
    ("threat-eps-zero-division", _train_row("digits-pgd-at", "threat.eps=8/0"), 2, "threat.eps"),
    ("threat-norm", _train_row("digits-pgd-at", "threat.norm=l3"), 2, "threat.norm"),
    ("threat-steps", _train_row("digits-pgd-at", "threat.steps=-1"), 2, "threat.steps"),
    ("threat-restarts", _train_row("digits-pgd-at", "threat.restarts=0"), 2, "threat.restarts"),
    ("threat-bn-mode", _train_row("digits-pgd-at", "threat.bn_mode=test"), 2, "threat.bn_mode"),
    ("train-epochs-zero", _train_row("digits-pgd-at", "train.epochs=0"), 2, "epochs"),
    ("train-epochs-negative", _train_row("digits-pgd-at", "train.epochs=-2"), 2, "epochs"),
    ("train-epochs-fraction", _train_row("digits-pgd-at", "train.epochs=1.5"), 2, "train.epochs"),
    ("train-batch-size-zero", _train_row("digits-pgd-at", "train.batch_size=0"), 2, "batch_size"),
    ("train-eval-every-zero", _train_row("digits-pgd-at", "train.eval_every=0"), 2, "eval_every"),
    ("train-lr-zero", _train_row("digits-pgd-at", "train.optimizer.lr=0"), 2, "lr"),
    ("train-optimizer-name", _train_row("digits-pgd-at", "train.optimizer.name=adam"), 2, "sgd"),
    (
        "train-milestones-order",
        _train_row("digits-pgd-at", "train.schedule.milestones=[0.9, 0.5]"),
        2,
        "milestones",
    ),
    ("train-precision", _train_row("digits-pgd-at", "train.precision=fp8"), 2, "precision"),
    ("train-ema-decay", _train_row("digits-pgd-at", "train.ema.decay=1.5"), 2, "decay"),
    ("train-grad-clip", _train_row("digits-pgd-at", "train.grad_clip=0"), 2, "grad_clip"),
    ("val-size-float-above-1", _train_row("digits-pgd-at", "data.val_size=2.0"), 2, "val_size"),
    ("val-size-fraction-1.5", _train_row("digits-pgd-at", "data.val_size=1.5"), 2, "val_size"),
    ("val-size-negative", _train_row("digits-pgd-at", "data.val_size=-0.1"), 2, "val_size"),
    ("val-size-too-many", _train_row("digits-pgd-at", "data.val_size=100000"), 2, "val_size"),
    ("data-name", _train_row("digits-pgd-at", "data.name=mnist"), 2, "mnist"),
    ("data-npz-no-path", _train_row("digits-pgd-at", "data.name=npz"), 2, "path"),
    (
        "data-npz-missing",
        _train_row("digits-pgd-at", "data.name=npz", "data.path={tmp}/x.npz"),
        2,
        "x.npz",
    ),
    (
        "data-generated-missing",
        _train_row("digits-pgd-at", "data.generated=[{tmp}/gen.npz]"),
        2,
        "gen.npz",
    ),
    (
        "data-cifar-absent-no-download",
        _train_row("cifar10-pgd-at", "data.root={tmp}/none", "data.download=false"),
        2,
        "download",
    ),
    (
        "data-generated-fraction",
        _train_row("digits-pgd-at", "data.generated_fraction=1.5"),
        2,
        "data.generated_fraction",
    ),
    ("data-crop-padding", _train_row("digits-pgd-at", "data.crop_padding=-1"), 2, "crop_padding"),
    # --- afa train: crafted or odd image data (a memory bound on them: tests/unit)
    (
        "data-zip-bomb",
        _data_row("{bomb.zip}"),
        2,
        "bomb.zip:train/a/0.png: 1,073,741,824 bytes; a data file may have at most 67,108,864",
    ),
    (
        "data-tar-pax-bomb",
        _data_row("{pax.tar.gz}"),
        2,
        "pax.tar.gz: a tar record of 1,073,741,824",
    ),
    ("data-png-bomb", _data_row("{pngbomb}"), 2, "a/0.png: image of 400,000,000 pixels"),
    ("data-image-1x1", _data_row("{tiny}"), 2, "a/0.png: image is 1x1 (HxW), smaller than the 8x8"),
    ("data-image-size-4", _data_row("{tiny}", "data.image_size=4"), 2, "image_size"),
    ("data-float-image", _data_row("{float}"), 2, "b/9.tif: floating-point samples"),
    ("data-augment", _train_row("digits-pgd-at", "data.augment=foo"), 2, "augment"),
    ("model-option", _train_row("digits-pgd-at", "model.options={depth: 3}"), 2, "depth"),
    ("model-width-zero", _train_row("digits-pgd-at", "model.options={width: 0}"), 2, "width"),
    ("threat-step-size", _train_row("digits-pgd-at", "threat.step_size=-1"), 2, "step_size"),
    (
        "threat-step-size-zero",
        _train_row("digits-pgd-at", "threat.step_size=0"),
        2,
        "threat.step_size: expected > 0 with threat.steps=10",
    ),
    (
        "label-smoothing-1.5",
        _train_row("digits-pgd-at", "method.label_smoothing=1.5"),
        2,
        "method.label_smoothing: expected a value in [0, 1), got 1.5",
    ),
    (
        "label-smoothing-negative",
        _train_row("digits-standard", "method.label_smoothing=-0.1"),
        2,
        "method.label_smoothing: expected a value in [0, 1), got -0.1",
    ),
    ("train-momentum", _train_row("digits-pgd-at", "train.optimizer.momentum=1"), 2, "momentum"),
    ("train-val-examples", _train_row("digits-pgd-at", "train.val_examples=0"), 2, "val_examples"),
    ("train-log-every", _train_row("digits-pgd-at", "train.log_every=0"), 2, "log_every"),
    ("train-seed-negative", _train_row("digits-pgd-at", "train.seed=-1"), 2, "seed"),
    (
        "eval-n-examples-zero",
        _train_row("digits-pgd-at", "eval.n_examples=0"),
        2,
        "eval.n_examples",
    ),
    (
        "eval-n-examples-neg",
        _train_row("digits-pgd-at", "eval.n_examples=-5"),
        2,
        "eval.n_examples",
    ),
    ("eval-batch-size-cfg", _train_row("digits-pgd-at", "eval.batch_size=0"), 2, "eval.batch_size"),
    ("eval-pgd-steps-cfg", _train_row("digits-pgd-at", "eval.pgd_steps=0"), 2, "eval.pgd_steps"),
    ("eval-attacks-cfg", _train_row("digits-pgd-at", "eval.attacks=[pgd, nosuch]"), 2, "nosuch"),
    ("eval-attacks-twice-cfg", _train_row("digits-pgd-at", "eval.attacks=[cw, cw]"), 2, "once"),
    (
        "afa-temperature-zero",
        _train_row("digits-afa", "method.temperature=0"),
        2,
        "method.temperature",
    ),
    ("model-name", _train_row("digits-pgd-at", "model.name=resnet81"), 2, "resnet81"),
    ("method-name", _train_row("digits-pgd-at", "method.name=nosuch"), 2, "nosuch"),
    ("method-option", _train_row("digits-pgd-at", "method.beta=6"), 2, "method.beta"),
    ("trades-beta-negative", _train_row("digits-trades", "method.beta=-1"), 2, "method.beta"),
    (
        "classifier-protocol",
        _train_row("digits-afa", "classifier.protocol=probe"),
        2,
        "classifier.protocol",
    ),
    ("classifier-end-to-end", _train_row("digits-pgd-at", "classifier.epochs=2"), 2, "classifier"),
    # --- afa train: devices and places
    ("device-unknown", _train_row("digits-pgd-at", "device=gpu"), 2, "device"),
    ("device-cuda-index", _train_row("digits-pgd-at", "device=cuda:99"), 2, "device"),
    ("out-dir-proc", ["train", "digits-pgd-at", "out_dir=/proc/afa", *TINY], 2, "out_dir"),
    ("out-dir-file", ["train", "digits-pgd-at", "out_dir={file}", *TINY], 2, "out_dir"),
    ("out-dir-below-file", ["train", "digits-pgd-at", "out_dir={file}/x", *TINY], 2, "out_dir"),
    # --- afa train: an existing run
    (
        "train-over-finished-run",
        ["train", "digits-pgd-at", "out_dir={runs}", "name=run", *TINY],
        2,
        "--resume",
    ),
    ("resume-nothing", [*_train_row("digits-pgd-at"), "--resume"], 2, "cannot resume"),
    (
        "lock-is-a-directory",
        ["train", "digits-pgd-at", "out_dir={runs}", "name=lockdir", *TINY],
        2,
        "lockdir/.lock: is a directory; expected the run's lock file",
    ),
    (
        "resume-changed-key",
        [
            "train",
            "digits-pgd-at",
            "out_dir={runs}",
            "name=run",
            *TINY,
            "threat.eps=0.1",
            "--resume",
        ],
        2,
        "threat.eps",
    ),
    (
        "resume-corrupt-last",
        ["train", "digits-pgd-at", "out_dir={runs}", "name=corrupt", *TINY, "--resume"],
        2,
        "corrupt/last.pt: not a readable checkpoint",
    ),
    ("train-no-recipe", ["train"], 2, "config"),
    # --- afa eval
    ("eval-missing", ["eval", "{tmp}/nope"], 2, "nope"),
    ("eval-not-checkpoint", ["eval", "{badpt}"], 2, "bad.pt"),
    ("eval-code-checkpoint", ["eval", "{evilpt}"], 2, "nothing was run"),
    ("eval-truncated-checkpoint", ["eval", "{truncpt}"], 2, "trunc.pt"),
    ("eval-empty-dir", ["eval", "{empty}"], 2, "best.pt"),
    (
        "eval-other-architecture",
        ["eval", "{otherpt}"],
        2,
        "other.pt: weights do not fit the model: body.0.weight is (4, 1, 3, 3) in the "
        "checkpoint, (8, 1, 3, 3) in the model (16 keys differ)",
    ),
    ("eval-n-zero", ["eval", "{run}", "--n", "0"], 2, "--n"),
    ("eval-n-negative", ["eval", "{run}", "--n", "-5"], 2, "--n"),
    ("eval-n-text", ["eval", "{run}", "--n", "ten"], 2, "--n"),
    ("eval-batch-size-zero", ["eval", "{run}", "--batch-size", "0"], 2, "--batch-size"),
    ("eval-attack-unknown", ["eval", "{run}", "--attacks", "nosuch"], 2, "nosuch"),
    ("eval-attack-twice", ["eval", "{run}", "--attacks", "pgd,pgd"], 2, "once"),
    ("eval-attacks-empty", ["eval", "{run}", "--attacks", ""], 2, "eval.attacks"),
    ("eval-eps-negative", ["eval", "{run}", "--eps", "-1"], 2, "eps"),
    ("eval-eps-text", ["eval", "{run}", "--eps", "big"], 2, "--eps"),
    ("eval-step-size-text", ["eval", "{run}", "--step-size", "x"], 2, "--step-size"),
    ("eval-step-size-zero", ["eval", "{run}", "--step-size", "0"], 2, "--step-size: expected > 0"),
    ("eval-steps-negative", ["eval", "{run}", "--steps", "-3"], 2, "--steps"),
    ("eval-steps-zero", ["eval", "{run}", "--steps", "0"], 2, "--steps"),
    ("eval-restarts-zero", ["eval", "{run}", "--restarts", "0"], 2, "--restarts"),
    ("eval-eps-zero-division", ["eval", "{run}", "--eps", "8/0"], 2, "--eps"),
    ("eval-no-path", ["eval"], 2, "path"),
    ("eval-which", ["eval", "{run}", "--which", "middle"], 2, "--which"),
    ("eval-ema", ["eval", "{run}", "--ema", "maybe"], 2, "--ema"),
    ("eval-device-cuda-index", ["eval", "{run}", "--device", "cuda:99"], 2, "--device"),
    ("eval-device-unknown", ["eval", "{run}", "--device", "tpu0"], 2, "--device"),
    ("eval-unknown-flag", ["eval", "{run}", "--fast"], 2, "--fast"),
    # --- afa analyze
    ("analyze-missing", ["analyze", "{tmp}/nope"], 2, "nope"),
    ("analyze-k-zero", ["analyze", "{run}", "--k", "0"], 2, "--k"),
    ("analyze-n-test-negative", ["analyze", "{run}", "--n-test", "-3"], 2, "--n-test"),
    ("analyze-n-train-zero", ["analyze", "{run}", "--n-train", "0"], 2, "--n-train"),
    # 3 training images cannot hold all 10 classes: their centroids are undefined
    (
        "analyze-n-train-too-few",
        ["analyze", "{run}", "--n-train", "3", "--no-figures"],
        2,
        "n_train",
    ),
    ("analyze-device-cuda-index", ["analyze", "{run}", "--device", "cuda:99"], 2, "--device"),
    (
        "analyze-k-above-n-train",
        ["analyze", "{run}", "--k", "100000", "--no-figures"],
        2,
        "k=100000 (--k): expected at most the 1213 training examples",
    ),
    # --- afa compare
    ("compare-nothing", ["compare"], 2, "runs"),
    ("compare-missing", ["compare", "{tmp}/nope"], 2, "nope: run directory not found"),
    ("compare-empty-dir", ["compare", "{empty}"], 2, "not a run directory"),
    ("compare-a-file", ["compare", "{file}"], 2, "file.txt"),
    ("compare-out-file", ["compare", "{run}", "--out", "{file}"], 2, "--out"),
    ("compare-out-proc", ["compare", "{run}", "--out", "/proc/report"], 2, "--out"),
    ("compare-same-run", ["compare", "{run}", "{run}/"], 2, "run: given twice; expected each"),
    # --- afa export
    ("export-name-parent", ["export", "{run}", "--name", "../x"], 2, "--name='../x': expected"),
    ("export-name-separator", ["export", "{run}", "--name", "a/b"], 2, "--name='a/b'"),
    ("export-out-unwritable", ["export", "{run}", "--out", "/proc/x.json"], 2, "cannot write /p"),
    # --- afa quickstart (each refused before the first method trains)
    ("quickstart-attack", ["quickstart", "--out", "{tmp}/q", "--attacks", "nosuch"], 2, "nosuch"),
    (
        "quickstart-attacks-empty",
        ["quickstart", "--out", "{tmp}/q", "--attacks", ""],
        2,
        "--attacks",
    ),
    ("quickstart-method", ["quickstart", "--out", "{tmp}/q", "--methods", "mart"], 2, "mart"),
    (
        "quickstart-method-twice",
        ["quickstart", "--out", "{tmp}/q", "--methods", "afa,afa"],
        2,
        "once",
    ),
    (
        "quickstart-methods-empty",
        ["quickstart", "--out", "{tmp}/q", "--methods", ""],
        2,
        "--methods",
    ),
    (
        "quickstart-eval-zero",
        ["quickstart", "--out", "{tmp}/q", "--eval-examples", "0"],
        2,
        "--eval-examples",
    ),
    ("quickstart-epochs-zero", ["quickstart", "--out", "{tmp}/q", "--epochs", "0"], 2, "--epochs"),
    (
        "quickstart-seed-negative",
        ["quickstart", "--out", "{tmp}/q", "--epochs", "1", "--seed", "-1"],
        2,
        "seed",
    ),
    ("quickstart-out-proc", ["quickstart", "--out", "/proc/qs"], 2, "--out"),
    ("quickstart-out-file", ["quickstart", "--out", "{file}"], 2, "--out"),
    ("quickstart-device", ["quickstart", "--out", "{tmp}/q", "--device", "cuda:99"], 2, "--device"),
    # --- the command itself
    ("no-command", [], 2, "COMMAND"),
    ("unknown-command", ["fit"], 2, "fit"),
    ("threads-zero", ["--threads", "0", "recipes"], 2, "--threads"),
    ("threads-text", ["--threads", "two", "recipes"], 2, "--threads"),
    # --- valid inputs: exit 0
    ("help", ["--help"], 0, ""),
    ("recipes", ["recipes"], 0, ""),
    (
        "resume-finished-run",
        ["train", "digits-pgd-at", "out_dir={runs}", "name=run", *TINY, "--resume"],
        0,
        "",
    ),
    ("train-val-size-count", _train_row("digits-standard", "data.val_size=20"), 0, ""),
    ("train-explicit-defaults", _train_row("{defaultsyaml}"), 0, ""),
    ("train-utf16-with-bom", _train_row("{utf16yaml}"), 0, ""),
    # a batch larger than the training set trains on all of it (a note says so)
    ("train-batch-above-set", _train_row("digits-standard", "train.batch_size=100000"), 0, ""),
    (
        "data-folder-default-batch",
        _data_row("{ok16}", "data.test_size=2", "train.batch_size=128"),
        0,
        "",
    ),
    (
        "train-resume-override-after-option",
        ["train", "digits-pgd-at", "out_dir={runs}", "--resume", "name=run", *TINY],
        0,
        "",
    ),
    ("data-16-bit-and-hidden-files", _data_row("{ok16}", "data.test_size=2"), 0, ""),
    (
        "eval-valid",
        ["eval", "{run}", "--n", "8", "--attacks", "pgd", "--no-sanity", "--device", "cpu"],
        0,
        "",
    ),
    (
        "eval-valid-overrides",
        [
            "eval",
            "{run}",
            "--n",
            "8",
            "--attacks",
            "pgd,cw",
            "--steps",
            "2",
            "--eps",
            "1/10",
            "--restarts",
            "1",
            "--no-sanity",
            "--which",
            "last",
        ],
        0,
        "",
    ),  # fmt: skip
    ("analyze-valid", ["analyze", "{run}", "--n-test", "16", "--k", "3", "--no-figures"], 0, ""),
    ("compare-valid", ["compare", "{run}", "--out", "{tmp}/report"], 0, ""),
]


def _fill(argv: list[str], places: dict[str, Path], tmp: Path) -> list[str]:
    names = {"tmp": str(tmp), **{k: str(v) for k, v in places.items()}}
    out = []
    for arg in argv:
        for name, value in names.items():
            arg = arg.replace("{" + name + "}", value)
        out.append(arg)
    return out


@pytest.mark.parametrize(
    ("argv", "status", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_table(argv, status, needle, places, tmp_path, capsys):
    code = main(_fill(argv, places, tmp_path))
    err = capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err
    if status == 2:
        lines = [line for line in err.splitlines() if not LOG_LINE.match(line)]
        assert len(lines) == 1, err
        assert lines[0].startswith(("afa: error: ", "afa ")) and needle in lines[0], err


def test_code_in_a_checkpoint_never_ran(places):
    assert main(["eval", str(places["evilpt"])]) == 2
    assert not places["ran"].exists()


def test_table_size():
    """The issue's battery had 73 bad inputs; this table holds at least as many."""
    bad = [c for c in CASES if c[2] != 0]
    assert len(bad) >= 73 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_names_the_device(places, tmp_path, capsys):
    assert main(_fill(_train_row("digits-pgd-at", "device=cuda"), places, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "device='cuda': CUDA is not available here" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()  # refused before the run directory was made
    assert main(["eval", str(places["run"]), "--device", "cuda"]) == 2
    assert "--device='cuda'" in capsys.readouterr().err


def test_cli_error_in_a_fresh_process_has_no_traceback(places):
    """What a user sees: a real process, its stderr and its exit status."""
    proc = subprocess.run(
        [sys.executable, "-m", "afa", "analyze", str(places["run"]), "--k", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "afa analyze: error: argument --k: expected a whole number >= 1, got '0' "
        "(see `afa analyze --help`)"
    ]


def test_quickstart_refuses_before_training(tmp_path, capsys):
    out = tmp_path / "qs"
    argv = ["quickstart", "--out", str(out), "--methods", "standard,pgd-at", "--epochs", "1"]
    assert main([*argv, "--attacks", "pgd,nosuch"]) == 2
    assert "unknown attack 'nosuch'" in capsys.readouterr().err
    assert not out.exists()  # nothing trained, nothing written


def test_compare_refuses_missing_and_empty_without_writing(places, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["compare", str(places["run"]), str(tmp_path / "gone"), "--out", str(out)]) == 2
    assert "gone: run directory not found" in capsys.readouterr().err
    assert main(["compare", str(places["empty"]), "--out", str(out)]) == 2
    assert not out.exists()


def test_eval_n_negative_is_refused_not_read_as_all(places, capsys):
    before = (
        (places["run"] / "eval.json").read_bytes()
        if (places["run"] / "eval.json").exists()
        else None
    )
    assert main(["eval", str(places["run"]), "--n", "-5"]) == 2
    after = (
        (places["run"] / "eval.json").read_bytes()
        if (places["run"] / "eval.json").exists()
        else None
    )
    assert before == after  # nothing was evaluated


# --- the checks as functions


def test_check_device():
    check_device("auto")
    check_device("cpu")
    with pytest.raises(ConfigError, match=r"^dev: expected 'auto', 'cpu'"):
        check_device("gpu", "dev")
    with pytest.raises(ConfigError, match=r"^dev='cuda:99'"):
        check_device("cuda:99", "dev")


def test_check_output_dir(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b", "out") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checking creates nothing
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file, not a directory"):
        check_output_dir(f, "out")
    with pytest.raises(UserError, match=r"f is a file, not a directory"):
        check_output_dir(f / "sub" / "dir", "out")
    with pytest.raises(UserError, match=r"^out='/proc/x/y': cannot write in /proc"):
        check_output_dir("/proc/x/y", "out")


def test_check_run_dirs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "eval.json").write_text("{}")
    assert check_run_dirs([tmp_path / "a"]) == [tmp_path / "a"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a run directory"):
        check_run_dirs([tmp_path / "a", tmp_path / "b"])


def test_a_run_stored_with_a_float_count_still_evaluates(places, tmp_path):
    """Earlier versions stored val_size: 40 as 40.0; such runs must load (only a user's new
    `data.val_size=2.0` is refused)."""
    ckpt = torch.load(places["run"] / "best.pt", weights_only=True)
    ckpt["config"]["data"]["val_size"] = 40.0
    torch.save(ckpt, tmp_path / "old.pt")
    assert (
        main(["eval", str(tmp_path / "old.pt"), "--n", "8", "--attacks", "pgd", "--no-sanity"]) == 0
    )
