"""Does AFA help at GPU scale? PGD-AT, TRADES and afa-trades on CIFAR-10, same epochs, AutoAttack.

One run of about 9 minutes on one H100 or H200, data decoding included
(``benchmarks/gpu_evidence.md`` says how to start it with the device tool in one call):

1. data: the CIFAR-10 JPEG copy (``train/<class>/NNNN.jpg``, 50,000 images) decoded once
   into ``imagefolder``'s cache, carved as ``cifar_contrastive.py`` carves it (its
   ``data_overrides``): 5,000 test and 1,000 validation images held out of train, the
   other 44,000 trained on;
2. probe (unless ``--epochs``): ``bench_training_step.py`` times a few steps of each method
   as it will train (ResNet-18, batch 128, bf16, channels_last, PGD-5, each recipe's
   method options), which gives a predicted epoch time per method (x ``--safety``, 1.15,
   for what the loop adds: loading, augmentation, logging, checkpoints);
3. epochs: the most that fit the budget (``--budget-s``, 540 s) once data, probe, a fixed
   cost per row and an AutoAttack evaluation per row (``--eval-s``) are set aside, at least
   2 (the harness needs 2), at most ``--max-epochs``; the SAME count for every method;
4. rows, through ``cifar_contrastive.py`` (its ``ingredients`` rows ``trades``,
   ``afa-trades``, ``pgd-at``: each recipe with Linf 8/255, PGD-5 of step 2/255, validation
   on the 1,000 validation images every epoch, the best checkpoint by validation), run in
   that order (afa-trades against TRADES first), each trained and then evaluated on the
   first ``--n`` (1,000) test images, class by class in turn: clean accuracy and AutoAttack
   (standard), with the harness's gradient-masking sanity checks. Before each row after
   the first, the prediction is corrected by what the rows before it took; a row that would
   end past ``--deadline-s`` is skipped and says so;
5. one table, ``gpu-evidence.md`` and ``gpu-evidence.json`` in ``--out``, rewritten after
   every row (a run stopped from outside leaves the rows it finished), beside the
   harness's own ``rows.json`` / ``rows.md`` (each row's exact ``afa train`` command) and
   ``probe.json``.

``--smoke`` runs the same steps on the CPU at the harness's ``--tiny`` sizes (ResNet-18 of
width 4, batch 32, PGD-1, 2 epochs, a 20% test split) and AutoAttack's APGD-CE alone on
``--n`` (16) images (the same evaluation path through pyautoattack; the standard version
takes minutes on a CPU even there): ``tests/unit/test_gpu_evidence_smoke.py`` runs it on a
generated tarball.

    python benchmarks/gpu_evidence.py --data cifar10-jpeg-train.tar.gz --out OUT
    python benchmarks/gpu_evidence.py --smoke --data tiny.tar.gz --out OUT --budget-s 120
    python benchmarks/gpu_evidence.py slim-wheel .gpu-data/pyautoattack-0.2.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import platform
import sys
import tempfile
import time
import traceback
import zipfile
from base64 import urlsafe_b64encode
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import bench_training_step as bench  # noqa: E402
import cifar_contrastive as cc  # noqa: E402  (puts src/ on sys.path)

from afa._io import atomic_write_text, read_jsonl, write_json  # noqa: E402
from afa.data import load_splits  # noqa: E402
from afa.runs import load_run_config  # noqa: E402

log = logging.getLogger("gpu_evidence")

#: the table's order, and the order the rows run in (afa-trades against TRADES first:
#: afa-trades is TRADES plus the AFA term, so that pair isolates the term)
METHODS = ("pgd-at", "trades", "afa-trades")
RUN_ORDER = ("trades", "afa-trades", "pgd-at")
EPOCH_IMAGES = 50_000  # bench_training_step.py's epoch_s is per 50,000 images
#: Seconds per epoch of 44,000 images on one H100 (ResNet-18, batch 128, bf16,
#: channels_last, PGD-5, validation included) used only when the probe fails: guesses from
#: a clean epoch of about 4 s and the CPU step ratios (PGD-5 AT 4.3x clean, TRADES 1.3x
#: PGD-AT, afa-trades with the recipe's one AFA step 1.35x TRADES), not measured on a GPU.
FALLBACK_EPOCH_S = {"trades": 26.0, "afa-trades": 35.0, "pgd-at": 20.0}


@dataclass(frozen=True)
class Scale:
    """What the rows train: the GPU protocol or the CPU smoke test's tiny one."""

    model: str
    width: int
    batch_size: int
    attack_steps: int
    device: str
    extra: tuple[str, ...]  # harness options
    bench: tuple[str, ...]  # probe options


