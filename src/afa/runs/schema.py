"""The run schema: one strict, typed :class:`RunConfig` for everything a run needs.

A run config is YAML -> ``key=value`` overrides -> :class:`RunConfig`. It is the only
object that sees the whole configuration: the planner (``afa.training.plan``) hands each
builder its own piece (the data its ``DataConfig``, the model its ``ModelConfig``, every
method the one shared ``ThreatModel`` and its own options), and evaluation, analysis and
the report read a trained run's config through this module, never through the trainer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from afa.attacks.threat import ThreatModel
from afa.config import apply_overrides, from_dict, load_yaml, to_dict
from afa.data import DataConfig
from afa.errors import ConfigError
from afa.methods import METHODS, method_config_class
from afa.runs.options import OptimConfig, ScheduleConfig, TrainConfig

#: Config entries (dotted prefixes) that must match for a resumed run: what defines the
#: data, the model, the objective and the optimisation. Logging, validation frequency,
#: ``compile`` and the like may change between the interrupted run and its resumption.
RESUME_KEYS: tuple[str, ...] = (
    "data",
    "model",
    "method",
    "threat",
    "classifier",
    "train.epochs",
    "train.batch_size",
    "train.optimizer",
    "train.schedule",
    "train.grad_clip",
    "train.seed",
    "train.precision",
    "train.ema",
    "train.sync_bn",
)


@dataclass(frozen=True)
class ModelConfig:
    """A registered architecture and its keyword options (``width``, ``activation`` ...).

    ``dual_bn``: every batch norm layer keeps a clean and an adversarial branch (statistics
    and affine parameters, :mod:`afa.models.dual_bn`; ACL's and DynACL's dual BN).
    ``bn_branch``: with ``dual_bn``, the branch of every forward that does not name one:
    validation, the classifier stage, ``afa eval`` and ``afa analyze`` (``adv``: ACL and DynACL
    fine-tune and evaluate the adversarial branch); training methods name theirs.
    """

    name: str = "cnn"
    options: dict[str, Any] = field(default_factory=dict)
    dual_bn: bool = False
    bn_branch: Literal["clean", "adv"] = "clean"

    def __post_init__(self) -> None:
        if self.bn_branch not in ("clean", "adv"):
            raise ConfigError(f"model.bn_branch: expected 'clean' or 'adv', got {self.bn_branch!r}")
        if self.bn_branch != "clean" and not self.dual_bn:
            raise ConfigError(
                f"model.bn_branch: {self.bn_branch!r} needs model.dual_bn: true (one BN otherwise)"
            )


@dataclass(frozen=True)
class ClassifierConfig:
    """Stage 2 of a pre-training method (``afa``, ``supcon``).

    Attributes:
        protocol: ``linear`` (frozen encoder, clean CE), ``linear-adv`` (frozen encoder,
            PGD-CE adversaries), ``finetune`` (the whole network with ``finetune_method``).
        finetune_method: ``trades`` or ``pgd-at`` for ``finetune``.
        beta: TRADES β for ``finetune_method: trades``.
    """

    protocol: Literal["linear", "linear-adv", "finetune"] = "linear"
    finetune_method: Literal["pgd-at", "trades"] = "trades"
    beta: float = 6.0
    epochs: int = 10
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    grad_clip: float | None = None


@dataclass(frozen=True)
class EvalConfig:
    """Defaults of ``afa eval`` for this run (each can be changed on its command line)."""

    n_examples: int | None = None
    batch_size: int = 256
    attacks: list[str] = field(default_factory=lambda: ["pgd", "cw", "autoattack"])
    pgd_steps: int = 20
    cw_steps: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        # Checked when the run is configured, not when `afa eval` meets them after training.
        # The attack names are checked by `afa train` against the evaluation registry (L6).
        if self.n_examples is not None and self.n_examples < 1:
            raise ConfigError(f"eval.n_examples: expected >= 1 or null, got {self.n_examples!r}")
        for key in ("batch_size", "pgd_steps", "cw_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"eval.{key}: expected >= 1, got {getattr(self, key)!r}")
        if self.seed < 0:
            raise ConfigError(f"eval.seed: expected >= 0, got {self.seed!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; written to ``RUN_DIR/config.yaml`` before step 0."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    threat: ThreatModel = field(default_factory=ThreatModel)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "standard"})
    train: TrainConfig = field(default_factory=TrainConfig)
    classifier: ClassifierConfig | None = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: str = "runs"
    name: str | None = None
    device: str = "auto"

    @property
    def method_name(self) -> str:
        return str(self.method["name"])

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / (self.name or f"{self.data.name}-{self.method_name}")


def parse_run_config(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Validate a raw config (after ``key=value`` overrides) into a :class:`RunConfig`.

    The method's options are checked against that method's own schema and stored fully
    resolved (every default written out), so the saved config says exactly what ran.
    """
    cfg = from_dict(RunConfig, apply_overrides(raw, list(overrides)))
    method = dict(cfg.method)
    if "name" not in method:
        raise ConfigError("missing key 'method.name'")
    name = str(method.pop("name"))
    cls = METHODS.get(name)
    options = from_dict(method_config_class(cls), method, "method")
    resolved = {"name": name, **to_dict(options)}
    classifier = cfg.classifier
    if cls.pretraining and classifier is None:
        classifier = ClassifierConfig()
    if not cls.pretraining and classifier is not None:
        pretraining = ", ".join(n for n in METHODS if METHODS.get(n).pretraining)
        raise ConfigError(
            f"classifier: method {name!r} trains the classifier end to end; "
            f"the 'classifier' section is only for pre-training methods ({pretraining})"
        )
    return dataclasses.replace(cfg, method=resolved, classifier=classifier)


def load_run_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML recipe, apply overrides, validate."""
    return parse_run_config(load_yaml(path), overrides)


def adversarial_epochs(cfg: RunConfig) -> int:
    """Epochs that craft adversaries: the budget on which methods are compared fairly."""
    n = 0 if METHODS.get(cfg.method_name).clean_training else cfg.train.epochs
    if cfg.classifier is not None and cfg.classifier.protocol != "linear":
        n += cfg.classifier.epochs
    return n


__all__ = [
    "RESUME_KEYS",
    "ClassifierConfig",
    "EvalConfig",
    "ModelConfig",
    "RunConfig",
    "adversarial_epochs",
    "load_run_config",
    "parse_run_config",
]
