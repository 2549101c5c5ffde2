"""The run schema: one strict, typed :class:`RunConfig` for everything a run needs.

A run config is YAML -> ``key=value`` overrides -> :class:`RunConfig`. It is the only
object that sees the whole configuration: the planner (``afa.training.plan``) hands each
builder its own piece (the data its ``DataConfig``, the model its ``ModelConfig``, every
method the one shared ``ThreatModel`` and its own options), and evaluation, analysis and
the report read a trained run's config through this module, never through the trainer.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from afa._io import check_file_name
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


#: The protocols of the robust self-supervised benchmark (Fan et al. 2021's names, used by
#: GodXuxilie/RobustSSL_Benchmark): SLF (standard linear fine-tuning), ALF (adversarial
#: linear fine-tuning), AFF (adversarial full fine-tuning).
PROTOCOLS: tuple[str, ...] = ("slf", "alf", "aff")

#: Earlier names of the protocols, still accepted (and saved as the new name), so older
#: recipes and run configs load. Their one home: a run config is made canonical when it is
#: parsed, so the code after it sees only ``slf``, ``alf`` and ``aff``.
PROTOCOL_ALIASES: dict[str, str] = {"linear": "slf", "linear-adv": "alf", "finetune": "aff"}

#: Each protocol's defaults where the config does not set a key, from the benchmark's
#: ``Finetuning_Methods/Vanilla_Finetuning`` (commit 19dc714): 25 epochs, SGD momentum 0.9,
#: weight decay 2e-4 (``vanilla_finetuning.py`` L34-L40); SLF / ALF batch 512, lr 0.01, lr x0.1
#: at epochs 10 and 20 (``utils.py`` ``setup_hyperparameter`` L806-L819, CIFAR-10; its CIFAR-100
#: lr is 0.05, L810-L812: set ``classifier.optimizer.lr``); AFF batch
#: 128, lr 0.1, x0.1 at epochs 15 and 20, TRADES beta 6 (L843-L849; ``trades_loss`` L560).
#: ACL's own AFF row there runs 100 epochs (x0.1 at 40 and 60, L820-L824); set
#: ``classifier.epochs`` for it. The train-time attack is the run's threat model (the
#: benchmark's PGD-10, 8/255, step 2/255: ``vanilla_finetuning.py`` L45-L50).
#: ``batch_size`` applies to a classifier-only run (``classifier.encoder``); the classifier
#: stage of a pre-training run shares that run's loader.
PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    "slf": {
        "epochs": 25,
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 2e-4},
        "schedule": {"name": "piecewise", "milestones": [0.4, 0.8], "gamma": 0.1},
        "batch_size": 512,
    },
    "alf": {
        "epochs": 25,
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 2e-4},
        "schedule": {"name": "piecewise", "milestones": [0.4, 0.8], "gamma": 0.1},
        "batch_size": 512,
    },
    "aff": {
        "epochs": 25,
        "finetune_method": "trades",
        "beta": 6.0,
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4},
        "schedule": {"name": "piecewise", "milestones": [0.6, 0.8], "gamma": 0.1},
        "batch_size": 128,
    },
}


def canonical_protocol(name: str) -> str:
    """``slf`` / ``alf`` / ``aff`` for a protocol name or one of its earlier aliases."""
    return PROTOCOL_ALIASES.get(name, name)


def _merge(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_classifier_section(raw: Any) -> Any:
    """The raw ``classifier`` section with its protocol's defaults filled in.

    The protocol's name is made canonical (an alias becomes ``slf`` / ``alf`` / ``aff``);
    every key the section does not set, nested ones included (an ``optimizer`` block that
    sets only ``lr`` keeps the protocol's weight decay), takes the protocol's default from
    :data:`PROTOCOL_DEFAULTS`. ``batch_size`` is filled only for a classifier-only run.
    Anything not a mapping is returned as it is (the schema reports it).
    """
    if not isinstance(raw, dict):
        return raw
    protocol = raw.get("protocol", "slf")
    if not isinstance(protocol, str):
        return raw
    protocol = canonical_protocol(protocol)
    defaults = dict(PROTOCOL_DEFAULTS.get(protocol, {}))
    if raw.get("encoder") is None:
        defaults.pop("batch_size", None)
    return _merge(defaults, {**raw, "protocol": protocol})


@dataclass(frozen=True)
class ClassifierConfig:
    """Stage 2 of a pre-training method (``afa``, ``supcon``, ``acl``, ``dynacl``).

    A config section is completed by :func:`resolve_classifier_section` with its protocol's
    defaults (:data:`PROTOCOL_DEFAULTS`); the dataclass defaults here are SLF's.

    Attributes:
        protocol: ``slf`` (frozen encoder, clean CE), ``alf`` (frozen encoder, PGD-CE
            adversaries), ``aff`` (the whole network with ``finetune_method``); the earlier
            names ``linear``, ``linear-adv``, ``finetune`` are accepted for them.
        finetune_method: ``trades`` or ``pgd-at`` for ``aff``.
        beta: TRADES β for ``finetune_method: trades``.
        batch_size: the batch of a classifier-only run (``encoder`` set); None: the run's
            ``train.batch_size`` (the only value a classifier stage after pre-training in
            the same run can have: both stages share one loader).
        encoder: a pre-trained run's checkpoint this run starts from (written by
            ``afa finetune``): the run trains the classifier stage only, its budget still
            counting the pre-training epochs of ``train``; None: pre-train first.
    """

    protocol: Literal["slf", "alf", "aff"] = "slf"
    finetune_method: Literal["pgd-at", "trades"] = "trades"
    beta: float = 6.0
    epochs: int = 25
    optimizer: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.01, weight_decay=2e-4))
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(milestones=(0.4, 0.8)))
    grad_clip: float | None = None
    batch_size: int | None = None
    encoder: str | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"classifier.epochs: expected >= 1, got {self.epochs!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(
                f"classifier.batch_size: expected >= 1 or null, got {self.batch_size!r}"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Defaults of ``afa eval`` for this run (each can be changed on its command line)."""

    n_examples: int | None = None
    batch_size: int = 256
    attacks: list[str] = field(default_factory=lambda: ["pgd", "cw", "autoattack"])
    pgd_steps: int = 20
    cw_steps: int = 30
    seed: int = 0
    attack_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each evaluation attack's own settings, by attack and key (``{<attack>: {<key>:
    value}}``); an attack not named here, or a key left out, keeps the attack's default."""

    def __post_init__(self) -> None:
        # Checked when the run is configured, not when `afa eval` meets them after training.
        # The attack names and attack_options are checked by `afa train` against the
        # evaluation registry (L7).
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

    def __post_init__(self) -> None:
        if self.name is not None:
            check_file_name(self.name, "name")  # the run directory: one name in out_dir
        t = self.threat
        if t.step_size == 0 and t.steps > 0 and t.eps > 0:
            # Every step would stay at its random start: an adversary that never attacks,
            # in training, validation and `afa eval` alike. (A ThreatModel in code may do
            # this on purpose: random noise in the ball.)
            raise ConfigError(
                f"threat.step_size: expected > 0 with threat.steps={t.steps} (a step of 0 "
                "never moves the attack), got 0; for no attack set threat.steps=0"
            )

    @property
    def method_name(self) -> str:
        return str(self.method["name"])

    @functools.cached_property
    def method_options(self) -> Any:
        """The method's options as its own typed ``Config``, what the planner builds it with.

        :func:`parse_run_config` keeps the object it checked, so the options are parsed
        once; a ``RunConfig`` built otherwise (in code, or by ``dataclasses.replace``)
        parses ``method`` here on first use. Not a field: ``method`` (the plain,
        fully resolved mapping) is what ``config.yaml`` holds and what is compared.
        """
        return _parse_method_options(self.method)[1]

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / (self.name or f"{self.data.name}-{self.method_name}")


