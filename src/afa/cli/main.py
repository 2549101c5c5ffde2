"""The ``afa`` command line: parses arguments and calls the library; no logic lives here.

User errors (bad config, missing file, bad checkpoint) print one line and exit with 2;
so do the file system's (a full disk, a read-only directory: the path and the reason).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path

from afa._io import check_file_name
from afa.cli.checks import (
    check_attacks,
    check_device,
    check_eval,
    check_output_dir,
    check_record_writable,
    check_run_dirs,
    check_val_size,
    parse_attack_options,
    positive_int,
)
from afa.config import parse_number
from afa.errors import UserError, os_error_line


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line, like every other user error (status 2)."""

    commands: dict[str, argparse.ArgumentParser]  # the top parser's, set by _parser

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _severities(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of 1..5, got {text!r}") from None
    if not values or any(v not in range(1, 6) for v in values):
        raise argparse.ArgumentTypeError(f"expected a comma list of 1..5, got {text!r}")
    return values


def _add_test_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--test-data",
        action="append",
        default=None,
        metavar="DATA",
        help="another test set (its test split), checked against the model and recorded: "
        "npz:FILE, imagefolder:DIR, cifar10:DIR, cifar10.1:DIR, ... or a data key=value "
        "(data.name=npz, test_image_key=images); repeat for more keys",
    )


