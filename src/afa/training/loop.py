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
from afa.methods.collapse import MAX_IMAGES, encoder_stats, init_separation
from afa.runs import RESUME_KEYS, EMAConfig, OptimConfig, Precision, RunDir, ScheduleConfig
from afa.runs.checkpoint import load_weights
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
from afa.training.divergence import DivergenceWatch, diverged
from afa.training.ema import ModelEMA
from afa.training.logging import MetricsWriter, Progress
from afa.training.optim import build_optimizer
from afa.training.precision import autocast_context, check_precision, make_grad_scaler
from afa.training.schedules import LRSchedule
from afa.training.validate import attack_label, validate

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


@dataclass(frozen=True)
class LoopOptions:
    """The loop's own settings, the same for every stage of a run.

    The planner builds them from ``TrainConfig`` (``afa.training.plan.loop_options``);
    epochs, optimizer, schedule and gradient clipping are each :class:`Stage`'s own.
    The values are those of ``TrainConfig`` (validated there); see its attributes.

    Attributes:
        seed: seed of the global RNGs at the start (plus the rank) and of validation PGD.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` autocast (fp16 with a scaler).
        channels_last: NHWC memory format for the model and its inputs.
        compile: ``torch.compile`` the training step's forward.
        sync_bn: convert batch norm to ``SyncBatchNorm`` under DDP.
        ema: the weight average each stage keeps (and whether validation reads it).
        eval_every: validate every this many epochs (and at a stage's last epoch).
        val_examples: cap on the validation examples (the first ones); None: all.
        val_batch_size: the validation batch size (the run's per-process batch size).
        log_every: steps between progress lines (or progress-bar refreshes).
    """

    seed: int = 0
    precision: Precision = "fp32"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    ema: EMAConfig = field(default_factory=EMAConfig)
    eval_every: int = 1
    val_examples: int | None = 1000
    val_batch_size: int = 128
    log_every: int = 50


@dataclass(frozen=True)
class RunSpec:
    """The run ``fit`` writes: its directory and what identifies it in every checkpoint.

    Attributes:
        path: the run directory (created by rank 0).
        config: the resolved run config as a plain dict, stored in every checkpoint and
            compared with the checkpoint's on resume (``resume_keys``).
        resume_keys: dotted config prefixes that must match on resume (the run schema's
            ``afa.runs.RESUME_KEYS``).
        extra: more weights-only-safe entries for every checkpoint (e.g. dataset facts);
            none may take a name of the payload's own (:data:`afa.runs.PAYLOAD_KEYS`).
        on_start: called once the directory may be written (no run to overwrite, or a
            resume that fits), before step 0; ``train_run`` writes ``config.yaml`` here
            (on rank 0), so a refused run never replaces it.
        read_saved: how a checkpoint's config is read before the resume comparison
            (default: as stored); ``train_run`` reads it through today's run schema, so an
            option added since the checkpoint was written compares at its default.
    """

    path: str | Path
    config: Mapping[str, Any] = field(default_factory=dict)
    resume_keys: Sequence[str] = RESUME_KEYS
    extra: Mapping[str, Any] = field(default_factory=dict)
    on_start: Callable[[], object] | None = None
    read_saved: Callable[[Mapping[str, Any]], Mapping[str, Any]] = dict

    def __post_init__(self) -> None:
        clash = sorted(set(self.extra) & set(PAYLOAD_KEYS))
        if clash:
            raise ValueError(f"RunSpec: extra checkpoint entries clash with the payload: {clash}")


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
    run: RunSpec,
    *,
    options: LoopOptions | None = None,
    val: tuple[Tensor, Tensor] | None,
    threat: ThreatModel,
    augment: Callable[[Tensor], Tensor],
    device: torch.device | str,
    dist: DistContext | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> TrainState:
    """Train ``stages`` in order and write ``metrics.jsonl``, ``last.pt`` and ``best.pt``.

    Args:
        stages: the run's stages (sharing one Classifier).
        train_loader: yields uint8 batches; ``set_epoch`` gets a GLOBAL epoch counter
            (across stages), so the data order is a function of its seed and the epoch.
        run: the run directory, the config stored in each checkpoint and compared on
            resume, extra checkpoint entries and the ``on_start`` hook.
        options: the loop's settings (None: the defaults).
        val: validation ``(images uint8 (N, C, H, W), labels (N,))`` held out of the
            training set, capped at ``options.val_examples``; None: no validation and
            ``best.pt`` follows ``last.pt`` in selecting stages.
        threat: the run's shared threat model (validation PGD uses it with CE).
        augment: the batched on-device augmentation (``Batch.view``) of stages without
            their own.
        device: this process's device (``dist.device`` under DDP).
        dist: the process group context (None: a single process).
        resume: continue from ``last.pt`` at the epoch after it (into the next stage if
            it ended one), restoring weights, method extras, optimizer, schedule, scaler,
            EMA, best, step counters and every rank's RNG states.
        stop_after: stop once this many epochs (over all stages, counted from the
            start of the run) are complete, as if interrupted; resume continues.

    Returns:
        A :class:`TrainState`.

    Raises:
        CheckpointError: ``resume`` without ``last.pt``, a changed config entry (named),
            a checkpoint that does not fit the stages; or ``last.pt`` already present
            when ``resume`` is False (an earlier run would be overwritten).
        TrainingDiverged: the epoch's mean training loss is not finite; nothing of that
            epoch is saved, the last finite ``last.pt`` is kept (:mod:`.divergence`).
    """
    stages, opt = list(stages), options or LoopOptions()
    _check_stages(stages)
    device = torch.device(device)
    ctx = dist or DistContext.single(device)
    check_precision(device, opt.precision)
    val = _cap_validation(val, opt.val_examples)
    loop = _Loop(stages, train_loader, run, opt, device=device, ctx=ctx, val=val, threat=threat)
    ckpt: dict[str, Any] | None = None
    if resume:
        ckpt = loop.resume()
    else:
        loop.start_fresh()
    if run.on_start is not None:
        run.on_start()
    loop.log_plan()
    for si in range(loop.start_stage, len(stages)):
        if loop.stopped(stop_after):
            return loop.state(completed=False)
        live = loop.setup_stage(si, ckpt, augment)
        for epoch in range(live.first_epoch, live.stage.epochs):
            if loop.stopped(stop_after):
                return loop.state(completed=False)
            loop.run_epoch(live, epoch)
        del live  # drop this stage's DDP reducer (and its gradient hooks) before the next
    return loop.state(completed=True)


