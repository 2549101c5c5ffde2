"""Ablations of AFA against PGD-AT and TRADES at one budget of adversarial epochs.

Every variant is a shipped recipe plus ``key=value`` overrides, so each row is exactly
reproducible with ``afa train RECIPE k=v ...`` (the command is stored with each result).
A run is trained with :func:`afa.training.plan.train_run` into ``--runs-dir``, its
``best.pt`` (selected by held-out PGD in the last stage) is reloaded with
:func:`load_trained` and evaluated on the dataset's test split:

* clean accuracy;
* the robust accuracy of the suite's attack chain (``--attacks`` overrides it), worst case
  per example, through :func:`afa.evaluation.robust.evaluate` (sanity checks off):
  ``digits``: APGD-CE then APGD-T (9 targets) on the points still robust, the two gradient
  attacks of AutoAttack standard (FAB-T and Square left out for cost), on the first 200
  test images; ``cifar5k``: PGD-20 (CE) on the whole carved-out test split;
* for each attack, its own column (cumulative over the attacks before it) in the JSON.

The budget column is :func:`afa.runs.adversarial_epochs`: epochs that craft
adversaries (a clean linear probe costs none; ``linear-adv`` and ``finetune`` do). The
suites are built so every adversarial method has the same budget; the script warns when
they do not.

For a contrastive pre-training stage the final epoch's ``train/cos_gap`` and
``train/loss_over_chance`` and whether the loop raised ``collapse_warning`` are kept.

Run (sequential, ``--threads 1``: on a shared 2-core CPU one thread was 3-8x faster per
step than two for the small CNN). Each finished run is cached in its run directory as
``ablation.json`` and reused when the resolved config and eval settings match, so an
interrupted suite continues where it stopped; ``--cached-only`` summarises without training:

    python benchmarks/ablation.py --suite digits --seeds 0 1 \\
        --out benchmarks/results/ablation-digits.json
    python benchmarks/ablation.py --suite digits-10ep --seeds 0 1 \\
        --out benchmarks/results/ablation-digits-10ep.json
    python benchmarks/ablation.py --suite cifar5k --data /work/shared/data/cifar10-5k-train.npz \\
        --seeds 0 --out benchmarks/results/collapse-cifar5k.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from afa.config import to_dict  # noqa: E402
from afa.data import load_splits  # noqa: E402
from afa.evaluation import EvalSettings  # noqa: E402
from afa.evaluation.robust import evaluate  # noqa: E402
from afa.methods import METHODS  # noqa: E402
from afa.runs import RunConfig, adversarial_epochs, load_run_config, load_trained  # noqa: E402
from afa.training.plan import train_run  # noqa: E402

CONFIGS = SRC / "afa" / "configs"
log = logging.getLogger("ablation")


@dataclass(frozen=True)
class Variant:
    """One row of a suite: a recipe (file name in ``src/afa/configs`` or a path) + overrides."""

    name: str
    recipe: str
    overrides: tuple[str, ...] = ()
    note: str = ""

    @property
    def recipe_path(self) -> Path:
        p = Path(self.recipe)
        return p if p.is_file() else CONFIGS / self.recipe


@dataclass(frozen=True)
class Suite:
    """Variants sharing ``common`` overrides (applied first) and default eval settings."""

    name: str
    variants: tuple[Variant, ...]
    common: tuple[str, ...] = ()
    attacks: tuple[str, ...] = ("apgd-ce", "apgd-t")
    n_eval: int | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ suites


def digits_suite(data: str | None = None, epochs: int = 20) -> Suite:
    """The quickstart recipes (small CNN, Linf eps 0.2, PGD-10) at ``epochs`` adversarial epochs.

    End-to-end methods train ``epochs``; AFA pre-trains ``epochs`` + a clean linear probe of
    10 epochs (0 adversarial), or pre-trains 3/4 of ``epochs`` + 1/4 adversarial stage 2.
    """
    pre = round(epochs * 3 / 4)
    # fine-tuning starts from a fresh (random) head: at lr 0.01 a few epochs leave it
    # untrained (measured at 10 epochs: 7 + 3 gave 44-66% clean), so the 20-epoch budget
    # fine-tunes at the pre-training lr
    ft_lr = 0.01 if epochs < 20 else 0.05
    ft = (f"train.epochs={pre}", f"classifier.epochs={epochs - pre}")
    v = [
        Variant("pgd-at", "digits-pgd-at.yaml"),
        Variant("trades", "digits-trades.yaml"),
        Variant(
            "afa neg +linear", "digits-afa.yaml", note=f"pretrain {epochs} + linear 10 (clean)"
        ),
        Variant("afa supcon +linear", "digits-afa.yaml", ("method.denominator=supcon",)),
        Variant("afa neg anchors=all +linear", "digits-afa.yaml", ("method.anchors=all",)),
        Variant(
            "afa neg +linear-adv",
            "digits-afa.yaml",
            (*ft, "classifier.protocol=linear-adv"),
            note=f"pretrain {pre} + linear-adv {epochs - pre}",
        ),
        Variant(
            "afa neg +finetune(trades)",
            "digits-afa.yaml",
            (
                *ft,
                "classifier.protocol=finetune",
                "classifier.finetune_method=trades",
                f"classifier.optimizer.lr={ft_lr}",
                "classifier.optimizer.weight_decay=5.0e-4",
            ),
            note=f"pretrain {pre} + TRADES finetune {epochs - pre} (lr {ft_lr}, fresh head)",
        ),
        Variant("afa-trades separate", "digits-afa-trades.yaml"),
        Variant("afa-trades shared", "digits-afa-trades.yaml", ("method.shared_adversary=true",)),
    ]
    return Suite(
        "digits" if epochs == 20 else f"digits-{epochs}ep",
        tuple(v),
        common=(f"train.epochs={epochs}",),
        attacks=("apgd-ce", "apgd-t"),
        n_eval=200,
        description=f"scikit-learn digits (8x8), small CNN (width 32), Linf eps 0.2, PGD-10 "
        f"training (step 0.05), {epochs} adversarial epochs per method, SGD 0.05 cosine, "
        f"batch 128; test: the first 200 images of the fixed 25% split",
    )


def cifar5k_suite(data: str | None = None) -> Suite:
    """The collapse study: 5,085 CIFAR-10 images, a small CNN, Linf 8/255."""
    if data is None:
        raise SystemExit("--suite cifar5k needs --data PATH (an npz with x_train/y_train)")
    epochs = 10
    common = (
        "data.name=npz",
        f"data.path={data}",
        "data.val_size=0.1",
        "data.augment=crop-flip",
        "model.name=cnn",
        "model.options={width: 16}",
        "threat.eps=8/255",
        "threat.step_size=2/255",
        "threat.steps=5",
        f"train.epochs={epochs}",
        "train.val_examples=200",
        "train.eval_every=5",
        "train.optimizer={name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4, nesterov: true}",
        "train.schedule={name: cosine, warmup_epochs: 1}",
        "eval.attacks=[pgd]",
    )
    afa = "digits-afa.yaml"
    # in priority order: the suite may be stopped early (the cache keeps finished runs)
    v = [
        Variant("pgd-at", "digits-pgd-at.yaml"),
        Variant("afa baseline", afa),
        Variant("supcon (clean)", afa, ("method={name: supcon}",), note="0 adversarial epochs"),
        Variant("afa ce 1 joint", afa, ("method.lambda_ce=1.0", "method.ce_detach=false")),
        Variant("afa warmup5", afa, ("method.eps_warmup_epochs=5",)),
        Variant("afa clean-anchor 1", afa, ("method.clean_anchor_weight=1.0",)),
        Variant("trades", "digits-trades.yaml"),
        Variant("afa tau 0.5", afa, ("method.temperature=0.5",)),
        Variant("afa head none", afa, ("method.head=none",)),
        Variant(
            "afa ce 1 joint +linear-adv",
            afa,
            (
                "method.lambda_ce=1.0",
                "method.ce_detach=false",
                f"train.epochs={epochs - 3}",
                "classifier.epochs=3",
                "classifier.protocol=linear-adv",
            ),
            note=f"pretrain {epochs - 3} + linear-adv 3 (same adversarial budget)",
        ),
        Variant(
            "afa attack ce +ce joint",
            afa,
            ("method.attack_loss=ce", "method.lambda_ce=1.0", "method.ce_detach=false"),
        ),
        Variant(
            "afa warmup5 +clean-anchor +ce joint",
            afa,
            (
                "method.eps_warmup_epochs=5",
                "method.clean_anchor_weight=1.0",
                "method.lambda_ce=1.0",
                "method.ce_detach=false",
            ),
        ),
        Variant("afa ce 1 detach", afa, ("method.lambda_ce=1.0", "method.ce_detach=true")),
        Variant("afa adv_views 2", afa, ("method.adv_views=2",)),
    ]
    return Suite(
        "cifar5k",
        tuple(v),
        common=common,
        attacks=("pgd",),
        description=f"CIFAR-10 5k subset ({data}; fixed 10% test carved out (509 images), "
        f"10% of the rest for validation (first 200 used, every 5 epochs)), small CNN width 16 "
        f"(64 features), crop+flip, Linf 8/255, PGD-5 (step 2/255) training, {epochs} epochs "
        f"SGD lr 0.05 cosine, stage 2 linear probe 10 epochs (clean, lr 0.1)",
    )


SUITES = {
    "digits": digits_suite,
    "digits-10ep": lambda data=None: digits_suite(data, epochs=10),
    "cifar5k": cifar5k_suite,
}


# ------------------------------------------------------------------------------ running


def resolve(
    suite: Suite, variant: Variant, seed: int, runs_dir: Path, extra: Sequence[str]
) -> RunConfig:
    """The variant's run config for ``seed`` (recipe -> common -> variant -> seed/out)."""
    return load_run_config(
        variant.recipe_path, command_overrides(suite, variant, seed, runs_dir, extra)
    )