GPU = Scale(
    "resnet18",
    64,
    128,
    5,
    "cuda",
    ("--set", "train.precision=bf16", "train.channels_last=true"),
    ("--warmup", "2", "--steps", "3"),
)
SMOKE = Scale(
    "resnet18",
    4,
    32,
    1,
    "cpu",
    # the sanity checks' PGD at 2 steps (20 by default): the CPU is the smoke test's limit
    (
        "--tiny",
        "--threads",
        "1",
        "--set",
        "train.precision=bf16",
        "train.channels_last=true",
        "eval.pgd_steps=2",
    ),
    ("--warmup", "0", "--steps", "1", "--threads", "1"),
)


# ------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class Plan:
    """The epoch count and the figures it came from (seconds)."""

    epochs: int
    rule: str
    epoch_s: dict[str, float]  # predicted seconds per epoch, validation included
    row_fixed_s: float
    eval_s: float
    available_s: float | None
    fits: int | None  # the epochs the budget fits (before the clamp)


def choose_epochs(
    epoch_s: dict[str, float],
    *,
    budget_s: float,
    elapsed_s: float,
    eval_s: float,
    row_fixed_s: float,
    margin_s: float,
    min_epochs: int,
    max_epochs: int,
) -> Plan:
    """The most epochs every method can train within the budget, the same for all.

    What is left of ``budget_s`` after ``elapsed_s``, the margin and, per row, a fixed
    cost and one evaluation, divided by the sum of the methods' epoch times; at least
    ``min_epochs`` (then the plan says it does not fit), at most ``max_epochs``.
    """
    rows = len(epoch_s)
    available = budget_s - elapsed_s - margin_s - rows * (row_fixed_s + eval_s)
    per_epoch = sum(epoch_s.values())
    fits = math.floor(available / per_epoch) if per_epoch > 0 else max_epochs
    epochs = max(min_epochs, min(max_epochs, fits))
    if fits < min_epochs:
        rule = (
            f"{min_epochs} (the minimum): the budget fits {max(fits, 0)} epochs of all "
            f"{rows} methods ({available:.0f} s left for training, {per_epoch:.0f} s per "
            "epoch of all); the rows may end past the budget"
        )
    elif fits > max_epochs:
        rule = f"{max_epochs} (--max-epochs); the budget fits {fits}"
    else:
        rule = (
            f"{epochs}: {available:.0f} s left for training / {per_epoch:.0f} s per epoch of "
            f"all {rows} methods"
        )
    return Plan(epochs, rule, dict(epoch_s), row_fixed_s, eval_s, available, fits)


def row_fits(
    predicted_train_s: float,
    *,
    correction: float,
    row_fixed_s: float,
    eval_s: float,
    elapsed_s: float,
    deadline_s: float,
) -> tuple[bool, float]:
    """Whether a row predicted at ``predicted_train_s`` (times the correction measured on
    the rows before it) ends before the deadline; and its projected seconds."""
    projected = predicted_train_s * correction + row_fixed_s + eval_s
    return elapsed_s + projected <= deadline_s, projected


# ------------------------------------------------------------------------------ steps


def probe_entry(name: str, method: dict[str, Any]) -> str:
    """``bench_training_step.py``'s entry for a method with a recipe's options: the options
    that differ from the method's defaults, ``afa-trades:afa_steps=1``."""
    defaults = dataclasses.asdict(bench.method_class(name).Config())
    parts = [name]
    for key, value in method.items():
        if key == "name" or key not in defaults:
            continue
        text = json.dumps(value)  # JSON values are YAML values
        if text != json.dumps(defaults[key]) and ":" not in text:
            parts.append(f"{key}={text}")
    return ":".join(parts)


