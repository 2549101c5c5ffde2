"""L5 training: the one loop (``fit``) and what it is made of.

``fit`` runs a list of ``Stage`` s (method + epochs + optimizer + schedule) over one
Classifier: autocast, gradient scaling and clipping, per-step LR schedules, EMA, DDP,
validation under the shared threat model, ``metrics.jsonl``, and complete, atomic,
weights-only checkpoints that resume exactly. The run schema and the stage planner live
in ``afa.training.plan`` (import it from there).
"""

from afa.training.checkpoint import (
    FORMAT,
    PAYLOAD_KEYS,
    eval_state_dict,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_all,
    set_rng_state,
)
from afa.training.distributed import DistContext, wrap_ddp
from afa.training.ema import ModelEMA
from afa.training.logging import MetricsWriter, read_metrics
from afa.training.loop import RESUME_KEYS, Stage, TrainState, fit
from afa.training.optim import build_optimizer
from afa.training.options import EMAConfig, OptimConfig, ScheduleConfig, TrainConfig
from afa.training.precision import autocast_context, make_grad_scaler
from afa.training.schedules import LRSchedule, lr_at
from afa.training.validate import validate

__all__ = [
    "FORMAT",
    "PAYLOAD_KEYS",
    "RESUME_KEYS",
    "DistContext",
    "EMAConfig",
    "LRSchedule",
    "MetricsWriter",
    "ModelEMA",
    "OptimConfig",
    "ScheduleConfig",
    "Stage",
    "TrainConfig",
    "TrainState",
    "autocast_context",
    "build_optimizer",
    "eval_state_dict",
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
