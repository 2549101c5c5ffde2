"""Loading a trained run: its device, its architecture, its evaluated weights.

Evaluation, analysis and the report rebuild a trained classifier from here, with the
same architecture and the same "which weights" rule (:meth:`EMAConfig.evaluated`) as
the training loop's validation, without importing the trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from afa.data import DatasetInfo, load_splits
from afa.errors import ConfigError
from afa.models import Classifier, create_model
from afa.models.dual_bn import set_bn_branch
from afa.runs.checkpoint import load_checkpoint
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
    ckpt_path = checkpoint_path(path, which)
    ckpt = load_checkpoint(ckpt_path)
    cfg = parse_run_config(ckpt["config"])
    model = build_model(cfg, dataset_info_from_checkpoint(ckpt, cfg))
    use_ema = cfg.train.ema.evaluated(ema) and ckpt.get("ema") is not None
    try:
        model.load_state_dict(ckpt["ema"] if use_ema else ckpt["model"])
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


__all__ = ["build_model", "dataset_info_from_checkpoint", "load_trained", "resolve_device"]