@dataclass
class _StageRun:
    """One stage's live objects, built fresh at its start (``_Loop.setup_stage``)."""

    index: int
    stage: Stage
    method: Method
    runner: Any  # the method, wrapped by DDP and/or torch.compile when asked
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None
    augment: Callable[[Tensor], Tensor]
    first_epoch: int = 0

    def desc(self, epoch: int) -> str:
        return f"{self.stage.name} {epoch + 1}/{self.stage.epochs}"


class _Loop:
    """What ``fit`` carries from epoch to epoch: settings, files, counters and ``best``."""

    def __init__(
        self,
        stages: list[Stage],
        loader: TrainLoader,
        spec: RunSpec,
        opt: LoopOptions,
        *,
        device: torch.device,
        ctx: DistContext,
        val: tuple[Tensor, Tensor] | None,
        threat: ThreatModel,
    ) -> None:
        self.stages, self.loader, self.spec, self.opt = stages, loader, spec, opt
        self.device, self.ctx, self.val, self.threat = device, ctx, val, threat
        self.model = stages[0].method.model
        self.steps_per_epoch = len(loader)
        if self.steps_per_epoch < 1:
            raise ValueError(
                "fit: the training loader yields no batch (fewer examples than a batch?)"
            )
        self.start_stage, self.start_epoch = 0, 0  # where this call starts
        self.done = (0, 0)  # (stage index, completed epochs in it) of the last epoch
        self.global_epoch, self.global_step = 0, 0
        self.best: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        #: mean class separation of randomly initialised copies on the validation images
        self.separation_init: float | None = None
        self.rng_pending = False
        self.watch = DivergenceWatch()  # the current epoch's steps
        self.files = RunDir(Path(spec.path))
        if ctx.is_main:  # the run directory this process writes to
            self.files.path.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsWriter(self.files.metrics, enabled=ctx.is_main)

    # ------------------------------------------------------------------ start and stop

    def start_fresh(self) -> None:
        """A new run: refuse to overwrite one, start an empty metrics file, seed."""
        if self.files.last.exists():
            raise CheckpointError(
                f"{self.files.last} exists: resume that run (--resume), or train into "
                "another run directory (name=... or out_dir=...)"
            )
        self.metrics.reset()
        seed_all(self.opt.seed + self.ctx.rank)

    def resume(self) -> dict[str, Any]:
        """Load ``last.pt``: weights, counters and ``best``; the rest at stage set-up."""
        last = self.files.last
        if not last.is_file():
            raise CheckpointError(f"{last}: cannot resume, no checkpoint there")
        ckpt = load_checkpoint(last)
        saved = dict(ckpt, config=self.spec.read_saved(ckpt["config"]))
        _check_resume(saved, self.spec.config, self.spec.resume_keys, self.stages, last)
        load_weights(self.model, ckpt["model"], str(last))
        self.done = (int(ckpt["stage"]["index"]), int(ckpt["epoch"]))
        self.global_epoch, self.global_step = int(ckpt["global_epoch"]), int(ckpt["global_step"])
        self.best = ckpt["best"]
        kept_epochs = self.global_epoch
        self.metrics.keep(lambda r: int(r.get("global_epoch", 0)) <= kept_epochs)
        log.info("resuming %s after global epoch %d (step %d)", last, kept_epochs, self.global_step)
        self.start_stage, self.start_epoch = self.done
        if self.start_epoch == self.stages[self.start_stage].epochs:  # it ended a stage
            self.start_stage, self.start_epoch = self.start_stage + 1, 0
        self.rng_pending = True  # restored once the resumed stage is set up
        return ckpt

    def stopped(self, stop_after: int | None) -> bool:
        return stop_after is not None and self.global_epoch >= stop_after

    def state(self, completed: bool) -> TrainState:
        stage_index, epoch = self.done
        return TrainState(
            run_dir=self.files.path,
            last_path=self.files.last,
            best_path=self.files.best if self.files.best.exists() else None,
            stage=self.stages[stage_index].name,
            stage_index=stage_index,
            epoch=epoch,
            global_epoch=self.global_epoch,
            global_step=self.global_step,
            best=self.best,
            completed=completed,
            history=self.history,
        )

    def log_plan(self) -> None:
        validation = "none"
        if self.val is not None:
            validation = (
                f"{len(self.val[1])} examples, {attack_label(self.threat)}, "
                f"{self.threat.describe()}"
            )
        log.info(
            "training %s on %s (world size %d, %s); validation: %s",
            " -> ".join(
                f"{s.name} ({type(s.method).__name__}, {s.epochs} epochs)" for s in self.stages
            ),
            self.device,
            self.ctx.world_size,
            self.opt.precision,
            validation,
        )

    # ------------------------------------------------------------------ a stage

    def setup_stage(
        self, si: int, ckpt: Mapping[str, Any] | None, augment: Callable[[Tensor], Tensor]
    ) -> _StageRun:
        """Build the stage's optimizer, schedule, scaler and EMA; restore them on resume.

        ``augment`` is the run's augmentation, for a stage without its own.
        """
        t, stage = self.opt, self.stages[si]
        method = stage.method.to(self.device)
        if t.channels_last:
            method.to(memory_format=torch.channels_last)
        runner = wrap_ddp(method, self.ctx, sync_bn=t.sync_bn)  # converts BN in place first
        if t.compile:
            runner = torch.compile(runner)
        params = method.trainable_parameters()
        optimizer = build_optimizer(params, stage.optimizer)
        run = _StageRun(
            index=si,
            stage=stage,
            method=method,
            runner=runner,
            params=params,
            optimizer=optimizer,
            schedule=LRSchedule(
                optimizer, stage.schedule, steps_per_epoch=self.steps_per_epoch, epochs=stage.epochs
            ),
            scaler=make_grad_scaler(self.device, t.precision),
            ema=ModelEMA(self.model, t.ema.decay, t.ema.warmup) if t.ema.enabled else None,
            augment=stage.augment or augment,
        )
        if ckpt is not None and si == self.start_stage and self.start_epoch > 0:
            _restore_stage(
                ckpt, self.files.last, method, optimizer, run.schedule, run.scaler, run.ema
            )
            run.first_epoch = self.start_epoch
        elif stage.select_by is not None:
            self.best = None  # each selecting stage chooses among its own epochs
        if self.rng_pending:
            assert ckpt is not None  # rng_pending is set by resume(), which returned ckpt
            _restore_rng(ckpt, self.ctx, self.device, t.seed, self.global_epoch)
            self.rng_pending = False
        return run

    # ------------------------------------------------------------------ an epoch

    def run_epoch(self, run: _StageRun, epoch: int) -> None:
        """Train one epoch, validate on schedule, log it and checkpoint it."""
        record = self.train_epoch(run, epoch)
        self.raise_if_diverged(run, epoch, record)
        self.global_epoch += 1
        self.validate(run, epoch, record)
        self.judge_collapse(run, epoch, record)
        improved = self.update_best(run, epoch, record)
        self.done = (run.index, epoch + 1)
        self.metrics.write(record)
        self.history.append(record)
        self.checkpoint(run, epoch, record, improved)

    def raise_if_diverged(self, run: _StageRun, epoch: int, record: Mapping[str, Any]) -> None:
        """Stop before anything of this epoch is saved when its mean loss is not finite.

        The record's loss is reduced over every rank, so every rank stops together.
        """
        loss = record.get("train/loss", 0.0)
        if not math.isfinite(loss):
            raise diverged(
                run_dir=self.files.path,
                stage=run.stage.name,
                epoch=epoch + 1,
                mean_loss=loss,
                watch=self.watch,
                last_path=self.files.last,
                last_global_epoch=self.global_epoch,
            )

    def train_epoch(self, run: _StageRun, epoch: int) -> dict[str, Any]:
        """The epoch's steps; returns its ``metrics.jsonl`` record (train part)."""
        t, method, device = self.opt, run.method, self.device
        method.train()
        method.on_epoch_start(epoch, run.stage.epochs)
        self.loader.set_epoch(self.global_epoch)
        set_augment_epoch = getattr(run.augment, "set_epoch", None)
        if set_augment_epoch is not None:  # a strength schedule over the stage
            set_augment_epoch(epoch, run.stage.epochs)
        progress = Progress(
            run.desc(epoch), self.steps_per_epoch, log_every=t.log_every,
            enabled=self.ctx.is_main, log_last=False,
        )  # fmt: skip
        sums: dict[str, Tensor] = {}
        count, lr, t0 = 0, run.schedule.get_last_lr()[0], time.perf_counter()
        self.watch = DivergenceWatch()
        for i, (x_uint8, y) in enumerate(self.loader, start=1):
            x = to_float(x_uint8, device)
            if t.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with autocast_context(device, t.precision):
                out = run.runner(Batch(x, y, run.augment))
            run.scaler.scale(out.loss).backward()
            if run.stage.grad_clip is not None:
                run.scaler.unscale_(run.optimizer)
                torch.nn.utils.clip_grad_norm_(run.params, run.stage.grad_clip)
            lr = run.optimizer.param_groups[0]["lr"]
            run.scaler.step(run.optimizer)
            run.scaler.update()
            run.optimizer.zero_grad(set_to_none=True)
            run.schedule.step()
            if run.ema is not None:
                run.ema.update(self.model)
            self.global_step += 1
            self.watch.observe(self.global_step, out.loss, out.metrics)
            count += _accumulate(sums, {"loss": out.loss, **out.metrics}, int(y.shape[0]))
            progress.step(i, _progress_values(sums, count, lr) if progress.due(i) else None)
        progress.close()
        return self.train_record(run, epoch, sums, count, lr, time.perf_counter() - t0)

    def train_record(
        self,
        run: _StageRun,
        epoch: int,
        sums: Mapping[str, Tensor],
        count: int,
        lr: float,
        train_time: float,
    ) -> dict[str, Any]:
        """Epoch means over every rank (sums and counts reduced, divided once)."""
        reduced = self.ctx.reduce_sums({**{k: float(v) for k, v in sums.items()}, "_count": count})
        total = reduced.pop("_count")
        return {
            "stage": run.stage.name,
            "stage_index": run.index,
            "epoch": epoch + 1,
            "epochs": run.stage.epochs,
            "global_epoch": self.global_epoch + 1,
            "global_step": self.global_step,
            "lr": lr,
            "time_s": train_time,
            **{f"train/{k}": v / max(total, 1) for k, v in reduced.items()},
        }

    def validate(self, run: _StageRun, epoch: int, record: dict[str, Any]) -> None:
        """Clean and PGD accuracy every ``eval_every`` epochs and at the stage's last, and
        the encoder's collapse statistics (:meth:`encoder_stats`) in a stage that trains it."""
        t = self.opt
        last_of_stage = epoch + 1 == run.stage.epochs
        if self.val is None or not ((epoch + 1) % t.eval_every == 0 or last_of_stage):
            return
        t1 = time.perf_counter()
        generator = torch.Generator(device=self.device).manual_seed(t.seed + self.ctx.rank)
        result = validate(
            self.evaluated_model(run),
            self.val[0],
            self.val[1],
            self.threat,
            batch_size=t.val_batch_size,
            device=self.device,
            precision=t.precision,
            generator=generator,
            dist=self.ctx,
        )
        record.update({f"val/{k}": v for k, v in result.items()})
        record["val/attack"] = attack_label(self.threat)
        if run.method.trains_encoder():
            stats = self.encoder_stats(run)  # NaN where undefined (one class): not written
            record.update({f"val/{k}": v for k, v in stats.items() if math.isfinite(v)})
        record["val/time_s"] = time.perf_counter() - t1

    def encoder_stats(self, run: _StageRun) -> dict[str, float]:
        """The collapse indicator's statistics of the encoder on the validation images.

        ``feat_separation`` and ``feat_erank`` of the validated weights' features, and
        ``feat_separation_init``, the mean separation of randomly initialised copies of
        the model on the same images (:func:`afa.methods.collapse.init_separation`,
        computed once per call of :func:`fit`); on at most ``MAX_IMAGES`` validation
        images, identical on every rank (each computes it on the whole split, no
        collective).
        """
        assert self.val is not None
        images, labels = self.val[0][:MAX_IMAGES], self.val[1][:MAX_IMAGES]
        size, device = self.opt.val_batch_size, self.device
        stats = encoder_stats(
            self.evaluated_model(run), images, labels, batch_size=size, device=device
        )
        if self.separation_init is None:
            self.separation_init, _ = init_separation(
                self.model, images, labels, batch_size=size, device=device
            )
        return {**stats, "feat_separation_init": self.separation_init}

    def judge_collapse(self, run: _StageRun, epoch: int, record: dict[str, Any]) -> None:
        """Log the method's collapse warning and set ``collapse_warning`` when it fires.

        Judged on the validation images' statistics when this epoch measured them, else
        on the means of the training batches' (``train/feat_separation``,
        ``train/feat_erank``: contrastive methods report them), which have no
        random-initialisation reference; only stages that train the encoder.
        """
        if not run.method.trains_encoder():
            return
        message = run.method.collapse_message(_collapse_stats(record), epoch)
        if message is not None:
            record["collapse_warning"] = True
            log.warning("%s: %s", run.desc(epoch), message)

    def evaluated_model(self, run: _StageRun) -> torch.nn.Module:
        """The weights validation measures (the rule of ``EMAConfig.evaluated``)."""
        return run.ema.module if run.ema is not None and self.opt.ema.evaluated() else self.model

    def update_best(self, run: _StageRun, epoch: int, record: Mapping[str, Any]) -> bool:
        """Whether this epoch becomes ``best.pt`` (always, without a validation split)."""
        metric = run.stage.select_by
        if metric is None or (self.val is not None and metric not in record):
            return False
        value, best = record.get(metric), self.best
        if self.val is None or best is None or best["value"] is None or value > best["value"]:
            self.best = {
                "metric": metric if self.val is not None else None,
                "value": value,
                "stage": run.stage.name,
                "epoch": epoch + 1,
                "global_epoch": self.global_epoch,
            }
            return True
        return False

    def checkpoint(
        self, run: _StageRun, epoch: int, record: dict[str, Any], improved: bool
    ) -> None:
        """Write ``last.pt`` (and ``best.pt``) on rank 0 and log the epoch's line."""
        rngs = self.ctx.all_gather_object(rng_state(self.device))
        if self.ctx.is_main:
            payload = self.payload(run, epoch, record, rngs)
            save_checkpoint(self.files.last, payload, copies=[self.files.best] if improved else [])
            log.info("%s", epoch_line(record, len(self.stages), best=improved))
        self.ctx.barrier()  # every rank sees the new last.pt before going on

    def payload(
        self, run: _StageRun, epoch: int, record: dict[str, Any], rngs: list[Any]
    ) -> dict[str, Any]:
        """The complete checkpoint (see :mod:`afa.runs.checkpoint`)."""
        ema = run.ema
        return {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "method": method_extra_state(run.method),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.schedule.state_dict(),
            "scaler": run.scaler.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
            "ema_updates": ema.updates if ema is not None else 0,
            "eval_weights": "ema" if ema is not None and self.opt.ema.evaluated() else "model",
            "stage": {"index": run.index, "name": run.stage.name},
            "epoch": epoch + 1,
            "global_epoch": self.global_epoch,
            "global_step": self.global_step,
            "best": self.best,
            "rng": rngs,
            "world_size": self.ctx.world_size,
            "config": dict(self.spec.config),
            "metrics": record,
            **self.spec.extra,
        }