def command_overrides(
    suite: Suite, variant: Variant, seed: int, runs_dir: Path, extra: Sequence[str]
) -> list[str]:
    """All overrides of one run, in the order they are applied."""
    return [
        *suite.common,
        *variant.overrides,
        *extra,
        f"train.seed={seed}",
        f"out_dir={runs_dir}",
        f"name={slug(variant.name)}-s{seed}",
        "device=cpu",
    ]


def slug(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in name.lower())
    return "-".join(p for p in keep.split("-") if p)


def shell_command(variant: Variant, overrides: Sequence[str]) -> str:
    """``afa train`` command line reproducing a run."""
    quoted = [f"'{o}'" if any(c in o for c in " {}[]") else o for o in overrides]
    return " ".join(
        [
            "afa",
            "train",
            str(variant.recipe_path.relative_to(SRC.parent))
            if variant.recipe_path.is_relative_to(SRC.parent)
            else variant.recipe,
            *quoted,
        ]
    )


def contrastive_summary(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Last pre-training epoch's collapse indicators and whether a warning fired."""
    pre = [r for r in history if "train/cos_gap" in r and r.get("stage_index", 0) == 0]
    if not pre:
        return {}
    last = pre[-1]
    return {
        "cos_gap": last.get("train/cos_gap"),
        "feat_cos_gap": last.get("train/feat_cos_gap"),
        "cos_same": last.get("train/cos_same"),
        "cos_diff": last.get("train/cos_diff"),
        "loss_over_chance": last.get("train/loss_over_chance"),
        "collapse_warning": any(r.get("collapse_warning", False) for r in pre),
        "cos_gap_by_epoch": [round(float(r["train/cos_gap"]), 4) for r in pre],
        "loss_over_chance_by_epoch": [
            round(float(r.get("train/loss_over_chance", float("nan"))), 4) for r in pre
        ],
    }


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_one(
    suite: Suite,
    variant: Variant,
    seed: int,
    runs_dir: Path,
    *,
    attacks: Sequence[str],
    n_eval: int | None,
    extra: Sequence[str] = (),
    rerun: bool = False,
    cached_only: bool = False,
) -> dict[str, Any] | None:
    """Train (or reuse) and evaluate one (variant, seed); the row is cached in the run dir.

    With ``cached_only`` a run without a matching cached row is skipped (None).
    """
    overrides = command_overrides(suite, variant, seed, runs_dir, extra)
    cfg = load_run_config(variant.recipe_path, overrides)
    key = {"config": to_dict(cfg), "attacks": list(attacks), "n_eval": n_eval}
    cache = cfg.run_dir / "ablation.json"
    if cache.is_file() and not rerun:
        row = json.loads(cache.read_text())
        if row.get("key") == json.loads(json.dumps(key)):
            log.info("%s seed %d: cached", variant.name, seed)
            return row
    if cached_only:
        log.info("%s seed %d: no cached result, skipped (--cached-only)", variant.name, seed)
        return None
    if cfg.run_dir.exists():
        for name in ("last.pt", "best.pt", "metrics.jsonl"):
            (cfg.run_dir / name).unlink(missing_ok=True)
    splits = load_splits(cfg.data)
    t0 = time.perf_counter()
    state = train_run(cfg, splits=splits)
    train_s = time.perf_counter() - t0
    model, _, _ = load_trained(cfg.run_dir, which="best", ema=None)
    x = torch.from_numpy(splits.test.images[:])
    y = torch.from_numpy(splits.test.labels[:])
    t1 = time.perf_counter()
    result = evaluate(
        model,
        x,
        y,
        cfg.threat,
        attacks=list(attacks),
        n_examples=n_eval,
        settings=EvalSettings(batch_size=256, seed=0),
        device="cpu",
        sanity=False,
    )
    eval_s = time.perf_counter() - t1
    history = read_history(cfg.run_dir) or list(state.history)
    row = {
        "variant": variant.name,
        "seed": seed,
        "recipe": variant.recipe,
        "overrides": list(variant.overrides),
        "note": variant.note,
        "command": shell_command(variant, overrides),
        "method": cfg.method_name,
        "adv_epochs": adversarial_epochs(cfg),
        "total_epochs": cfg.train.epochs + (cfg.classifier.epochs if cfg.classifier else 0),
        "clean_acc": result.clean_acc,
        "robust_acc": result.robust_acc,
        "per_attack": {c: result.acc(c) for c in result.columns[1:]},
        "n_eval": result.n_examples,
        "best": state.best,
        "train_s": train_s,
        "eval_s": eval_s,
        **contrastive_summary(history),
        "key": key,
    }
    cache.write_text(json.dumps(row, indent=1, default=float))
    return row


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, s


def summarize(rows: Sequence[dict[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    """Per variant: budget, clean/robust mean and std over seeds, collapse indicators."""
    out = []
    for name in order:
        rs = [r for r in rows if r["variant"] == name]
        if not rs:
            continue
        cm, cs = mean_std([100 * r["clean_acc"] for r in rs])
        rm, rsd = mean_std([100 * r["robust_acc"] for r in rs])
        s = {
            "variant": name,
            "adv_epochs": sorted({r["adv_epochs"] for r in rs}),
            "seeds": [r["seed"] for r in rs],
            "clean_mean": cm,
            "clean_std": cs,
            "robust_mean": rm,
            "robust_std": rsd,
            "train_s_mean": statistics.fmean(r["train_s"] for r in rs),
            "command": rs[0]["command"],
        }
        if any("cos_gap" in r for r in rs):
            s["cos_gap"] = [r.get("cos_gap") for r in rs]
            s["feat_cos_gap"] = [r.get("feat_cos_gap") for r in rs]
            s["loss_over_chance"] = [r.get("loss_over_chance") for r in rs]
            s["collapse_warning"] = [r.get("collapse_warning") for r in rs]
        out.append(s)
    return out


def markdown(summary: Sequence[dict[str, Any]], robust_label: str) -> str:
    def fmt(x: float | None, d: int = 3) -> str:
        return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"

    lines = [
        f"| variant | adv epochs | clean % (mean ± std) | {robust_label} % (mean ± std) | seeds "
        "| final cos_gap (z) | feat cos_gap (g) | loss/chance | collapse warning | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        gaps = " / ".join(fmt(g) for g in s.get("cos_gap", [])) or "–"
        fgaps = " / ".join(fmt(g) for g in s.get("feat_cos_gap", [])) or "–"
        loc = " / ".join(fmt(g) for g in s.get("loss_over_chance", [])) or "–"
        warn = " / ".join("yes" if w else "no" for w in s.get("collapse_warning", [])) or "–"
        lines.append(
            f"| {s['variant']} | {','.join(map(str, s['adv_epochs']))} "
            f"| {s['clean_mean']:.1f} ± {s['clean_std']:.1f} "
            f"| {s['robust_mean']:.1f} ± {s['robust_std']:.1f} | {len(s['seeds'])} "
            f"| {gaps} | {fgaps} | {loc} | {warn} | {s['train_s_mean']:.0f} |"
        )
    return "\n".join(lines)


def robust_label(attacks: Sequence[str], pgd_steps: int = 20) -> str:
    names = {
        "pgd": f"PGD-{pgd_steps}",
        "cw": "CW",
        "autoattack": "AutoAttack (standard)",
        "apgd-ce": "APGD-CE",
        "apgd-t": "APGD-T",
    }
    return " + ".join(names.get(a, a) for a in attacks)


def check_budget(summary: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> list[str]:
    """Warnings when adversarial methods of a suite differ in adversarial epochs."""
    budgets = {r["adv_epochs"] for r in rows if not METHODS.get(r["method"]).clean_training}
    if len(budgets) > 1:
        return [f"adversarial methods differ in adversarial epochs: {sorted(budgets)}"]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", choices=sorted(SUITES), required=True)
    p.add_argument("--data", default=None, help="npz path (cifar5k)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="*", default=None, help="only these variant names")
    p.add_argument("--attacks", nargs="+", default=None, help="evaluate() attack names")
    p.add_argument("--n-eval", type=int, default=None, help="first N test images only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs-dir", default="runs/ablation")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="key=value",
        help="extra overrides for every run (after the variant's)",
    )
    p.add_argument("--rerun", action="store_true", help="ignore cached results")
    p.add_argument(
        "--cached-only",
        action="store_true",
        help="train nothing: summarise the runs already finished",
    )
    p.add_argument("--out", default=None, help="JSON output; markdown beside it (.md)")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("afa").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    suite = SUITES[args.suite](args.data)
    attacks = tuple(args.attacks or suite.attacks)
    variants = [v for v in suite.variants if args.variants is None or v.name in args.variants]
    if args.variants is not None and len(variants) != len(args.variants):
        known = [v.name for v in suite.variants]
        raise SystemExit(f"--variants: unknown {set(args.variants) - set(known)}; known {known}")
    runs_dir = Path(args.runs_dir) / suite.name
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for variant in variants:
        for seed in args.seeds:
            row = run_one(
                suite,
                variant,
                seed,
                runs_dir,
                attacks=attacks,
                n_eval=args.n_eval or suite.n_eval,
                extra=args.set,
                rerun=args.rerun,
                cached_only=args.cached_only,
            )
            if row is None:
                continue
            log.info(
                "%s seed %d: adv %d, clean %.1f, robust %.1f, cos_gap %s (%.0f s)",
                variant.name,
                seed,
                row["adv_epochs"],
                100 * row["clean_acc"],
                100 * row["robust_acc"],
                row.get("cos_gap"),
                row["train_s"] + row["eval_s"],
            )
            rows.append(row)
    summary = summarize(rows, [v.name for v in variants])
    label = robust_label(attacks)
    table = markdown(summary, label)
    warnings = check_budget(summary, rows)
    print(table)
    for w in warnings:
        print("WARNING:", w)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "suite": suite.name,
            "description": suite.description,
            "robust_metric": label + " (worst case per example, evaluate(); sanity off)",
            "attacks": list(attacks),
            "seeds": args.seeds,
            "threads": args.threads,
            "common_overrides": list(suite.common) + list(args.set),
            "summary": summary,
            "runs": [{k: v for k, v in r.items() if k != "key"} for r in rows],
            "warnings": warnings,
            "wall_s": time.perf_counter() - t0,
            "environment": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
            },
        }
        out.write_text(json.dumps(record, indent=1, default=float))
        out.with_suffix(".md").write_text(
            f"# Ablation: {suite.name}\n\n{suite.description}\n\nRobust: {label}.\n\n{table}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