def _test_data(args: argparse.Namespace) -> typing.Any:
    """The DataConfig of ``--test-data``, parsed before anything is loaded (None: the run's)."""
    if not args.test_data:
        return None
    from afa.data.testset import parse_test_data

    return parse_test_data(args.test_data)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="afa",
        description="Adversarial Feature Alignment and an honest adversarial-training toolkit.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op CPU threads (default: torch's; the quickstart uses 1 on CPU)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p.commands = sub.choices  # each command's parser, for its own error line

    t = sub.add_parser(
        "train",
        help="train a run from a recipe",
        description="Train from a YAML recipe (a path, or the name of a shipped recipe: "
        "see `afa recipes`), with key=value overrides such as train.epochs=5 threat.eps=8/255.",
    )
    t.add_argument("config", help="recipe path or shipped recipe name")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="dotted-key overrides")
    t.add_argument("--resume", action="store_true", help="continue the run from its last.pt")

    sub.add_parser("recipes", help="list the shipped recipes")

    e = sub.add_parser(
        "eval",
        help="evaluate robustness of a trained run",
        description="Clean accuracy, PGD (CE), PGD (CW margin) and AutoAttack on the test set; "
        "the threat model is the run's own unless changed here (changes are recorded).",
    )
    e.add_argument(
        "path",
        help="run directory, checkpoint file, or robustbench:NAME[@CHECKPOINT] (a published "
        "RobustBench CIFAR-10 Linf model; without @CHECKPOINT it is downloaded to "
        "models/cifar10/Linf/NAME.pt)",
    )
    e.add_argument("--which", choices=["best", "last"], default="best")
    e.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="first N test examples (default: the run's eval.n_examples, else all)",
    )
    e.add_argument("--batch-size", type=positive_int, default=None)
    e.add_argument(
        "--attacks", default=None, help="comma list of pgd,cw,autoattack (default: the run's)"
    )
    e.add_argument(
        "--eps", type=str, default=None, help="override eps (e.g. 8/255); recorded in eval.json"
    )
    e.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="steps of every PGD attack and of the sanity checks (default: the run's "
        "eval.pgd_steps / eval.cw_steps); recorded in eval.json",
    )
    e.add_argument(
        "--attack-option",
        action="append",
        default=None,
        metavar="ATTACK.KEY=VALUE",
        help="one setting of one attack (e.g. cw.steps=50), over the run's "
        "eval.attack_options; repeat for more; recorded in eval.json",
    )
    e.add_argument(
        "--step-size", type=str, default=None, help="override the PGD step size (e.g. 1/255)"
    )
    e.add_argument("--restarts", type=positive_int, default=None, help="override the PGD restarts")
    e.add_argument("--ema", choices=["auto", "yes", "no"], default="auto", help="use EMA weights")
    e.add_argument("--device", default="auto")
    e.add_argument("--seed", type=int, default=None)
    e.add_argument("--no-sanity", action="store_true", help="skip the gradient-masking checks")
    e.add_argument(
        "--shift",
        default=None,
        help="comma list of natural-shift test sets: cifar10.1, cifar10.1-v4 (CIFAR-10 runs)",
    )
    e.add_argument(
        "--shift-root", default=None, help="folder of the CIFAR-10.1 files (default: data.root)"
    )
    _add_test_data(e)
    e.add_argument(
        "--corruptions",
        nargs="?",
        const="generate",
        default=None,
        metavar="DIR",
        help="corruption accuracy per corruption and severity and its mean (CA): the official "
        "CIFAR-10-C / CIFAR-100-C files in DIR, or generated from the test set without DIR "
        "(put it after the run path)",
    )
    e.add_argument(
        "--corruption-names",
        default=None,
        help="comma list of corruptions (default: the benchmark's 15, those available)",
    )
    e.add_argument(
        "--severities", type=_severities, default=None, help="comma list of 1..5 (default: all)"
    )
    e.add_argument(
        "--data-root", default="data", help="robustbench: models: the directory holding CIFAR-10"
    )
    e.add_argument(
        "--out", default=None, help="robustbench: models: output directory (default runs/NAME)"
    )

    a = sub.add_parser(
        "analyze",
        help="feature-alignment analysis of a trained run",
        description="Alignment (centroid and kNN), feature geometry, input separation and "
        "local Lipschitzness; writes analysis.json and figures into the run directory.",
    )
    a.add_argument(
        "path",
        help="run directory, checkpoint file, or robustbench:NAME[@CHECKPOINT] (a published "
        "RobustBench CIFAR-10 Linf model; without @CHECKPOINT it is downloaded to "
        "models/cifar10/Linf/NAME.pt)",
    )
    a.add_argument("--which", choices=["best", "last"], default="best")
    a.add_argument("--k", type=positive_int, default=10, help="neighbours of the kNN alignment")
    a.add_argument(
        "--n-test",
        type=positive_int,
        default=None,
        help="first test examples analysed (default: the run's eval.n_examples)",
    )
    a.add_argument(
        "--n-train", type=positive_int, default=None, help="training examples for centroids"
    )
    a.add_argument("--device", default="auto")
    a.add_argument("--no-figures", action="store_true")
    _add_test_data(a)
    a.add_argument(
        "--data-root", default="data", help="robustbench: models: the directory holding CIFAR-10"
    )
    a.add_argument(
        "--out", default=None, help="robustbench: models: output directory (default runs/NAME)"
    )

    c = sub.add_parser("compare", help="one report (markdown + HTML) over several runs")
    c.add_argument("runs", nargs="+", help="run directories")
    c.add_argument("--out", default=None, help="report directory (default: the runs' parent)")
    c.add_argument("--title", default="afa report")

    x = sub.add_parser(
        "export",
        help="a run's eval.json as RobustBench's model_info JSON",
        description="Writes RUN/model_info/<dataset>/<Linf|L2>/<name>.json in RobustBench's "
        "format from RUN/eval.json (and RUN/config.yaml); the paper's fields (link, name, "
        "authors, venue, reported) are left empty and listed.",
    )
    x.add_argument("run", help="run directory holding eval.json")
    x.add_argument("--out", default=None, help="the JSON file to write instead")
    x.add_argument("--name", default=None, help="model ID of the file name (default: RUN's name)")

    f = sub.add_parser(
        "finetune",
        help="a pre-trained encoder under SLF / ALF / AFF, one table",
        description="Trains RUN's pre-trained encoder (method afa, supcon, acl or dynacl) "
        "under each protocol of the robust self-supervised benchmark into RUN-<protocol> "
        "(the protocol's defaults unless overridden, e.g. classifier.epochs=5), evaluates "
        "each and writes RUN/finetune.json and RUN/finetune.md; protocols already done "
        "are skipped, an interrupted one resumes.",
    )
    f.add_argument("run", help="the pre-training run directory")
    f.add_argument("overrides", nargs="*", metavar="key=value", help="for every protocol's run")
    f.add_argument("--protocols", default="slf,alf,aff", help="comma list (default slf,alf,aff)")
    f.add_argument(
        "--attacks", default=None, help="comma list of pgd,cw,autoattack (default: the run's)"
    )
    f.add_argument(
        "--n", type=positive_int, default=None, help="first N test examples (default: the run's)"
    )
    f.add_argument("--no-sanity", action="store_true", help="skip the gradient-masking checks")

    q = sub.add_parser(
        "quickstart",
        help="train every method on digits, evaluate, analyse, report",
        description="Trains standard, PGD-AT, TRADES, AFA and AFA+TRADES on scikit-learn's "
        "digits at one budget, evaluates each (clean, PGD, AutoAttack), analyses alignment "
        "and writes a comparison report.",
    )
    q.add_argument("--out", default="runs/quickstart", help="output directory")
    q.add_argument("--methods", default=None, help="comma list (default: all)")
    q.add_argument("--device", default="auto")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="smoke runs: adversarial epochs per method",
    )
    q.add_argument(
        "--eval-examples",
        type=positive_int,
        default=None,
        help="smoke runs: test examples evaluated",
    )
    q.add_argument(
        "--attacks", default=None, help="smoke runs: comma list (default pgd,cw,autoattack)"
    )
    q.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="methods run in this many processes of one thread each "
        "(default: 2 on a CPU with 2+ cores, 1 on a GPU)",
    )
    return p


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with ``key=value`` overrides accepted anywhere on the line.

    argparse reads a command's positionals in one run, so an override after an option
    (``afa train RECIPE --resume train.epochs=3``) comes back unrecognised: it is taken
    here, in its order, by every command that has overrides; anything else unrecognised is
    still refused, by the command's parser.
    """
    parser = typing.cast(_Parser, _parser())
    args, extra = parser.parse_known_args(argv)
    takes_overrides = isinstance(getattr(args, "overrides", None), list)
    unknown = [a for a in extra if not (takes_overrides and _is_override(a))]
    if unknown:
        command = parser.commands.get(getattr(args, "command", None) or "", parser)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if takes_overrides:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parse(argv)
    except SystemExit as exc:  # --help, or a bad option (one line already printed)
        return int(exc.code or 0)
    # Under torchrun only rank 0 reports progress; other ranks still print warnings.
    quiet_rank = int(os.environ.get("RANK", "0")) > 0
    logging.basicConfig(
        level=logging.WARNING if quiet_rank else logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.threads is not None:
        import torch

        if args.threads < 1:
            print(f"afa: error: --threads: expected >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        return _dispatch(args)
    except UserError as exc:
        print(f"afa: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only directory: the path and the reason
        print(f"afa: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("afa: interrupted (resume with `afa train ... --resume`)", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "train":
        from afa.recipes import resolve_recipe
        from afa.training.plan import load_run_config, train_run

        cfg = load_run_config(resolve_recipe(args.config), args.overrides)
        check_device(cfg.device, "device")
        check_output_dir(cfg.run_dir, "out_dir/name")
        check_eval(cfg.eval)
        check_val_size(cfg.data.val_size)
        state = train_run(cfg, resume=args.resume)
        print(f"run directory: {state.run_dir}")
        return 0
    if args.command == "recipes":
        from afa.recipes import list_recipes

        for name, summary in list_recipes():
            print(f"{name:28s} {summary}")
        return 0
    if args.command == "eval":
        from afa.evaluation import format_table
        from afa.evaluation.runs import evaluate_run

        check_device(args.device, "--device")
        check_record_writable(args.path, args.out, "eval.json")
        overrides = {}
        if args.eps is not None:
            overrides["eps"] = parse_number(args.eps, "--eps")
        if args.step_size is not None:
            overrides["step_size"] = parse_number(args.step_size, "--step-size")
            if not overrides["step_size"] > 0:  # 0 would leave every attack at its start
                raise UserError(f"--step-size: expected > 0, got {args.step_size!r}")
        if args.restarts is not None:
            overrides["restarts"] = args.restarts
        from afa.evaluation.shift import SEVERITIES, ShiftRequest, format_shift_summary

        shift = ShiftRequest(
            shift=tuple(args.shift.split(",")) if args.shift else (),
            shift_root=args.shift_root,
            corruptions=args.corruptions,
            corruption_names=tuple(args.corruption_names.split(","))
            if args.corruption_names
            else None,
            severities=args.severities or SEVERITIES,
        )
        settings = {
            "n_examples": args.n,
            "batch_size": args.batch_size,
            "attacks": args.attacks.split(",") if args.attacks is not None else None,
            "threat_overrides": overrides,
            "steps": args.steps,
            "attack_options": parse_attack_options(args.attack_option),
            "device": args.device,
            "seed": args.seed,
            "sanity": not args.no_sanity,
            "shift": shift,
            "test_data": _test_data(args),
        }
        if args.path.startswith("robustbench:"):
            from afa.evaluation.published import evaluate_published

            result, out = evaluate_published(
                args.path, out_dir=args.out, data_root=args.data_root, **settings
            )
        else:
            ema = {"auto": None, "yes": True, "no": False}[args.ema]
            result, out = evaluate_run(Path(args.path), which=args.which, ema=ema, **settings)
        print(format_table([(out.parent.name, result)]))
        if settings["test_data"] is not None:
            tested = json.loads(out.read_text())["test_data"]
            print(f"test set: {tested['label']} ({tested['n']} images)")
        if shift:
            print(format_shift_summary(json.loads(out.read_text())))
        print(f"eval.json: {out}")
        return 0
    if args.command == "analyze":
        from afa.analysis.runs import analyze_run

        check_device(args.device, "--device")
        check_record_writable(args.path, args.out, "analysis.json")
        settings = {
            "k": args.k,
            "n_test": args.n_test,
            "n_train": args.n_train,
            "device": args.device,
            "figures": not args.no_figures,
            "test_data": _test_data(args),
        }
        if args.path.startswith("robustbench:"):
            from afa.analysis.published import analyze_published

            analyze_published(args.path, out_dir=args.out, data_root=args.data_root, **settings)
        else:
            analyze_run(Path(args.path), which=args.which, **settings)
        return 0
    if args.command == "compare":
        from afa.report import compare

        runs = check_run_dirs(args.runs)
        out = check_output_dir(Path(args.out) if args.out else runs[0].parent, "--out")
        paths = compare(runs, out, title=args.title)
        print(f"report: {paths['html']}")
        return 0
    if args.command == "export":
        from afa.report.export import export_run

        if args.name is not None:
            check_file_name(args.name, "--name")
        path, _, empty, notes = export_run(Path(args.run), args.out, name=args.name)
        print(f"model_info: {path}")
        if empty:
            print(f"left empty (eval.json does not know them): {', '.join(empty)}")
        for note in notes:
            print(f"note: {note}")
        return 0
    if args.command == "finetune":
        from afa.finetune import finetune, parse_protocols

        attacks = args.attacks.split(",") if args.attacks else None
        if attacks is not None:
            check_attacks(attacks, "--attacks")
        result = finetune(
            Path(args.run),
            parse_protocols(args.protocols),
            overrides=args.overrides,
            attacks=attacks,
            n_examples=args.n,
            sanity=not args.no_sanity,
        )
        print(result.markdown, end="")
        print(f"table: {result.json_path} and {result.md_path}")
        return 0
    if args.command == "quickstart":
        from afa.quickstart import check_quickstart_args, quickstart

        methods = args.methods.split(",") if args.methods is not None else None
        attacks = args.attacks.split(",") if args.attacks is not None else None
        check_quickstart_args(
            methods=methods, epochs=args.epochs, eval_examples=args.eval_examples, attacks=attacks
        )
        check_device(args.device, "--device")
        check_output_dir(args.out, "--out")
        start = time.perf_counter()
        paths = quickstart(
            Path(args.out),
            methods=methods,
            device=args.device,
            seed=args.seed,
            epochs=args.epochs,
            eval_examples=args.eval_examples,
            attacks=attacks,
            workers=args.workers,
            # Tiny 8x8 models: one intra-op thread is as fast as two on an idle machine and
            # up to 10x faster on a busy one (benchmarks/README.md).
            threads=args.threads or 1,
        )
        # The methods table and the sanity checks; alignment and figures are in the report.
        print(Path(paths["md"]).read_text().split("\n## Feature alignment")[0].rstrip() + "\n")
        print(
            f"quickstart finished in {time.perf_counter() - start:.0f} s; report: {paths['html']}"
        )
        return 0
    raise AssertionError(args.command)  # argparse guarantees a known command


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