def probe(
    scale: Scale, runs: dict[str, cc.Run], n_train: int, n_val: int, out: Path
) -> dict[str, Any]:
    """Predicted seconds per epoch of each method: a few timed steps of each, times the
    steps of an epoch, plus validation (PGD on ``n_val`` images, about a PGD-AT step per
    batch)."""
    entries = {m: probe_entry(m, runs[m].cfg.method) for m in RUN_ORDER}
    argv = [
        "--device",
        scale.device,
        "--model",
        scale.model,
        "--width",
        str(scale.width),
        "--data",
        "cifar",
        "--batch-size",
        str(scale.batch_size),
        "--precision",
        "bf16",
        "--channels-last",
        "--attack-steps",
        str(scale.attack_steps),
        "--min-sample-time",
        "0",
        "--no-memory",
        "--methods",
        ",".join(entries.values()),
        "--out",
        str(out),
        *scale.bench,
    ]
    t0 = time.perf_counter()
    result = bench.main(argv)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    steps = result["methods"]
    val_s = math.ceil(n_val / scale.batch_size) * steps[entries["pgd-at"]]["step_s"]
    epoch_s = {
        m: steps[e]["epoch_s"] * (n_train // scale.batch_size * scale.batch_size) / EPOCH_IMAGES
        + val_s
        for m, e in entries.items()
    }
    return {
        "entries": entries,
        "step_s": {m: steps[e]["step_s"] for m, e in entries.items()},
        "validation_s": val_s,
        "epoch_s": epoch_s,
        "seconds": time.perf_counter() - t0,
        "command": "python benchmarks/bench_training_step.py " + " ".join(argv),
    }


def harness_argv(
    args: argparse.Namespace, scale: Scale, variant: str, epochs: int, work: Path
) -> list[str]:
    """``cifar_contrastive.py``'s arguments for one row (``--final``: sanity checks too)."""
    return [
        "--suite",
        "ingredients",
        "--variants",
        variant,
        "--epochs",
        str(epochs),
        "--model",
        scale.model,
        "--width",
        str(scale.width),
        "--batch-size",
        str(scale.batch_size),
        "--data",
        str(args.data),
        "--runs",
        str(work / "runs"),
        "--cache-dir",
        str(work / "cache"),
        "--out",
        str(args.out / "rows.json"),
        "--device",
        args.device or scale.device,
        "--n",
        str(args.n),
        "--final",
        "--attacks",
        args.attacks,
        *scale.extra,
    ]


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion ``p`` measured on ``n`` examples."""
    if n <= 0:
        return (0.0, 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def table_row(
    method: str, row: dict[str, Any], run_dir: Path, wall_s: float, predicted: float | None
) -> dict[str, Any]:
    """The summary's row of one method, from the harness's row and the run's metrics."""
    history = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    train_s = sum(float(r.get("time_s", 0.0)) for r in history)
    val_s = sum(float(r.get("val/time_s", 0.0)) for r in history)
    epochs = len(history)
    robust = row["robust_acc"]
    return {
        "method": method,
        "epochs": row["adv_epochs"],
        "clean_acc": row["clean_acc"],
        "attack": next(iter(row["per_attack"]), None),
        "robust_acc": robust,
        "robust_ci95": list(wilson(robust, row["n_eval"])) if robust is not None else None,
        "n_eval": row["n_eval"],
        "clean_examples": row.get("clean_examples"),
        "robust_examples": row.get("robust_examples"),
        "sanity_failed": row["sanity_failed"],
        "train_s": train_s,
        "validation_s": val_s,
        "epoch_s": (train_s + val_s) / epochs if epochs else None,
        "predicted_epoch_s": predicted,
        "eval_s": row["eval_s"],
        "wall_s": wall_s,
        "steps": row["steps"],
        "run": row["run"],
        "command": row["command"],
        "history": [
            {
                k: r[k]
                for k in (
                    "epoch",
                    "lr",
                    "time_s",
                    "val/time_s",
                    "train/loss",
                    "train/adv_acc",
                    "val/clean_acc",
                    "val/pgd_acc",
                )
                if k in r
            }
            for r in history
        ],
    }


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}" if x < 10 else f"{x:.0f}"


