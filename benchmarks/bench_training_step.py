"""Speed and peak memory of one training step of each method, and the cost of the attack.

One step is what ``afa.training.loop.fit`` does per batch: ``method(batch)`` under
autocast, ``backward`` of the loss, an SGD step (momentum 0.9, weight decay 5e-4) and
``zero_grad(set_to_none=True)``. The batch is synthetic (uniform images in [0, 1], random
labels of 10 classes) and stays on the device: data loading and augmentation are not
timed. Every method uses the default ``ThreatModel`` (Linf, eps 8/255, step 2/255) with
``--attack-steps`` PGD steps (10) and its default options (``afa``: 1 clean + 1
adversarial view, MLP head; ``afa-trades``: a TRADES and an AFA adversary per step).

Timing: each method takes ``--warmup`` untimed steps (``--compile`` compiles here), then
``--steps`` rounds; in every round each method, in rotating order, runs one timed sample
of ``reps`` back-to-back steps (``reps`` makes a sample last ``--min-sample-time``; 1 for
the slow methods). The step time is the median over rounds. Interleaving the methods
makes their ratios robust to load that drifts during the run (this machine is shared).

Figures:

* images/s = batch size / step time (samples of the batch, whatever the number of views);
  s/epoch = 50,000 / images/s (a CIFAR-sized epoch);
* ``x standard``, ``x pgd-at``: step time relative to those two methods; ``x trades``:
  the median over rounds of the per-round ratio to TRADES (method entries may carry
  options, ``afa-trades:afa_steps=1``, to time a method's variants);
* peak memory: growth of tensor memory during one (untimed) step above what was live
  before it (model, optimizer state and batch); see ``benchmarks/_common.py``;
* the ATTACK COST: t(PGD-k AT step) / ((k + 1) * t(standard step)), the median of the
  per-round ratios. A PGD-k AT step is k attack steps (forward + gradient with respect to
  the input only) and one training step; if attack steps cost as much as training steps
  the ratio is 1. The goal is < 0.9: attack steps build no weight gradients.

Against the reference implementations (``--methods reference``): ``ref-pgd-at`` and
``ref-trades`` are the same steps written the way robust_overfitting and the official
TRADES code compute them (``benchmarks/reference_steps.py`` says exactly how), and
``pgd-afa`` / ``pgd-torchattacks`` time the attack alone: ``afa.attacks.perturb`` and
torchattacks' ``PGD`` on the same model and batch (skipped, with a message, when
torchattacks is not importable). For each pair present the JSON's ``comparisons`` gives
t(afa) / t(reference), the median of the per-round ratios of the interleaved run.

Run:
    python benchmarks/bench_training_step.py --model cnn --data digits --batch-size 128
    python benchmarks/bench_training_step.py --threads 1 --methods reference
    python benchmarks/bench_training_step.py --model resnet18 --width 16 --data cifar \\
        --batch-size 64 --steps 3 --out results/step.json
    python benchmarks/bench_training_step.py --device cuda --model wrn-28-10 --data cifar \\
        --batch-size 128 --precision bf16 --channels-last --compile
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MiB,
    environment,
    markdown_table,
    median,
    peak_memory,
    reps_for,
    resolve_device,
    timed,
    warn_if_busy,
    write_json,
)
from reference_steps import pgd_at_step_reference, trades_step_reference  # noqa: E402

from afa.attacks import cross_entropy, perturb  # noqa: E402
from afa.attacks.threat import ThreatModel  # noqa: E402
from afa.config import from_dict  # noqa: E402
from afa.errors import UserError  # noqa: E402
from afa.methods.base import Batch, Method  # noqa: E402
from afa.models import create_model  # noqa: E402
from afa.training.precision import (  # noqa: E402
    autocast_context,
    check_precision,
    make_grad_scaler,
)

#: method name -> (module, class); imported lazily so one unfinished method spoils no other.
METHODS: dict[str, tuple[str, str]] = {
    "standard": ("afa.methods.standard", "Standard"),
    "pgd-at": ("afa.methods.pgd_at", "PGDAT"),
    "trades": ("afa.methods.trades", "TRADES"),
    "mart": ("afa.methods.mart", "MART"),
    "afa": ("afa.methods.afa", "AFAPretrain"),
    "afa-trades": ("afa.methods.afa_trades", "AFATrades"),
    "supcon": ("afa.methods.supcon", "SupConPretrain"),
}
DEFAULT_METHODS = ("standard", "pgd-at", "trades", "mart", "afa", "afa-trades")
#: steps written the way the reference repositories write them (benchmarks/reference_steps.py)
REFERENCE_STEPS = ("ref-pgd-at", "ref-trades")
#: the attack alone, no training step: afa's PGD and torchattacks' PGD
ATTACK_ONLY = ("pgd-afa", "pgd-torchattacks")
#: afa's entry -> the entry it is compared with in ``comparisons``
COMPARISONS = {"pgd-at": "ref-pgd-at", "trades": "ref-trades", "pgd-afa": "pgd-torchattacks"}
#: ``--methods reference``
REFERENCE_PRESET = ("standard", "pgd-at", "ref-pgd-at", "trades", "ref-trades", *ATTACK_ONLY)
ENTRIES = (*METHODS, *REFERENCE_STEPS, *ATTACK_ONLY)

#: data kind -> (channels, size, mean, std); 10 classes.
DATA: dict[str, tuple[int, int, tuple[float, ...], tuple[float, ...]]] = {
    "digits": (1, 8, (0.5,), (0.25,)),
    "cifar": (3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
NUM_CLASSES = 10
EPOCH_IMAGES = 50_000
ATTACK_COST_GOAL = 0.9


def method_class(name: str) -> type[Method]:
    module, cls = METHODS[name]
    return getattr(importlib.import_module(module), cls)


def split_entry(entry: str) -> tuple[str, dict[str, Any]]:
    """``afa-trades:afa_steps=1:afa_init=trades`` -> the method and its options (YAML values).

    An entry with options times the method with a config other than its default, e.g. the
    variants of the AFA adversary; the whole entry is its label in the tables.
    """
    name, *pairs = entry.split(":")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{entry!r}: expected NAME:key=value:..., at {pair!r}")
        options[key] = yaml.safe_load(value)
    return name, options


def parse_methods(text: str) -> list[str]:
    if text.strip() == "reference":
        return list(REFERENCE_PRESET)
    names = [m.strip() for m in text.split(",") if m.strip()]
    for m in names:
        name, options = split_entry(m)
        if options and name not in METHODS:
            raise argparse.ArgumentTypeError(f"{m!r}: only afa's methods take options")
        if name not in ENTRIES:
            raise argparse.ArgumentTypeError(
                f"unknown method {m!r}; known: {', '.join(ENTRIES)}, or 'reference'"
            )
    if len(set(names)) != len(names) or not names:
        raise argparse.ArgumentTypeError(f"methods must be distinct and non-empty, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda")
    p.add_argument(
        "--methods",
        type=parse_methods,
        default=list(DEFAULT_METHODS),
        help=f"comma-separated, from {', '.join(ENTRIES)}, a method optionally with "
        "options (afa-trades:afa_steps=1:afa_init=trades); or 'reference' for "
        f"{','.join(REFERENCE_PRESET)} (default: %(default)s)",
    )
    p.add_argument(
        "--model", default="cnn", help="a registered model: cnn, resnet18, wrn-28-10, ..."
    )
    p.add_argument("--width", type=int, default=None, help="model option width (cnn, resnet18)")
    p.add_argument("--widen-factor", type=int, default=None, help="model option widen_factor (wrn)")
    p.add_argument(
        "--data",
        choices=sorted(DATA),
        default="digits",
        help="digits: 1x8x8, cifar: 3x32x32 (synthetic, 10 classes)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="fp16 needs CUDA (with a gradient scaler, as the loop)",
    )
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the method")
    p.add_argument("--attack-steps", type=int, default=10, help="PGD steps of every attack")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per method")
    p.add_argument("--steps", type=int, default=5, help="timed rounds (median over them)")
    p.add_argument(
        "--min-sample-time",
        type=float,
        default=0.2,
        help="seconds a timed sample lasts at least (fast methods repeat steps)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory step")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p


def torchattacks_missing() -> str | None:
    """Why torchattacks cannot be used here, or ``None`` when it imports."""
    try:
        import torchattacks  # noqa: F401
    except Exception as exc:  # ImportError, or torchvision missing inside its imports
        return (
            f"torchattacks is not importable here ({type(exc).__name__}: {exc}); its PGD "
            "needs no torchvision: pip install --no-deps torchattacks (not an afa dependency)"
        )
    return None


def torchattacks_version() -> str:
    import torchattacks

    return str(getattr(torchattacks, "__version__", "unknown"))


def build_step(
    name: str, args: argparse.Namespace, device: torch.device, batch: Batch
) -> tuple[Callable[[], torch.Tensor], torch.nn.Module, torch.optim.Optimizer | None]:
    """A fresh model (and method), and a closure running one step of entry ``name``.

    ``afa``'s methods and the reference-style steps run a full training step; the
    attack-only entries run PGD on the same model (in train mode, as during training;
    both attacks switch to eval and back) and build no optimizer.
    """
    channels, size, mean, std = DATA[args.data]
    options: dict[str, Any] = {}
    if args.width is not None:
        options["width"] = args.width
    if args.widen_factor is not None:
        options["widen_factor"] = args.widen_factor
    torch.manual_seed(args.seed)
    model = create_model(
        args.model,
        NUM_CLASSES,
        in_channels=channels,
        image_size=size,
        mean=mean,
        std=std,
        **options,
    )
    threat = ThreatModel(steps=args.attack_steps)
    if name in REFERENCE_STEPS or name in ATTACK_ONLY:
        return build_other_step(name, model, threat, args, device, batch)
    name, method_options = split_entry(name)
    cls = method_class(name)
    config = from_dict(cls.Config, method_options, "method") if method_options else None
    method = cls(model, threat, config).to(device)
    if args.channels_last:
        method.to(memory_format=torch.channels_last)
    method.train()
    runner = torch.compile(method) if args.compile else method
    params = method.trainable_parameters()
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = make_grad_scaler(device, args.precision)

    def step() -> torch.Tensor:
        with autocast_context(device, args.precision):
            out = runner(batch)
        scaler.scale(out.loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return out.loss.detach()

    return step, method, optimizer


def build_other_step(
    name: str,
    model: torch.nn.Module,
    threat: ThreatModel,
    args: argparse.Namespace,
    device: torch.device,
    batch: Batch,
) -> tuple[Callable[[], torch.Tensor], torch.nn.Module, torch.optim.Optimizer | None]:
    """The reference-style training steps and the attack-only entries (see the docstring)."""
    model = model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    runner = torch.compile(model) if args.compile else model

    def autocast() -> Any:
        return autocast_context(device, args.precision)

    if name == "pgd-afa":

        def attack() -> torch.Tensor:
            with autocast():
                return perturb(runner, batch.x, batch.y, threat, cross_entropy)

        return attack, model, None
    if name == "pgd-torchattacks":
        import torchattacks

        atk = torchattacks.PGD(
            runner,
            eps=threat.eps,
            alpha=threat.step_size,
            steps=threat.steps,
            random_start=threat.random_start,
        )

        def attack_ta() -> torch.Tensor:
            with autocast():
                return atk(batch.x, batch.y)

        return attack_ta, model, None

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = make_grad_scaler(device, args.precision)
    reference = pgd_at_step_reference if name == "ref-pgd-at" else trades_step_reference

    def step() -> torch.Tensor:
        return reference(
            model,
            optimizer,
            batch.x,
            batch.y,
            threat,
            forward=runner,
            autocast=autocast,
            scaler=scaler,
        )

    return step, model, optimizer


def comparisons(
    samples: dict[str, list[float]], step_s: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """t(afa entry) / t(reference entry) for every pair of ``COMPARISONS`` that ran.

    ``ratio`` is the median of the per-round ratios (each round times both in the same
    stretch of load); ``speedup`` = 1 / ratio.
    """
    out: dict[str, dict[str, Any]] = {}
    for ours, ref in COMPARISONS.items():
        if ours not in samples or ref not in samples:
            continue
        per_round = [a / b for a, b in zip(samples[ours], samples[ref], strict=True)]
        ratio = median(per_round)
        out[f"{ours} / {ref}"] = {
            "afa": ours,
            "reference": ref,
            "ratio": ratio,
            "speedup": 1 / ratio,
            "ratio_per_round": per_round,
            "ratio_of_medians": step_s[ours] / step_s[ref],
        }
    return out


def state_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> int:
    """Bytes of parameters, buffers and optimizer state (live before every step)."""
    total = sum(t.numel() * t.element_size() for t in module.parameters())
    total += sum(t.numel() * t.element_size() for t in module.buffers())
    if optimizer is None:
        return total
    for st in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    return total


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0 or args.attack_steps < 0:
        raise SystemExit("--batch-size and --steps must be >= 1, --warmup/--attack-steps >= 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    try:
        check_precision(device, args.precision)
    except UserError as err:
        raise SystemExit(f"--precision {args.precision}: {err}") from None
    warn_if_busy(device)
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    methods: list[str] = list(args.methods)
    skipped: dict[str, str] = {}
    if "pgd-torchattacks" in methods:
        reason = torchattacks_missing()
        if reason is not None:
            skipped["pgd-torchattacks"] = reason
            methods.remove("pgd-torchattacks")
            print(f"skipped pgd-torchattacks: {reason}")
    if not methods:
        raise SystemExit("nothing left to run")
    channels, size, _, _ = DATA[args.data]

    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch_size, channels, size, size, generator=gen).to(device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=gen).to(device)
    batch = Batch(x, y)

    k = args.attack_steps
    print(
        f"training step: model {args.model}"
        + (f" width {args.width}" if args.width is not None else "")
        + (f" widen_factor {args.widen_factor}" if args.widen_factor is not None else "")
        + f", data {args.data} ({channels}x{size}x{size}), batch {args.batch_size}, "
        f"{args.precision}{', channels-last' if args.channels_last else ''}"
        f"{', compiled' if args.compile else ''}, PGD-{k}, device {device}, "
        f"{torch.get_num_threads()} CPU threads"
    )

    steps: dict[str, Callable[[], torch.Tensor]] = {}
    extras: dict[str, tuple[torch.nn.Module, torch.optim.Optimizer | None]] = {}
    reps: dict[str, int] = {}
    for name in methods:
        step, method, optimizer = build_step(name, args, device, batch)
        for _ in range(args.warmup):
            step()
        reps[name] = reps_for(timed(step, device), args.min_sample_time)
        steps[name], extras[name] = step, (method, optimizer)

    samples: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(args.steps):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for name in order:
            samples[name].append(timed(steps[name], device, reps[name]))

    memory: dict[str, int | None] = {m: None for m in methods}
    memory_source = None
    if not args.no_memory:
        for name in methods:
            memory[name], memory_source = peak_memory(steps[name], device)
    final_loss: dict[str, float | None] = {}
    linf_distance: dict[str, float] = {}
    for m in methods:
        out = steps[m]()
        if m in ATTACK_ONLY:  # the adversarial batch: record how far it moved, not a loss
            linf_distance[m] = float((out.float() - x.float()).abs().amax())
            final_loss[m] = None
            continue
        value = float(out)
        final_loss[m] = value if math.isfinite(value) else None  # JSON has no NaN
        if final_loss[m] is None:
            print(f"warning: {m}: the loss is not finite ({value})")

    step_s = {m: median(samples[m]) for m in methods}
    t_std, t_pgd = step_s.get("standard"), step_s.get("pgd-at")
    results: dict[str, dict[str, Any]] = {}
    for m in methods:
        method, optimizer = extras[m]
        ips = args.batch_size / step_s[m]
        results[m] = {
            "step_s": step_s[m],
            "samples_s": samples[m],
            "reps_per_sample": reps[m],
            "images_per_s": ips,
            "epoch_s": EPOCH_IMAGES / ips,
            "vs_standard": step_s[m] / t_std if t_std else None,
            "vs_pgd_at": step_s[m] / t_pgd if t_pgd else None,
            # per-round ratios: robust to load that drifts between rounds
            "vs_trades": (
                median([a / b for a, b in zip(samples[m], samples["trades"], strict=True)])
                if "trades" in samples
                else None
            ),
            "peak_bytes": memory[m],
            "state_bytes": state_bytes(method, optimizer),
            "parameters": sum(p.numel() for p in method.parameters()),
            "final_loss": final_loss[m],
        }
        if m in linf_distance:
            results[m]["linf_distance"] = linf_distance[m]

    attack_cost: dict[str, Any] | None = None
    if t_std and t_pgd:
        per_round = [
            p / ((k + 1) * s) for p, s in zip(samples["pgd-at"], samples["standard"], strict=True)
        ]
        ratio = median(per_round)
        attack_cost = {
            "definition": f"t(PGD-{k} AT step) / ({k + 1} x t(standard step))",
            "attack_steps": k,
            "ratio": ratio,
            "ratio_per_round": per_round,
            "ratio_of_medians": t_pgd / ((k + 1) * t_std),
            "goal": ATTACK_COST_GOAL,
            "meets_goal": ratio < ATTACK_COST_GOAL,
            # what one attack step costs in clean training steps (the AT step's last step
            # counted as one): ((k + 1) * ratio - 1) / k
            "attack_step_vs_train_step": ((k + 1) * ratio - 1) / k if k else None,
        }

    compared = comparisons(samples, step_s)
    headers = [
        "method",
        "step (ms)",
        "images/s",
        "s / 50k epoch",
        "x standard",
        "x pgd-at",
        "x trades",
        "peak MiB",
    ]
    rows = [
        [
            m,
            1e3 * r["step_s"],
            r["images_per_s"],
            r["epoch_s"],
            r["vs_standard"],
            r["vs_pgd_at"],
            r["vs_trades"],
            None if r["peak_bytes"] is None else r["peak_bytes"] / MiB,
        ]
        for m, r in results.items()
    ]
    print()
    print(markdown_table(headers, rows))
    print(
        f"\nmedian of {args.steps} interleaved rounds after {args.warmup} warm-up steps; "
        f"peak memory: {memory_source or 'not measured'}, growth during one step above "
        "model + optimizer state + batch"
    )
    if attack_cost is not None:
        verdict = "meets" if attack_cost["meets_goal"] else "MISSES"
        line = (
            f"ATTACK COST  t(PGD-{k} AT step) / ({k + 1} x t(standard step)) = "
            f"{attack_cost['ratio']:.3f}   ({verdict} the goal < {ATTACK_COST_GOAL}; "
            f"one attack step ~ {attack_cost['attack_step_vs_train_step']:.2f} training steps)"
            if k
            else f"ATTACK COST  t(PGD-0 AT step) / t(standard step) = {attack_cost['ratio']:.3f}"
        )
        bar = "=" * len(line)
        print(f"\n{bar}\n{line}\n{bar}")
    else:
        print("\nattack cost: needs both 'standard' and 'pgd-at' in --methods")
    if compared:
        print()
        print(
            markdown_table(
                ["afa / reference", "ratio (median of rounds)", "reference is x slower"],
                [[k, c["ratio"], c["speedup"]] for k, c in compared.items()],
            )
        )

    payload = {
        "benchmark": "training_step",
        "config": {
            "model": args.model,
            "width": args.width,
            "widen_factor": args.widen_factor,
            "data": args.data,
            "input_shape": [channels, size, size],
            "num_classes": NUM_CLASSES,
            "batch_size": args.batch_size,
            "precision": args.precision,
            "channels_last": args.channels_last,
            "compile": args.compile,
            "attack_steps": k,
            "threat": ThreatModel(steps=k).describe(),
            "warmup": args.warmup,
            "rounds": args.steps,
            "min_sample_time_s": args.min_sample_time,
            "seed": args.seed,
            "optimizer": "SGD lr 0.01 momentum 0.9 weight_decay 5e-4",
        },
        "environment": {
            **environment(device),
            "load_average_1min_at_start": load_at_start,
            **({"torchattacks": torchattacks_version()} if "pgd-torchattacks" in methods else {}),
        },
        "memory_source": memory_source,
        "methods": results,
        "attack_cost": attack_cost,
        "comparisons": compared,
        "skipped": skipped,
    }
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