def _parse_method_options(method: Mapping[str, Any]) -> tuple[str, Any]:
    """The ``method`` section's name and its options parsed by that method's ``Config``.

    Raises:
        ConfigError: no ``method.name``, an unknown method, or an option its ``Config``
            refuses (the key named).
    """
    options = dict(method)
    if "name" not in options:
        raise ConfigError("missing key 'method.name'")
    name = str(options.pop("name"))
    return name, from_dict(method_config_class(METHODS.get(name)), options, "method")


def parse_run_config(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Validate a raw config (after ``key=value`` overrides) into a :class:`RunConfig`.

    The method's options are checked against that method's own schema and stored fully
    resolved (every default written out), so the saved config says exactly what ran; the
    typed options object is kept as :attr:`RunConfig.method_options`. A protocol's earlier
    name becomes its canonical one (:data:`PROTOCOL_ALIASES`).
    """
    raw = apply_overrides(raw, list(overrides))
    if isinstance(raw, dict) and "classifier" in raw:
        raw = {**raw, "classifier": resolve_classifier_section(raw["classifier"])}
    cfg = from_dict(RunConfig, raw)
    name, options = _parse_method_options(cfg.method)
    cls = METHODS.get(name)
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
    if (
        classifier is not None
        and classifier.encoder is None
        and classifier.batch_size not in (None, cfg.train.batch_size)
    ):
        raise ConfigError(
            f"classifier.batch_size: {classifier.batch_size} differs from train.batch_size "
            f"{cfg.train.batch_size}; the classifier stage after pre-training shares its "
            "loader (a classifier-only run, `afa finetune`, has its own)"
        )
    out = dataclasses.replace(cfg, method=resolved, classifier=classifier)
    # A frozen dataclass: fill the cache of ``method_options`` with the object checked above.
    object.__setattr__(out, "method_options", options)
    return out


def load_run_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML recipe, apply overrides, validate."""
    return parse_run_config(load_yaml(path), overrides)


def adversarial_epochs(cfg: RunConfig) -> int:
    """Epochs that craft adversaries: the budget on which methods are compared fairly."""
    n = 0 if METHODS.get(cfg.method_name).clean_training else cfg.train.epochs
    if cfg.classifier is not None and cfg.classifier.protocol != "slf":
        n += cfg.classifier.epochs
    return n


__all__ = [
    "PROTOCOLS",
    "PROTOCOL_ALIASES",
    "PROTOCOL_DEFAULTS",
    "RESUME_KEYS",
    "ClassifierConfig",
    "EvalConfig",
    "ModelConfig",
    "RunConfig",
    "adversarial_epochs",
    "canonical_protocol",
    "load_run_config",
    "parse_run_config",
    "resolve_classifier_section",
]