def _cap_validation(
    val: tuple[Tensor, Tensor] | None, cap: int | None
) -> tuple[Tensor, Tensor] | None:
    if val is not None and cap is not None:
        val = (val[0][:cap], val[1][:cap])
    return None if val is None or len(val[1]) == 0 else val


def _accumulate(sums: dict[str, Tensor], values: Mapping[str, Tensor], n: int) -> int:
    """Add batch-size-weighted values to ``sums`` (divided once, by the count); returns n."""
    for k, v in values.items():
        v = v.detach().float() * n
        sums[k] = sums[k] + v if k in sums else v
    return n


def _means(sums: Mapping[str, Tensor], count: int) -> dict[str, float]:
    return {k: float(v) / max(count, 1) for k, v in sums.items()}


#: The running means a progress line or bar shows (the rest is in metrics.jsonl).
PROGRESS_KEYS = ("loss", "acc", "adv_acc")


def _progress_values(sums: Mapping[str, Tensor], count: int, lr: float) -> dict[str, float]:
    shown = {k: v for k, v in sums.items() if k in PROGRESS_KEYS}
    return {**_means(shown, count), "lr": lr}


_COLLAPSE_KEYS = ("feat_separation", "feat_erank", "feat_separation_init")


def _collapse_stats(record: Mapping[str, Any]) -> dict[str, float]:
    """The statistics the collapse warning judges: the validation images' when measured
    this epoch, else the training batches' means."""
    prefix = "val/" if "val/feat_separation" in record else "train/"
    return {k: record[prefix + k] for k in _COLLAPSE_KEYS if prefix + k in record}


