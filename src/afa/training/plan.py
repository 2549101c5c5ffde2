"""The run schema and the stage planner.

A run config is YAML -> ``key=value`` overrides -> :class:`RunConfig` (strict, typed).
It is the only object that sees the whole configuration: :func:`build_stages` hands each
builder its own piece (the data its ``DataConfig``, the model its ``ModelConfig``, every
method the one shared ``ThreatModel`` and its own options).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from afa.attacks.threat import ThreatModel
from afa.config import apply_overrides, from_dict, load_yaml, to_dict
from afa.data import DataConfig, DatasetInfo, Splits, build_train_loader, load_splits, make_augment
from afa.errors import ConfigError
from afa.methods import METHODS, Method, method_config_class
from afa.models import Classifier, create_model
from afa.training.checkpoint import load_checkpoint
from afa.training.distributed import DistContext
from afa.training.loop import Stage, TrainState, fit
from afa.training.options import OptimConfig, ScheduleConfig, TrainConfig

log = logging.getLogger("afa")


@dataclass(frozen=True)
class ModelConfig:
    """A registered architecture and its keyword options (``width``, ``activation`` ...)."""

    name: str = "cnn"
    options: dict[str, Any] = field(default_factory=dict)


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


def build_model(cfg: RunConfig, info: DatasetInfo) -> Classifier:
    """The run's architecture for this dataset (normalisation from the dataset)."""
    c, h, _ = info.image_shape
    return create_model(
        cfg.model.name,
        info.num_classes,
        in_channels=c,
        image_size=h,
        mean=info.mean,
        std=info.std,
        **cfg.model.options,
    )


def build_method(cfg: RunConfig, model: Classifier) -> Method:
    """The stage-1 (or only) method with its own options and the shared threat model."""
    options = dict(cfg.method)
    cls = METHODS.get(str(options.pop("name")))
    return cls(model, cfg.threat, from_dict(method_config_class(cls), options, "method"))


def build_stages(cfg: RunConfig, model: Classifier) -> list[Stage]:
    """One stage for end-to-end methods; pre-training + classifier for ``afa``/``supcon``.

    The method says whether it pre-trains, which classifier stage follows and which
    validation metric selects ``best.pt`` in each stage.
    """
    method = build_method(cfg, model)
    t = cfg.train
    first = Stage(
        name="pretrain" if method.pretraining else "train",
        method=method,
        epochs=t.epochs,
        optimizer=t.optimizer,
        schedule=t.schedule,
        grad_clip=t.grad_clip,
        select_by=method.selection_metric(),  # type: ignore[arg-type]
    )
    if not method.pretraining:
        return [first]
    c = cfg.classifier or ClassifierConfig()
    second = method.classifier_method(c.protocol, c.finetune_method, c.beta)
    return [
        first,
        Stage(
            name="classifier",
            method=second,
            epochs=c.epochs,
            optimizer=c.optimizer,
            schedule=c.schedule,
            grad_clip=c.grad_clip,
            select_by=second.selection_metric(after=[method]),  # type: ignore[arg-type]
        ),
    ]


def resolve_device(name: str, dist: DistContext | None = None) -> torch.device:
    """``auto``: the process's CUDA device when one is visible, else the CPU."""
    if dist is not None and dist.enabled:
        return dist.device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}"
        ) from None


def write_config(cfg: RunConfig, run_dir: Path) -> Path:
    """Write the resolved config to ``run_dir/config.yaml`` (atomically)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)
    return path


def train_run(
    cfg: RunConfig,
    *,
    resume: bool = False,
    dist: DistContext | None = None,
    splits: Splits | None = None,
) -> TrainState:
    """Train the run described by ``cfg`` into ``cfg.run_dir`` (resuming from ``last.pt``)."""
    own_dist = dist is None
    dist = dist or DistContext.from_env()
    try:
        return _train(cfg, resume=resume, dist=dist, splits=splits)
    finally:
        if own_dist:
            dist.cleanup()


def _train(cfg: RunConfig, *, resume: bool, dist: DistContext, splits: Splits | None) -> TrainState:
    device = resolve_device(cfg.device, dist)
    torch.manual_seed(cfg.train.seed)
    splits = splits or load_splits(cfg.data)
    model = build_model(cfg, splits.info).to(device)
    stages = build_stages(cfg, model)
    if splits.info.augment == "contrastive":
        # The strong augmentation is for pre-training; the classifier stage (SLF / ALF / AFF)
        # trains on crop+flip, as ACL's and DynACL's fine-tuning does.
        for stage in stages[1:]:
            stage.augment = make_augment(
                dataclasses.replace(splits.info, augment="crop-flip"), cfg.data.crop_padding
            )
    loader = build_train_loader(
        splits,
        cfg.data,
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    run_dir = cfg.run_dir
    if dist.is_main:
        write_config(cfg, run_dir)
    val = None
    if len(splits.val):
        val = (torch.from_numpy(splits.val.images[:]), torch.from_numpy(splits.val.labels[:]))
    return fit(
        stages,
        loader,
        run_dir,
        val=val,
        threat=cfg.threat,
        augment=make_augment(splits.info, cfg.data.crop_padding, cfg.data.contrastive),
        device=device,
        train=cfg.train,
        config=to_dict(cfg),
        dist=dist,
        resume=resume,
        extra={"dataset_info": to_dict(splits.info)},
    )


def load_trained(
    path: str | Path, *, which: Literal["best", "last"] = "best", ema: bool | None = None
) -> tuple[Classifier, RunConfig, Path]:
    """Rebuild a trained classifier from a run directory or a bare checkpoint file.

    The architecture comes from the config stored in the checkpoint, so a checkpoint
    file alone is enough. ``ema``: use the EMA weights when present (default: when the
    run's config says evaluation uses them).

    Returns:
        (model on CPU in eval mode, the run's config, the checkpoint path).
    """
    path = Path(path)
    ckpt_path = path / f"{which}.pt" if path.is_dir() else path
    ckpt = load_checkpoint(ckpt_path)
    cfg = parse_run_config(ckpt["config"])
    info = dataset_info_from_checkpoint(ckpt, cfg)
    model = build_model(cfg, info)
    use_ema = cfg.train.ema.use_for_eval if ema is None else ema
    state = ckpt["ema"] if use_ema and ckpt.get("ema") else ckpt["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"{ckpt_path}: weights do not fit model {cfg.model.name!r}: {exc}"
        ) from None
    return model.eval(), cfg, ckpt_path


def dataset_info_from_checkpoint(ckpt: dict[str, Any], cfg: RunConfig) -> DatasetInfo:
    """Dataset facts saved with the run (so a bare checkpoint needs no data files)."""
    info = ckpt.get("dataset_info")
    if info is None:
        return load_splits(cfg.data).info
    return DatasetInfo(
        name=info["name"],
        num_classes=int(info["num_classes"]),
        image_shape=tuple(info["image_shape"]),
        mean=tuple(info["mean"]),
        std=tuple(info["std"]),
        class_names=tuple(info["class_names"]),
        augment=info["augment"],
    )


def adversarial_epochs(cfg: RunConfig) -> int:
    """Epochs that craft adversaries: the budget on which methods are compared fairly."""
    n = 0 if METHODS.get(cfg.method_name).clean_training else cfg.train.epochs
    if cfg.classifier is not None and cfg.classifier.protocol != "linear":
        n += cfg.classifier.epochs
    return n
