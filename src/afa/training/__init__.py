"""L6 training: the one loop (``fit``) and what it is made of.

``fit`` runs a list of ``Stage`` s (method + epochs + optimizer + schedule) over one
Classifier: autocast, gradient scaling and clipping, per-step LR schedules, EMA, DDP,
validation under the shared threat model, ``metrics.jsonl``, and complete, atomic,
weights-only checkpoints that resume exactly. The stage planner and ``train_run`` live
in ``afa.training.plan`` (import it from there); the run schema, the run directory and
loading a trained run in :mod:`afa.runs` (the training options are re-exported here).
"""

from afa.runs import RESUME_KEYS, EMAConfig, OptimConfig, ScheduleConfig, TrainConfig
from afa.training.checkpoint import (
    FORMAT,
    PAYLOAD_KEYS,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_all,
    set_rng_state,
)
from afa.training.distributed import DistContext, wrap_ddp
from afa.training.ema import ModelEMA
from afa.training.logging import MetricsWriter, read_metrics
from afa.training.loop import LoopOptions, RunSpec, Stage, TrainState, fit
from afa.training.optim import build_optimizer
from afa.training.precision import autocast_context, make_grad_scaler
from afa.training.schedules import LRSchedule, lr_at
from afa.training.validate import validate

__all__ = [
    "FORMAT",
    "PAYLOAD_KEYS",
    "RESUME_KEYS",
    "RunSpec",
    "DistContext",
    "EMAConfig",
    "LRSchedule",
    "LoopOptions",
    "MetricsWriter",
    "ModelEMA",
    "OptimConfig",
    "ScheduleConfig",
    "Stage",
    "TrainConfig",
    "TrainState",
    "autocast_context",
    "build_optimizer",
    "fit",
    "load_checkpoint",
    "lr_at",
    "make_grad_scaler",
    "read_metrics",
    "rng_state",
    "save_checkpoint",
    "seed_all",
    "set_rng_state",
    "validate",
    "wrap_ddp",
]