def epoch_line(record: Mapping[str, Any], n_stages: int = 1, *, best: bool = False) -> str:
    """One short line per epoch with the figures that matter (the rest is in metrics.jsonl).

    ``stage 1/2 pretrain  epoch 3/10  loss 1.234  train acc 45.6%  val clean 50.1%
    val PGD-10 (CE, BN eval) 30.2%  lr 0.05  12.3s``; the stage part only for runs of
    several stages, the accuracies only where the method reports them.
    """
    parts = [f"epoch {record['epoch']}/{record['epochs']}"]
    if n_stages > 1:
        parts.insert(0, f"stage {record['stage_index'] + 1}/{n_stages} {record['stage']}")
    if isinstance(record.get("train/loss"), (int, float)):
        parts.append(f"loss {record['train/loss']:.4g}")
    for key, name in (
        ("train/acc", "train acc"),
        ("train/adv_acc", "train adv acc"),
        ("val/clean_acc", "val clean"),
        ("val/pgd_acc", f"val {record.get('val/attack', 'PGD')}"),
    ):
        if isinstance(record.get(key), (int, float)):
            parts.append(f"{name} {100 * record[key]:.1f}%")
    seconds = record.get("time_s", 0.0) + record.get("val/time_s", 0.0)
    parts += [f"lr {record['lr']:.3g}", f"{seconds:.1f}s"]
    return "  ".join(parts) + ("  (best)" if best else "")


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


__all__ = [
    "PROGRESS_KEYS",
    "LoopOptions",
    "RunSpec",
    "Stage",
    "TrainState",
    "config_difference",
    "epoch_line",
    "fit",
]
