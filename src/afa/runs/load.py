"""Loading a trained run: its device, its architecture, its evaluated weights.

Evaluation, analysis and the report rebuild a trained classifier from here, with the
same architecture and the same "which weights" rule (:meth:`EMAConfig.evaluated`) as
the training loop's validation, without importing the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from afa.data import DatasetInfo, load_splits
from afa.errors import ConfigError, NonFiniteError
from afa.models import Classifier, create_model
from afa.models.dual_bn import set_bn_branch
from afa.runs.checkpoint import CheckpointIdentity, load_checkpoint_identified, load_weights
from afa.runs.layout import Which, checkpoint_path
from afa.runs.schema import RunConfig, parse_run_config


def resolve_device(name: str | torch.device) -> torch.device:
    """The one device resolver: ``auto`` is CUDA when visible, else the CPU.

    Raises:
        ConfigError: a name torch does not know, or CUDA asked for but unavailable.
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(
                f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}"
            ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} was asked for but CUDA is not available")
    return device


def build_model(cfg: RunConfig, info: DatasetInfo) -> Classifier:
    """The run's architecture for this dataset (normalisation from the dataset)."""
    c, h, _ = info.image_shape
    model = create_model(
        cfg.model.name,
        info.num_classes,
        in_channels=c,
        image_size=h,
        mean=info.mean,
        std=info.std,
        dual_bn=cfg.model.dual_bn,
        **cfg.model.options,
    )
    if cfg.model.dual_bn:
        set_bn_branch(model, cfg.model.bn_branch)
    return model


@dataclass(frozen=True)
class TrainedRun:
    """A trained classifier with its run's config, checkpoint path and dataset facts."""

    model: Classifier  # on the CPU, in eval mode
    config: RunConfig
    checkpoint: Path
    info: DatasetInfo  # the data it was trained on: input shape, classes, statistics
    identity: CheckpointIdentity | None = None  # epoch, step, sha256 of the file loaded


def load_trained(
    path: str | Path, *, which: Which = "best", ema: bool | None = None
) -> tuple[Classifier, RunConfig, Path]:
    """Rebuild a trained classifier from a run directory or a bare checkpoint file.

    The architecture comes from the config stored in the checkpoint, so a checkpoint
    file alone is enough. The weights are the EMA's when
    ``cfg.train.ema.evaluated(ema)`` (default: what the run validated) and the
    checkpoint holds them, else the model's.

    Returns:
        (model on CPU in eval mode, the run's config, the checkpoint path).
    """
    run = load_trained_run(path, which=which, ema=ema)
    return run.model, run.config, run.checkpoint


def load_trained_run(
    path: str | Path, *, which: Which = "best", ema: bool | None = None
) -> TrainedRun:
    """:func:`load_trained`, with the facts of the data the model was trained on (what a
    test set must match), and the identity (epoch, step, sha256) of the file loaded.

    Raises:
        CheckpointError: an unreadable or incomplete checkpoint (naming the file).
        NonFiniteError: a NaN or infinite weight or buffer (naming the file and key): such
            a model would score chance accuracy instead of failing.
    """
    ckpt_path = checkpoint_path(path, which)
    ckpt, identity = load_checkpoint_identified(ckpt_path)
    cfg = parse_run_config(ckpt["config"])
    info = dataset_info_from_checkpoint(ckpt, cfg)
    model = build_model(cfg, info)
    use_ema = cfg.train.ema.evaluated(ema) and ckpt.get("ema") is not None
    load_weights(model, ckpt["ema"] if use_ema else ckpt["model"], str(ckpt_path))
    check_finite(model.state_dict(), ckpt_path, "ema" if use_ema else "model")
    return TrainedRun(model.eval(), cfg, ckpt_path, info, identity)


def check_finite(state: dict[str, torch.Tensor], path: Path, part: str = "model") -> None:
    """Refuse weights with a NaN or infinite entry, naming the file and the first such key.

    Raises:
        NonFiniteError: ``<path>: <part> weight '<key>' has N NaN/inf of M values``.
    """
    for key, value in state.items():
        if not torch.is_tensor(value) or not value.is_floating_point():
            continue
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise NonFiniteError(
                f"{path}: {part} weight {key!r} has {bad} NaN/inf of {value.numel()} values "
                "(a diverged or corrupted checkpoint); evaluate an earlier one"
            )


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


__all__ = [
    "TrainedRun",
    "build_model",
    "check_finite",
    "dataset_info_from_checkpoint",
    "load_trained",
    "load_trained_run",
    "resolve_device",
]
