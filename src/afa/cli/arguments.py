"""The arguments several commands share, declared once: argparse types, the ``key=value``
overrides, and what ``afa eval`` and ``afa analyze`` both read (the model and its test set).

Importing this module imports no torch: ``afa --help`` answers at once.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from afa.cli.checks import check_device, check_record_writable

if TYPE_CHECKING:
    from afa.data import DataConfig

#: How a published model is named where a run directory could be (``afa eval``, ``analyze``).
PUBLISHED = "robustbench:"


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number >= 1 (``--n 0``, ``--k -3`` are refused)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def comma_list(text: str) -> list[str]:
    """An argparse ``type``: ``"pgd, cw"`` -> ``["pgd", "cw"]``, each item stripped.

    The one rule of every comma list on the command line: no item is dropped, so an empty
    one (``--attacks ""``, ``--methods afa,,pgd-at``) reaches what reads the list as ``""``,
    which refuses it as it refuses any unknown name. Leaving the option out is how a
    command is told to use its default.
    """
    return [item.strip() for item in text.split(",")]


def severities(text: str) -> tuple[int, ...]:
    """An argparse ``type``: a comma list of corruption severities, each in 1..5."""
    try:
        values = tuple(int(v) for v in comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of 1..5, got {text!r}") from None
    if any(v not in range(1, 6) for v in values):
        raise argparse.ArgumentTypeError(f"expected a comma list of 1..5, got {text!r}")
    return values


def add_overrides(parser: argparse.ArgumentParser, help: str = "dotted-key overrides") -> None:
    """``key=value ...`` as ``args.overrides``: the command line takes them anywhere on
    the line, before or after the options (``afa.cli.main``)."""
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=help)


def add_evaluation_arguments(parser: argparse.ArgumentParser, n_default: str) -> None:
    """``--n``, ``--attacks`` and ``--no-sanity``: what an evaluation of a run runs (eval and
    the evaluation after each fine-tuning protocol)."""
    parser.add_argument(
        "--n", type=positive_int, default=None, help=f"first N test examples ({n_default})"
    )
    parser.add_argument(
        "--attacks",
        type=comma_list,
        default=None,
        help="comma list of pgd,cw,autoattack (default: the run's)",
    )
    parser.add_argument("--no-sanity", action="store_true", help="skip the gradient-masking checks")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``afa eval`` and ``afa analyze`` both read: the model (a run directory, a
    checkpoint or a published model), which checkpoint, the device, another test set, and
    for a published model where its data and its record are."""
    parser.add_argument(
        "path",
        help=f"run directory, checkpoint file, or {PUBLISHED}NAME[@CHECKPOINT] (a published "
        "RobustBench CIFAR-10 Linf model; without @CHECKPOINT it is downloaded to "
        "models/cifar10/Linf/NAME.pt)",
    )
    parser.add_argument("--which", choices=["best", "last"], default="best")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--test-data",
        action="append",
        default=None,
        metavar="DATA",
        help="another test set (its test split), checked against the model and recorded: "
        "npz:FILE, imagefolder:DIR, cifar10:DIR, cifar10.1:DIR, ... or a data key=value "
        "(data.name=npz, test_image_key=images); repeat for more keys",
    )
    parser.add_argument(
        "--data-root", default="data", help=f"{PUBLISHED} models: the directory holding CIFAR-10"
    )
    parser.add_argument(
        "--out", default=None, help=f"{PUBLISHED} models: output directory (default runs/NAME)"
    )


def check_model_arguments(args: argparse.Namespace, record: str) -> None:
    """Before any work: the device exists, and the place ``record`` goes takes a new file."""
    check_device(args.device, "--device")
    check_record_writable(args.path, args.out, record)


def is_published(args: argparse.Namespace) -> bool:
    """Whether ``args.path`` names a published model rather than a run or a checkpoint."""
    return str(args.path).startswith(PUBLISHED)


def read_test_data(args: argparse.Namespace) -> DataConfig | None:
    """The data config of ``--test-data``, parsed before anything is loaded (None: the
    model's own test set)."""
    if not args.test_data:
        return None
    from afa.data.pipeline.testset import parse_test_data

    return parse_test_data(args.test_data)
