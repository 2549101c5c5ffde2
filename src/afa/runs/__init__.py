"""Runs: the run schema, the run directory and loading a trained run.

This layer sits after the methods and before training (as torchtune keeps recipes apart
from components): the trainer (``afa.training``) writes runs described here, and
evaluation, analysis and the report read them from here, never from the trainer.

* :mod:`~afa.runs.schema`: :class:`RunConfig` and its sections, parsing, the resume keys,
  the adversarial-epoch budget;
* :mod:`~afa.runs.options`: the training options (optimizer, schedule, EMA, loop);
* :mod:`~afa.runs.layout`: the run directory's files, ``write_config``;
* :mod:`~afa.runs.checkpoint`: the checkpoint payload and its safe loading;
* :mod:`~afa.runs.load`: the device resolver, the architecture, ``load_trained``.
"""

from afa.runs.checkpoint import (
    FORMAT,
    PAYLOAD_KEYS,
    CheckpointIdentity,
    checkpoint_moved_on,
    load_checkpoint,
    load_checkpoint_identified,
    load_weights,
)
from afa.runs.layout import RunDir, Which, checkpoint_path, write_config
from afa.runs.load import (
    TrainedRun,
    build_model,
    dataset_info_from_checkpoint,
    load_trained,
    load_trained_run,
    resolve_device,
)
from afa.runs.options import EMAConfig, OptimConfig, Precision, ScheduleConfig, TrainConfig
from afa.runs.schema import (
    PROTOCOL_ALIASES,
    PROTOCOL_DEFAULTS,
    PROTOCOLS,
    RESUME_KEYS,
    ClassifierConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    adversarial_epochs,
    canonical_protocol,
    load_run_config,
    parse_run_config,
)

__all__ = [
    "FORMAT",
    "PAYLOAD_KEYS",
    "PROTOCOLS",
    "PROTOCOL_ALIASES",
    "PROTOCOL_DEFAULTS",
    "RESUME_KEYS",
    "CheckpointIdentity",
    "ClassifierConfig",
    "EMAConfig",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "Precision",
    "RunConfig",
    "RunDir",
    "ScheduleConfig",
    "TrainConfig",
    "TrainedRun",
    "Which",
    "adversarial_epochs",
    "build_model",
    "canonical_protocol",
    "checkpoint_moved_on",
    "checkpoint_path",
    "dataset_info_from_checkpoint",
    "load_checkpoint",
    "load_checkpoint_identified",
    "load_run_config",
    "load_trained",
    "load_trained_run",
    "load_weights",
    "parse_run_config",
    "resolve_device",
    "write_config",
]
