"""``afa train RECIPE [key=value ...] [--resume]``: train a run from a recipe."""

from __future__ import annotations

import argparse

from afa.cli.arguments import add_overrides
from afa.cli.checks import check_device, check_eval, check_output_dir, check_val_size
from afa.cli.commands import register_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="recipe path or shipped recipe name")
    add_overrides(parser)
    parser.add_argument("--resume", action="store_true", help="continue the run from its last.pt")


def run(args: argparse.Namespace) -> int:
    from afa.recipes import resolve_recipe
    from afa.runs import load_run_config
    from afa.training.plan import train_run

    cfg = load_run_config(resolve_recipe(args.config), args.overrides)
    check_device(cfg.device, "device")
    check_output_dir(cfg.run_dir, "out_dir/name")
    check_eval(cfg.eval)
    check_val_size(cfg.data.val_size)
    state = train_run(cfg, resume=args.resume)
    print(f"run directory: {state.run_dir}")
    return 0


register_command(
    "train",
    add_arguments,
    run,
    help="train a run from a recipe",
    description="Train from a YAML recipe (a path, or the name of a shipped recipe: "
    "see `afa recipes`), with key=value overrides such as train.epochs=5 threat.eps=8/255.",
)
