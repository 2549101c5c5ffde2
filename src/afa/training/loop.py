"""The one training loop of ``afa``: every method, every stage, resumable, DDP-ready.

A run is a list of :class:`Stage` s (one for end-to-end methods; pre-training then a
classifier for AFA/SupCon) trained in order by :func:`fit` over one shared Classifier.
Each stage builds its own optimizer, LR schedule, gradient scaler and EMA (started from
the live weights) at its start; the loader's ``set_epoch`` counts epochs over all stages.
Read top to bottom, one step is::

    x = to_float(x_uint8, device)                  # (channels_last if asked)
    with autocast: out = method(Batch(x, y, augment))
    scaler.scale(out.loss).backward(); clip; scaler.step(optimizer); scaler.update()
    schedule.step(); ema.update(model); metric sums += out.metrics * batch size

and each epoch ends with validation (every ``eval_every`` epochs and at a stage's last
epoch, on the EMA weights when ``ema.use_for_eval``), one line of ``metrics.jsonl`` and an
atomic ``last.pt`` (plus ``best.pt`` when the validation PGD accuracy improves in a
selecting stage; without a validation split ``best.pt`` follows ``last.pt``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from afa.attacks.threat import ThreatModel
from afa.data import to_float
from afa.errors import CheckpointError
from afa.methods.base import Batch, Method
from afa.runs import RESUME_KEYS, OptimConfig, ScheduleConfig, TrainConfig
from afa.training.checkpoint import (
    FORMAT,
    PAYLOAD_KEYS,
    load_checkpoint,
    load_method_extra_state,
    method_extra_state,
    rng_state,
    save_checkpoint,
    seed_all,
    set_rng_state,
)
from afa.training.distributed import DistContext, wrap_ddp
from afa.training.ema import ModelEMA
from afa.training.logging import MetricsWriter, Progress, format_values
from afa.training.optim import build_optimizer
from afa.training.precision import autocast_context, check_precision, make_grad_scaler
from afa.training.schedules import LRSchedule
from afa.training.validate import validate

log = logging.getLogger("afa.training")


class TrainLoader(Protocol):
    """What ``fit`` needs of a loader (``afa.data.BatchLoader`` / ``MixedLoader``)."""

    def __iter__(self) -> Any: ...  # yields (x uint8 (B, C, H, W) CPU, y int64 (B,))

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class Stage:
    """One phase of training: a method, its epochs and its optimisation.

    Attributes:
        name: unique within the run (``"train"``, ``"pretrain"``, ``"classifier"``);
            recorded in ``metrics.jsonl`` and checkpoints.
        method: the Method; every stage of a run wraps the SAME Classifier object.
        epochs: epochs of this stage.
        optimizer / schedule: built fresh at the stage's start.
        grad_clip: max global gradient norm, or None.
        augment: this stage's batched augmentation (``Batch.view``); None: ``fit``'s
            ``augment``. One with ``set_epoch(epoch, epochs)`` (a strength schedule) is told
            each epoch of its stage before the epoch's first batch.
        select_by: the validation metric that chooses ``best.pt`` in this stage:
            ``"val/pgd_acc"`` (adversarial training, Rice et al. 2020) or
            ``"val/clean_acc"`` (clean-only training, where PGD accuracy would pick an
            under-trained epoch); None for a pre-training stage whose head means nothing
            (its epochs are still validated and logged). ``best`` restarts at the start
            of each selecting stage, so ``best.pt`` is the best epoch of the last one.
    """

    name: str
    method: Method
    epochs: int
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    grad_clip: float | None = None
    select_by: Literal["val/pgd_acc", "val/clean_acc"] | None = "val/pgd_acc"
    augment: Callable[[Tensor], Tensor] | None = None


@dataclass
class TrainState:
    """Where ``fit`` stopped and what it left on disk.

    Attributes:
        run_dir: the run directory.
        last_path: ``run_dir/last.pt``.
        best_path: ``run_dir/best.pt`` when it exists, else None.
        stage / stage_index: the stage of the last completed epoch.
        epoch: completed epochs within that stage.
        global_epoch: completed epochs over all stages.
        global_step: optimizer steps over all stages.
        best: ``{"metric", "value", "stage", "epoch", "global_epoch"}`` of ``best.pt``
            (``metric``/``value`` None without a validation split), or None.
        completed: every stage finished (False when stopped by ``stop_after``).
        history: the ``metrics.jsonl`` records written by this call.
    """

    run_dir: Path
    last_path: Path
    best_path: Path | None
    stage: str
    stage_index: int
    epoch: int
    global_epoch: int
    global_step: int
    best: dict[str, Any] | None
    completed: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def fit(
    stages: Sequence[Stage],
    train_loader: TrainLoader,
    run_dir: str | Path,
    *,
    val: tuple[Tensor, Tensor] | None,
    threat: ThreatModel,
    augment: Callable[[Tensor], Tensor],
    device: torch.device | str,
    train: TrainConfig,
    config: Mapping[str, Any],
    dist: DistContext | None = None,
    resume: bool = False,
    extra: Mapping[str, Any] | None = None,
    stop_after: int | None = None,
    resume_keys: Sequence[str] = RESUME_KEYS,
) -> TrainState:
    """Train ``stages`` in order and write ``metrics.jsonl``, ``last.pt`` and ``best.pt``.

    Args:
        stages: the run's stages (sharing one Classifier).
        train_loader: yields uint8 batches; ``set_epoch`` gets a GLOBAL epoch counter
            (across stages), so the data order is a function of its seed and the epoch.
        run_dir: the run directory (the caller writes ``config.yaml`` there first).
        val: validation ``(images uint8 (N, C, H, W), labels (N,))`` held out of the
            training set, capped at ``train.val_examples``; None: no validation and
            ``best.pt`` follows ``last.pt`` in selecting stages.
        threat: the run's shared threat model (validation PGD uses it with CE).
        augment: the batched on-device augmentation (``Batch.view``).
        device: this process's device (``dist.device`` under DDP).
        train: the loop's settings (precision, EMA, eval_every, ...).
        config: the resolved run config as a plain dict, stored in every checkpoint and
            compared with the checkpoint's on resume (``resume_keys``).
        dist: the process group context (None: a single process).
        resume: continue from ``run_dir/last.pt`` at the epoch after it (into the next
            stage if it ended one), restoring weights, method extras, optimizer,
            schedule, scaler, EMA, best, step counters and every rank's RNG states.
        extra: more weights-only-safe entries for every checkpoint (e.g. dataset facts).
        stop_after: stop once this many epochs (over all stages, counted from the
            start of the run) are complete, as if interrupted; resume continues.
        resume_keys: dotted config prefixes that must match on resume.

    Returns:
        A :class:`TrainState`.

    Raises:
        CheckpointError: ``resume`` without ``last.pt``, a changed config entry (named),
            a checkpoint that does not fit the stages; or ``last.pt`` already present
            when ``resume`` is False (an earlier run would be overwritten).
        FloatingPointError: the epoch's mean training loss is not finite.
    """
    stages = list(stages)
    _check_stages(stages)
    device = torch.device(device)
    ctx = dist or DistContext.single(device)
    check_precision(device, train.precision)
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(PAYLOAD_KEYS))
    if clash:
        raise ValueError(f"fit: extra checkpoint entries clash with the payload: {clash}")
    steps_per_epoch = len(train_loader)
    if steps_per_epoch < 1:
        raise ValueError("fit: the training loader yields no batch (fewer examples than a batch?)")
    if val is not None and train.val_examples is not None:
        val = (val[0][: train.val_examples], val[1][: train.val_examples])
    if val is not None and len(val[1]) == 0:
        val = None

    run_dir = Path(run_dir)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    metrics = MetricsWriter(run_dir / "metrics.jsonl", enabled=ctx.is_main)
    model = stages[0].method.model

    # Where to start: (stage, completed epochs in it), counters, best, RNG.
    start_stage, start_epoch, global_epoch, global_step = 0, 0, 0, 0
    best: dict[str, Any] | None = None
    ckpt: dict[str, Any] | None = None
    if resume:
        if not last_path.is_file():
            raise CheckpointError(f"{last_path}: cannot resume, no checkpoint there")
        ckpt = load_checkpoint(last_path)
        _check_resume(ckpt, config, resume_keys, stages, last_path)
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{last_path}: model weights do not fit: {exc}") from None
        start_stage, start_epoch = int(ckpt["stage"]["index"]), int(ckpt["epoch"])
        global_epoch, global_step = int(ckpt["global_epoch"]), int(ckpt["global_step"])
        best = ckpt["best"]
        metrics.keep(lambda r: int(r.get("global_epoch", 0)) <= global_epoch)
        log.info(
            "resuming %s after global epoch %d (step %d)", last_path, global_epoch, global_step
        )
    else:
        if last_path.exists():
            raise CheckpointError(
                f"{last_path} exists: resume that run (--resume), or train into another run directory (name=... or out_dir=...)"
            )
        metrics.reset()
        seed_all(train.seed + ctx.rank)
    done_stage, done_epoch = start_stage, start_epoch  # the last completed epoch
    if start_epoch == stages[start_stage].epochs:  # the checkpoint ended a stage
        start_stage, start_epoch = start_stage + 1, 0
    history: list[dict[str, Any]] = []

    def state(completed: bool) -> TrainState:
        return TrainState(
            run_dir=run_dir,
            last_path=last_path,
            best_path=best_path if best_path.exists() else None,
            stage=stages[done_stage].name,
            stage_index=done_stage,
            epoch=done_epoch,
            global_epoch=global_epoch,
            global_step=global_step,
            best=best,
            completed=completed,
            history=history,
        )

    def stopping() -> bool:
        return stop_after is not None and global_epoch >= stop_after

    log.info(
        "training %s on %s (world size %d, %s); validation: %s",
        " -> ".join(f"{s.name} ({type(s.method).__name__}, {s.epochs} epochs)" for s in stages),
        device,
        ctx.world_size,
        train.precision,
        f"{len(val[1])} examples, {threat.describe()}" if val is not None else "none",
    )

    rng_pending = ckpt is not None  # restore the RNG once the resumed stage is set up
    for si in range(start_stage, len(stages)):
        if stopping():
            return state(completed=False)
        stage = stages[si]
        method = stage.method.to(device)
        if train.channels_last:
            method.to(memory_format=torch.channels_last)
        runner = wrap_ddp(method, ctx, sync_bn=train.sync_bn)  # converts BN in place first
        if train.compile:
            runner = torch.compile(runner)
        params = method.trainable_parameters()
        optimizer = build_optimizer(params, stage.optimizer)
        schedule = LRSchedule(
            optimizer, stage.schedule, steps_per_epoch=steps_per_epoch, epochs=stage.epochs
        )
        scaler = make_grad_scaler(device, train.precision)
        ema = ModelEMA(model, train.ema.decay, train.ema.warmup) if train.ema.enabled else None
        eval_weights = "ema" if ema is not None and train.ema.use_for_eval else "model"
        first_epoch = 0
        if ckpt is not None and si == start_stage and start_epoch > 0:
            _restore_stage(ckpt, last_path, method, optimizer, schedule, scaler, ema)
            first_epoch = start_epoch
        elif stage.select_by is not None:
            best = None  # each selecting stage chooses among its own epochs
        if rng_pending:
            _restore_rng(ckpt, ctx, device, train.seed, global_epoch)
            rng_pending = False

        for epoch in range(first_epoch, stage.epochs):
            if stopping():
                return state(completed=False)
            method.train()
            method.on_epoch_start(epoch, stage.epochs)
            stage_augment = stage.augment or augment
            set_augment_epoch = getattr(stage_augment, "set_epoch", None)
            if set_augment_epoch is not None:
                set_augment_epoch(epoch, stage.epochs)
            train_loader.set_epoch(global_epoch)
            desc = f"{stage.name} {epoch + 1}/{stage.epochs}"
            progress = Progress(
                desc, steps_per_epoch, log_every=train.log_every, enabled=ctx.is_main
            )
            sums: dict[str, Tensor] = {}
            count = 0
            lr = schedule.get_last_lr()[0]
            t0 = time.perf_counter()
            for i, (x_uint8, y) in enumerate(train_loader, start=1):
                x = to_float(x_uint8, device)
                if train.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = y.to(device, non_blocking=True)
                with autocast_context(device, train.precision):
                    out = runner(Batch(x, y, stage_augment))
                scaler.scale(out.loss).backward()
                if stage.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
                lr = optimizer.param_groups[0]["lr"]
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
                if ema is not None:
                    ema.update(model)
                global_step += 1
                n = int(y.shape[0])
                count += n
                for k, v in {"loss": out.loss, **out.metrics}.items():
                    v = v.detach().float() * n  # sums weighted by batch size, divided once
                    sums[k] = sums[k] + v if k in sums else v
                progress.step(i, {**_means(sums, count), "lr": lr} if progress.due(i) else None)
            progress.close()
            train_time = time.perf_counter() - t0

            reduced = ctx.reduce_sums({**{k: float(v) for k, v in sums.items()}, "_count": count})
            total = reduced.pop("_count")
            record: dict[str, Any] = {
                "stage": stage.name,
                "stage_index": si,
                "epoch": epoch + 1,
                "epochs": stage.epochs,
                "global_epoch": global_epoch + 1,
                "global_step": global_step,
                "lr": lr,
                "time_s": train_time,
                **{f"train/{k}": v / max(total, 1) for k, v in reduced.items()},
                **{f"train/{k}": float(v) for k, v in method.epoch_metrics().items()},
            }
            if not math.isfinite(record.get("train/loss", 0.0)):
                raise FloatingPointError(
                    f"stage {stage.name!r} epoch {epoch + 1}: mean training loss is "
                    f"{record['train/loss']} (diverged; lower the LR or use fp32); "
                    f"the last good checkpoint is {last_path}"
                )
            train_means = {k[6:]: v for k, v in record.items() if k.startswith("train/")}
            collapse = method.collapse_message(train_means, epoch)
            if collapse is not None:
                record["collapse_warning"] = True
                log.warning("%s: %s", desc, collapse)
            global_epoch += 1
            last_of_stage = epoch + 1 == stage.epochs
            if val is not None and ((epoch + 1) % train.eval_every == 0 or last_of_stage):
                t1 = time.perf_counter()
                generator = torch.Generator(device=device).manual_seed(train.seed + ctx.rank)
                result = validate(
                    ema.module if eval_weights == "ema" else model,
                    val[0],
                    val[1],
                    threat,
                    batch_size=train.batch_size,
                    device=device,
                    precision=train.precision,
                    generator=generator,
                    dist=ctx,
                )
                record.update({f"val/{k}": v for k, v in result.items()})
                record["val/time_s"] = time.perf_counter() - t1
            improved = False
            metric = stage.select_by
            if metric is not None and (val is None or metric in record):
                value = record.get(metric)
                if val is None or best is None or best["value"] is None or value > best["value"]:
                    improved = True
                    best = {
                        "metric": metric if val is not None else None,
                        "value": value,
                        "stage": stage.name,
                        "epoch": epoch + 1,
                        "global_epoch": global_epoch,
                    }
            done_stage, done_epoch = si, epoch + 1

            metrics.write(record)
            history.append(record)
            rngs = ctx.all_gather_object(rng_state(device))
            if ctx.is_main:
                payload = {
                    "format": FORMAT,
                    "model": model.state_dict(),
                    "method": method_extra_state(method),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": schedule.state_dict(),
                    "scaler": scaler.state_dict(),
                    "ema": ema.module.state_dict() if ema is not None else None,
                    "ema_updates": ema.updates if ema is not None else 0,
                    "eval_weights": eval_weights,
                    "stage": {"index": si, "name": stage.name},
                    "epoch": epoch + 1,
                    "global_epoch": global_epoch,
                    "global_step": global_step,
                    "best": best,
                    "rng": rngs,
                    "world_size": ctx.world_size,
                    "config": dict(config),
                    "metrics": record,
                    **extra,
                }
                save_checkpoint(last_path, payload, copies=[best_path] if improved else [])
                log.info("%s: %s%s", desc, _summary(record), " (best)" if improved else "")
            ctx.barrier()  # every rank sees the new last.pt before going on
        del runner  # drop this stage's DDP reducer (and its gradient hooks) before the next
    return state(completed=True)


def _means(sums: Mapping[str, Tensor], count: int) -> dict[str, float]:
    return {k: float(v) / max(count, 1) for k, v in sums.items()}


def _summary(record: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in record.items() if "/" in k and not k.endswith("time_s")}
    return format_values(shown) + f" ({record['time_s']:.1f} s)"


def _check_stages(stages: list[Stage]) -> None:
    if not stages:
        raise ValueError("fit: no stages")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"fit: stage names must be unique, got {names}")
    model = stages[0].method.model
    for s in stages:
        if s.method.model is not model:
            raise ValueError(f"fit: stage {s.name!r} does not share the first stage's Classifier")
        if s.epochs < 1:
            raise ValueError(f"fit: stage {s.name!r} has {s.epochs} epochs")


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_difference(
    saved: Mapping[str, Any], current: Mapping[str, Any], keys: Sequence[str]
) -> tuple[str, Any, Any] | None:
    """The first dotted key under ``keys`` whose value differs: ``(key, saved, current)``."""
    a, b = _flatten(saved), _flatten(current)
    missing = "<absent>"
    for key in sorted(set(a) | set(b)):
        if any(key == p or key.startswith(p + ".") for p in keys):
            if a.get(key, missing) != b.get(key, missing):
                return key, a.get(key, missing), b.get(key, missing)
    return None


def _check_resume(
    ckpt: Mapping[str, Any],
    config: Mapping[str, Any],
    keys: Sequence[str],
    stages: list[Stage],
    path: Path,
) -> None:
    diff = config_difference(ckpt["config"], config, keys)
    if diff is not None:
        key, old, new = diff
        raise CheckpointError(
            f"{path}: cannot resume, config key {key!r} differs (checkpoint: {old!r}, now: {new!r})"
        )
    index, name = int(ckpt["stage"]["index"]), str(ckpt["stage"]["name"])
    if index >= len(stages) or stages[index].name != name:
        raise CheckpointError(
            f"{path}: the checkpoint is in stage {index} {name!r}, but this run's stages are "
            f"{[s.name for s in stages]}"
        )
    if not 0 < int(ckpt["epoch"]) <= stages[index].epochs:
        raise CheckpointError(
            f"{path}: the checkpoint completed epoch {ckpt['epoch']} of stage {name!r}, "
            f"which has {stages[index].epochs} epochs"
        )


def _restore_stage(
    ckpt: Mapping[str, Any],
    path: Path,
    method: Method,
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule,
    scaler: torch.amp.GradScaler,
    ema: ModelEMA | None,
) -> None:
    """Load the mid-stage state of ``ckpt`` into the freshly built stage objects."""
    try:
        load_method_extra_state(method, ckpt["method"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            if ckpt["ema"] is None:
                raise ValueError("the checkpoint has no EMA weights but train.ema is on")
            ema.module.load_state_dict(ckpt["ema"])
            ema.updates = int(ckpt["ema_updates"])
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot restore the training state: {exc}") from None


def _restore_rng(
    ckpt: Mapping[str, Any], ctx: DistContext, device: torch.device, seed: int, global_epoch: int
) -> None:
    states = ckpt["rng"]
    if len(states) == ctx.world_size:
        set_rng_state(states[ctx.rank], device)
        return
    log.warning(
        "the checkpoint was written by %d processes, this run has %d: RNG streams are "
        "re-seeded, so the resumed run will not replay the interrupted one exactly",
        len(states),
        ctx.world_size,
    )
    seed_all(seed + ctx.rank + 1_000_003 * global_epoch)


__all__ = ["Stage", "TrainState", "config_difference", "fit"]
