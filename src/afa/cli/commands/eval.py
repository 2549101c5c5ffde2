"""``afa eval MODEL``: robustness of a trained run (or a published model), into eval.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from afa.cli.arguments import (
    add_evaluation_arguments,
    add_model_arguments,
    check_model_arguments,
    comma_list,
    is_published,
    positive_int,
    read_test_data,
    severities,
)
from afa.cli.checks import parse_attack_options
from afa.cli.commands import register_command
from afa.config import parse_number
from afa.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_evaluation_arguments(parser, "default: the run's eval.n_examples, else all")
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument(
        "--eps", type=str, default=None, help="override eps (e.g. 8/255); recorded in eval.json"
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="steps of every PGD attack and of the sanity checks (default: the run's "
        "eval.pgd_steps / eval.cw_steps); recorded in eval.json",
    )
    parser.add_argument(
        "--attack-option",
        action="append",
        default=None,
        metavar="ATTACK.KEY=VALUE",
        help="one setting of one attack (e.g. cw.steps=50), over the run's "
        "eval.attack_options; repeat for more; recorded in eval.json",
    )
    parser.add_argument(
        "--step-size", type=str, default=None, help="override the PGD step size (e.g. 1/255)"
    )
    parser.add_argument(
        "--restarts", type=positive_int, default=None, help="override the PGD restarts"
    )
    parser.add_argument(
        "--ema", choices=["auto", "yes", "no"], default="auto", help="use EMA weights"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--shift",
        type=comma_list,
        default=None,
        help="comma list of natural-shift test sets: cifar10.1, cifar10.1-v4 (CIFAR-10 runs)",
    )
    parser.add_argument(
        "--shift-root", default=None, help="folder of the CIFAR-10.1 files (default: data.root)"
    )
    parser.add_argument(
        "--corruptions",
        nargs="?",
        const="generate",
        default=None,
        metavar="DIR",
        help="corruption accuracy per corruption and severity and its mean (CA): the official "
        "CIFAR-10-C / CIFAR-100-C files in DIR, or generated from the test set without DIR "
        "(put it after the run path)",
    )
    parser.add_argument(
        "--corruption-names",
        type=comma_list,
        default=None,
        help="comma list of corruptions (default: the benchmark's 15, those available)",
    )
    parser.add_argument(
        "--severities", type=severities, default=None, help="comma list of 1..5 (default: all)"
    )


def threat_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The threat model's fields changed on the command line (``--eps``, ``--step-size``,
    ``--restarts``)."""
    overrides: dict[str, Any] = {}
    if args.eps is not None:
        overrides["eps"] = parse_number(args.eps, "--eps")
    if args.step_size is not None:
        overrides["step_size"] = parse_number(args.step_size, "--step-size")
        if not overrides["step_size"] > 0:  # 0 would leave every attack at its start
            raise UserError(f"--step-size: expected > 0, got {args.step_size!r}")
    if args.restarts is not None:
        overrides["restarts"] = args.restarts
    return overrides


def run(args: argparse.Namespace) -> int:
    from afa.evaluation import format_table
    from afa.evaluation.shift import SEVERITIES, ShiftRequest, format_shift_summary

    check_model_arguments(args, "eval.json")
    overrides = threat_overrides(args)
    shift = ShiftRequest(
        shift=tuple(args.shift or ()),
        shift_root=args.shift_root,
        corruptions=args.corruptions,
        corruption_names=None if args.corruption_names is None else tuple(args.corruption_names),
        severities=args.severities or SEVERITIES,
    )
    test_data = read_test_data(args)
    settings: dict[str, Any] = {
        "n_examples": args.n,
        "batch_size": args.batch_size,
        "attacks": args.attacks,
        "threat_overrides": overrides,
        "steps": args.steps,
        "attack_options": parse_attack_options(args.attack_option),
        "device": args.device,
        "seed": args.seed,
        "sanity": not args.no_sanity,
        "shift": shift,
        "test_data": test_data,
    }
    if is_published(args):
        from afa.evaluation.published import evaluate_published

        result, out = evaluate_published(
            args.path, out_dir=args.out, data_root=args.data_root, **settings
        )
    else:
        from afa.evaluation.runs import evaluate_run

        ema = {"auto": None, "yes": True, "no": False}[args.ema]
        result, out = evaluate_run(Path(args.path), which=args.which, ema=ema, **settings)
    print(format_table([(out.parent.name, result)]))
    if test_data is not None:
        tested = json.loads(out.read_text())["test_data"]
        print(f"test set: {tested['label']} ({tested['n']} images)")
    if shift:
        print(format_shift_summary(json.loads(out.read_text())))
    print(f"eval.json: {out}")
    return 0


register_command(
    "eval",
    add_arguments,
    run,
    help="evaluate robustness of a trained run",
    description="Clean accuracy, PGD (CE), PGD (CW margin) and AutoAttack on the test set; "
    "the threat model is the run's own unless changed here (changes are recorded).",
)