def comparisons(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """afa-trades minus each baseline, in points of clean and robust accuracy, with the
    half-width of each difference's paired 95% interval over the shared test images
    (``cifar_contrastive.paired_difference``; ``None`` without per-example results)."""
    by = {r["method"]: r for r in rows}
    out = []
    if "afa-trades" not in by:
        return out
    a = by["afa-trades"]
    for base in ("trades", "pgd-at"):
        if base in by and a["robust_acc"] is not None and by[base]["robust_acc"] is not None:
            b = by[base]
            half = {}
            for kind in ("robust", "clean"):
                diff = cc.paired_difference(
                    [{**a, "seed": 0}], [{**b, "seed": 0}], f"{kind}_examples"
                )
                half[kind] = None if diff is None else diff[1]
            out.append(
                {
                    "pair": f"afa-trades - {base}",
                    "robust_points": 100 * (a["robust_acc"] - b["robust_acc"]),
                    "robust_paired_ci95_points": half["robust"],
                    "clean_points": 100 * (a["clean_acc"] - b["clean_acc"]),
                    "clean_paired_ci95_points": half["clean"],
                }
            )
    return out


def plus_minus(half: float | None) -> str:
    return "" if half is None else f" (paired 95% ±{half:.1f})"


def markdown(s: dict[str, Any]) -> str:
    lines = [
        "# GPU evidence: PGD-AT, TRADES and afa-trades at the same epochs",
        "",
        f"**{s['header']}.** {s['setup']}",
        "",
        f"Device: {s['environment']['device_name']}; torch {s['environment']['torch']}; "
        f"epochs: {s['plan']['rule']}. Written by `benchmarks/gpu_evidence.py` "
        f"({s['mode']}); each row's `afa train` command is in `rows.json`.",
        "",
        f"| method | epochs | clean % | {s['attack']} % | 95% interval | n | s / epoch "
        "(predicted) | train + val s | eval s | sanity failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        ci = r["robust_ci95"]
        lines.append(
            f"| {r['method']} | {r['epochs']} | {pct(r['clean_acc'])} "
            f"| {pct(r['robust_acc'])} "
            f"| {'–' if ci is None else f'{100 * ci[0]:.1f}–{100 * ci[1]:.1f}'} "
            f"| {r['n_eval']:,} | {secs(r['epoch_s'])} ({secs(r['predicted_epoch_s'])}) "
            f"| {secs(r['train_s'] + r['validation_s'])} | {secs(r['eval_s'])} "
            f"| {', '.join(r['sanity_failed']) or '–'} |"
        )
    for sk in s["skipped"]:
        lines.append(
            f"| {sk['method']} | – | – | – | – | – | – | – | – | skipped: {sk['reason']} |"
        )
    lines.append("")
    for c in s["comparisons"]:
        lines.append(
            f"* {c['pair']}: {c['robust_points']:+.1f} {s['attack']} points"
            f"{plus_minus(c.get('robust_paired_ci95_points'))}, {c['clean_points']:+.1f} "
            f"clean points{plus_minus(c.get('clean_paired_ci95_points'))} (same test images)."
        )
    if s["comparisons"]:
        lines.append("")
    d = s["data"]
    lines += [
        f"Data: {d['train']:,} training, {d['val']:,} validation, {d['test']:,} test images, "
        f"decoded in {d['seconds']:.0f} s. Probe: {secs(s['probe'].get('seconds'))} s. "
        f"Total {s['wall_s']:.0f} s of a {s['budget_s']:.0f} s budget "
        f"(deadline {s['deadline_s']:.0f} s).",
        "",
    ]
    lines += [f"Warning: {w}" for w in s["warnings"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ wheel


def slim_wheel(path: Path, drop: str = "/examples/") -> Path:
    """Rewrite a wheel without the files under ``drop`` (pyautoattack's 42 MB of example
    models), its RECORD rewritten to match; the file keeps its name."""
    with zipfile.ZipFile(path) as z:
        items = [(i, z.read(i)) for i in z.infolist() if drop not in i.filename]
    record = next(i for i, _ in items if i.filename.endswith(".dist-info/RECORD"))
    lines = []
    for info, data in items:
        if info is record:
            lines.append(f"{info.filename},,")
            continue
        digest = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{info.filename},sha256={digest},{len(data)}")
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in items:
            z.writestr(info, "\n".join(lines) + "\n" if info is record else data)
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------ main


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="cifar10-jpeg-train.tar.gz")
    p.add_argument("--out", type=Path, required=True, help="the results folder (created)")
    p.add_argument("--work", type=Path, default=None, help="runs and cache (a temporary folder)")
    p.add_argument("--smoke", action="store_true", help="CPU smoke test at tiny sizes")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="decode, plan and print each row's afa train command; train nothing",
    )
    p.add_argument("--device", default=None, help="cuda (cpu with --smoke)")
    p.add_argument("--epochs", type=int, default=None, help="skip the probe: this many epochs")
    p.add_argument("--min-epochs", type=int, default=2)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--budget-s", type=float, default=540.0, help="the whole run, data included")
    p.add_argument(
        "--deadline-s", type=float, default=None, help="skip a row ending later (budget + 40)"
    )
    p.add_argument(
        "--eval-s", type=float, default=None, help="AutoAttack per row, predicted (75; smoke 20)"
    )
    p.add_argument(
        "--row-fixed-s", type=float, default=None, help="per row: build, warm-up (15; smoke 5)"
    )
    p.add_argument("--margin-s", type=float, default=15.0, help="kept for the summary")
    p.add_argument(
        "--safety", type=float, default=1.15, help="x the probe's epochs (the loop's overhead)"
    )
    p.add_argument("--n", type=int, default=None, help="test images evaluated (1000; smoke 16)")
    p.add_argument(
        "--attacks",
        default=None,
        help="evaluation attack (autoattack; smoke apgd-ce: AutoAttack standard takes minutes "
        "on a CPU even on 16 images)",
    )
    p.add_argument(
        "--started-at", type=float, default=None, help="epoch seconds the run began (the wrapper's)"
    )
    args = p.parse_args(argv)
    args.n = args.n or (16 if args.smoke else 1000)
    args.attacks = args.attacks or ("apgd-ce" if args.smoke else "autoattack")
    args.eval_s = args.eval_s if args.eval_s is not None else (20.0 if args.smoke else 75.0)
    args.row_fixed_s = (
        args.row_fixed_s if args.row_fixed_s is not None else (5.0 if args.smoke else 15.0)
    )
    args.deadline_s = args.deadline_s if args.deadline_s is not None else args.budget_s + 40
    if args.epochs is not None and args.epochs < 2:
        p.error("--epochs: at least 2 (the harness trains at least 2)")
    return args


def environment(device: str) -> dict[str, Any]:
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.machine()})",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "slim-wheel":
        for w in argv[1:]:
            print(f"{slim_wheel(Path(w))}: {Path(w).stat().st_size:,} bytes")
        return 0
    args = parse(argv)
    start = args.started_at if args.started_at is not None else time.time()

    def elapsed() -> float:
        return time.time() - start

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    scale = SMOKE if args.smoke else GPU
    device = args.device or scale.device
    if args.smoke:
        torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="afa-gpu-evidence-"))
    work.mkdir(parents=True, exist_ok=True)
    log.info("out %s, work %s, device %s, budget %.0f s", args.out, work, device, args.budget_s)

    # 1. the data, decoded once into the cache the rows read
    t0 = time.perf_counter()
    data = cc.data_overrides(str(args.data), str(work / "cache"))
    tail = cc.tiny_tail(data)[0] if args.smoke else []
    recipe = cc.SRC / "afa" / "configs" / "cifar10-pgd-at.yaml"
    splits = load_splits(load_run_config(recipe, [*data, *tail]).data)
    data_info = {
        "train": len(splits.train),
        "val": len(splits.val),
        "test": len(splits.test),
        "seconds": time.perf_counter() - t0,
    }
    log.info("data: %s", data_info)

    # the rows' resolved configs (the harness's own planning), for the probe's options
    b = cc.Budget(2, 1, 1, scale.batch_size, scale.model, scale.width, scale.attack_steps)
    suite = cc.ingredients_suite(b)
    planned = cc.plan_runs(
        suite, b, [0], work / "plan", data=data, tail=tail, device=device, tiny=args.smoke
    )
    runs = {r.variant.name: r for r in planned if r.variant.name in METHODS}

    # 2. probe, 3. epochs
    probe_info: dict[str, Any] = {}
    warnings: list[str] = []
    if args.epochs is None:
        try:
            probe_info = probe(
                scale, runs, data_info["train"], data_info["val"], work / "probe.json"
            )
        except Exception as exc:  # one shot on the device: plan with the guesses instead
            log.error("probe failed: %s\n%s", exc, traceback.format_exc())
            warnings.append(
                f"the probe failed ({type(exc).__name__}: {exc}); epochs planned "
                "from FALLBACK_EPOCH_S, guesses"
            )
            probe_info = {"error": str(exc), "epoch_s": dict(FALLBACK_EPOCH_S)}
        write_json(args.out / "probe.json", probe_info)
        plan = choose_epochs(
            {m: args.safety * v for m, v in probe_info["epoch_s"].items()},
            budget_s=args.budget_s,
            elapsed_s=elapsed(),
            eval_s=args.eval_s,
            row_fixed_s=args.row_fixed_s,
            margin_s=args.margin_s,
            min_epochs=args.min_epochs,
            max_epochs=args.max_epochs if not args.smoke else args.min_epochs,
        )
    else:
        plan = Plan(
            args.epochs, f"{args.epochs} (--epochs)", {}, args.row_fixed_s, args.eval_s, None, None
        )
    log.info("epochs: %s", plan.rule)
    if args.dry_run:
        for method in RUN_ORDER:
            cc.main([*harness_argv(args, scale, method, plan.epochs, work), "--dry-run"])
        return 0

    # 4. the rows
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    if plan.fits is not None and plan.fits < plan.epochs:
        warnings.append(f"the budget fits fewer epochs than {plan.epochs}: {plan.rule}")
    header = "CIFAR-10 (JPEG copy)"
    measured_train = predicted_train = 0.0
    measured_eval: list[float] = []

    def attack_label() -> str:
        names = {r["attack"] for r in rows if r["attack"]}
        return " / ".join(sorted(names)) or args.attacks

    def summary() -> dict[str, Any]:
        nonlocal header
        if (args.out / "rows.json").is_file():
            header = json.loads((args.out / "rows.json").read_text()).get("header", header)
        ordered = sorted(rows, key=lambda r: METHODS.index(r["method"]))
        epochs = {r["epochs"] for r in ordered}
        notes = list(warnings)
        if len(epochs) > 1:
            notes.append(f"the rows trained different epochs: {sorted(epochs)}")
        return {
            "mode": "cpu-smoke" if args.smoke else "gpu",
            "header": header,
            "setup": (
                f"{scale.model} width {scale.width}, batch {scale.batch_size}, bf16, "
                f"channels_last, Linf 8/255, PGD-{scale.attack_steps} (step 2/255) training, "
                f"{plan.epochs} epochs per method, each recipe's optimiser and schedule; "
                f"clean and {attack_label()} accuracy of the best checkpoint (held-out "
                f"validation PGD) on the first {args.n:,} test images"
            ),
            "attack": attack_label(),
            "environment": environment(device),
            "budget_s": args.budget_s,
            "deadline_s": args.deadline_s,
            "plan": dataclasses.asdict(plan),
            "probe": probe_info,
            "data": data_info,
            "rows": ordered,
            "skipped": skipped,
            "comparisons": comparisons(ordered),
            "warnings": notes,
            "wall_s": elapsed(),
        }

    def write() -> None:
        s = summary()
        write_json(args.out / "gpu-evidence.json", s)
        atomic_write_text(args.out / "gpu-evidence.md", markdown(s))

    failed = False
    for method in RUN_ORDER:
        predicted_epoch = plan.epoch_s.get(method)  # None with --epochs: no guard then
        # the first row always runs: the guard acts on what the rows before took
        if predicted_epoch is not None and predicted_train > 0:
            ok, projected = row_fits(
                plan.epochs * predicted_epoch,
                correction=measured_train / predicted_train,
                row_fixed_s=plan.row_fixed_s,
                eval_s=max(measured_eval) if measured_eval else plan.eval_s,
                elapsed_s=elapsed(),
                deadline_s=args.deadline_s,
            )
            if not ok:
                reason = (
                    f"projected {projected:.0f} s from {elapsed():.0f} s would end past the "
                    f"{args.deadline_s:.0f} s deadline"
                )
                log.warning("%s: skipped, %s", method, reason)
                skipped.append({"method": method, "reason": reason})
                write()
                continue
        t0 = time.perf_counter()
        try:
            rc = cc.main(harness_argv(args, scale, method, plan.epochs, work))
        except Exception as exc:  # the harness catches a run's failure; this is the rest
            log.error("%s: %s\n%s", method, exc, traceback.format_exc())
            rc = 1
        wall = time.perf_counter() - t0
        rows_json = args.out / "rows.json"
        record = json.loads(rows_json.read_text()) if rows_json.is_file() else {"runs": []}
        name = f"{cc.slug(method)}-{b.model_tag}-e{plan.epochs}-s0"
        row = next((r for r in record["runs"] if r["run"] == name), None)
        if rc != 0 or row is None:
            failed = True
            errors = [f["error"] for f in record.get("failed", []) if f["run"] == name]
            skipped.append({"method": method, "reason": f"failed: {'; '.join(errors) or rc}"})
            write()
            continue
        run_dir = work / "runs" / "adversarial" / name
        rows.append(table_row(method, row, run_dir, wall, predicted_epoch))
        if predicted_epoch is not None:
            measured_train += rows[-1]["train_s"] + rows[-1]["validation_s"]
            predicted_train += plan.epochs * predicted_epoch
        measured_eval.append(float(row["eval_s"]))
        write()
        log.info("%s: done in %.0f s (%.0f s elapsed)", method, wall, elapsed())
    write()
    print((args.out / "gpu-evidence.md").read_text())
    return 1 if failed or skipped else 0


if __name__ == "__main__":
    raise SystemExit(main())
