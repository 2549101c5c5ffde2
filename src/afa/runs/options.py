"""Typed training options: optimizer, LR schedule, EMA, precision and the loop's settings.

Part of the run schema (``RunConfig.train``); ``afa.training`` builds from them.

Each is a frozen dataclass built strictly by ``afa.config.from_dict`` (unknown keys name
the closest match; wrong types name the key). Range checks raise ``ValueError``, which
``from_dict`` reports as a ``ConfigError`` prefixed with the dotted key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer of one training stage.

    Weight decay applies to every trainable parameter, BN and biases included, as in
    Rice et al. 2020 ("Overfitting in adversarially robust deep learning") and the
    TRADES/MART reference code; there is no parameter-group exclusion.

    Attributes:
        name: ``"sgd"`` (momentum SGD), ``"lars"`` (momentum SGD with layer-wise adaptive
            rates, ACL's and DynACL's pre-training optimizer) or ``"adamw"``.
        lr: peak learning rate (the schedule multiplies or replaces it per step).
        momentum: SGD momentum.
        nesterov: Nesterov momentum for SGD. Off by default: Madry et al., Rice et al.,
            TRADES and MART all train with plain momentum SGD.
        weight_decay: L2 penalty (SGD, coupled) or decoupled decay (AdamW).
        betas: AdamW's (beta1, beta2).
        lars_eta: LARS's trust coefficient (1e-3, You et al. 2017 and ACL's code).
    """

    name: Literal["sgd", "lars", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: tuple[float, ...] = (0.9, 0.999)  # two values (checked below)
    lars_eta: float = 1e-3

    def __post_init__(self) -> None:
        if self.name not in ("sgd", "lars", "adamw"):
            raise ValueError(f"name: expected 'sgd', 'lars' or 'adamw', got {self.name!r}")
        if not self.lars_eta > 0:
            raise ValueError(f"lars_eta: expected > 0, got {self.lars_eta!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum: expected in [0, 1), got {self.momentum!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: needs momentum > 0")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: expected >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: expected two values in [0, 1), got {self.betas!r}")


@dataclass(frozen=True)
class ScheduleConfig:
    """A per-step learning-rate schedule over one stage.

    Attributes:
        name: ``"piecewise"`` (multiply by ``gamma`` at each milestone), ``"cosine"``
            (from ``lr`` down to ``min_lr`` after the warm-up) or ``"constant"``.
        warmup_epochs: linear warm-up from 0 to ``lr`` over this many epochs (may be
            fractional; counted in steps).
        milestones: piecewise decay points as FRACTIONS of the stage's training
            (0.5 = half-way), so a recipe survives a change of ``epochs``. The default
            (0.5, 0.75) is Rice et al. 2020's x0.1 decay at 50% and 75% of training.
        gamma: piecewise decay factor.
        min_lr: the cosine schedule's final value.
    """

    name: Literal["piecewise", "cosine", "constant"] = "piecewise"
    warmup_epochs: float = 0.0
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in ("piecewise", "cosine", "constant"):
            raise ValueError(
                f"name: expected 'piecewise', 'cosine' or 'constant', got {self.name!r}"
            )
        if not self.warmup_epochs >= 0:
            raise ValueError(f"warmup_epochs: expected >= 0, got {self.warmup_epochs!r}")
        if any(not 0 < m <= 1 for m in self.milestones):
            raise ValueError(
                f"milestones: expected fractions of training in (0, 1], got {list(self.milestones)}"
            )
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones: expected increasing values, got {list(self.milestones)}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma: expected in (0, 1], got {self.gamma!r}")
        if not self.min_lr >= 0:
            raise ValueError(f"min_lr: expected >= 0, got {self.min_lr!r}")


@dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the classifier's weights.

    Attributes:
        decay: per-step decay; 0 turns the EMA off. Gowal et al. 2020 and Wang et al.
            2023 use 0.995 (with batch 512/1024) and up to 0.9999 for long runs.
        warmup: use ``min(decay, (1 + t) / (10 + t))`` at update ``t`` (Gowal et al.;
            Wang et al.'s code), so early averages are not dominated by the random init.
        use_for_eval: validate (and select ``best.pt``) with the averaged weights.
    """

    decay: float = 0.0
    warmup: bool = True
    use_for_eval: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay: expected in [0, 1) (0 = off), got {self.decay!r}")

    @property
    def enabled(self) -> bool:
        return self.decay > 0

    def evaluated(self, ema: bool | None = None) -> bool:
        """Whether validation and evaluation read the EMA weights: the one rule.

        ``ema`` is a caller's explicit choice (``afa eval --ema`` / ``--no-ema``); None
        follows ``use_for_eval``. Never when the EMA is off (there are no EMA weights).
        """
        return self.enabled and (self.use_for_eval if ema is None else ema)


@dataclass(frozen=True)
class TrainConfig:
    """How the loop runs. ``epochs``, ``optimizer``, ``schedule`` and ``grad_clip`` are
    the defaults the planner gives each stage; the rest apply to the whole run.

    Attributes:
        epochs: training epochs (of the single stage, for one-stage methods).
        batch_size: per-process batch size (the global batch is ``batch_size x world``);
            also the validation batch size.
        optimizer / schedule: see ``OptimConfig`` / ``ScheduleConfig``.
        grad_clip: clip the global gradient norm to this value; ``null`` = off.
        eval_every: validate every this many epochs (and always at a stage's last epoch).
        val_examples: cap on the validation examples used for PGD validation (the
            first ones of the validation split); ``null`` = all.
        seed: seed of the global RNGs at the start of training (plus the rank).
        log_every: steps between progress lines (or progress-bar refreshes).
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast plus a
            gradient scaler; CUDA only).
        channels_last: NHWC memory format for the model and its inputs.
        compile: ``torch.compile`` the training step's forward.
        ema: see ``EMAConfig``.
        sync_bn: convert batch norm to ``SyncBatchNorm`` under DDP (CUDA only).
    """

    epochs: int = 100
    batch_size: int = 128
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    grad_clip: float | None = None
    eval_every: int = 1
    val_examples: int | None = 1000
    seed: int = 0
    log_every: int = 50
    precision: Precision = "fp32"
    channels_last: bool = False
    compile: bool = False
    ema: EMAConfig = field(default_factory=EMAConfig)
    sync_bn: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs: expected >= 1, got {self.epochs!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip: expected > 0 or null, got {self.grad_clip!r}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every: expected >= 1, got {self.eval_every!r}")
        if self.val_examples is not None and self.val_examples < 1:
            raise ValueError(f"val_examples: expected >= 1 or null, got {self.val_examples!r}")
        if self.log_every < 1:
            raise ValueError(f"log_every: expected >= 1, got {self.log_every!r}")
        if self.seed < 0:  # numpy's and torch's generators take none below 0
            raise ValueError(f"seed: expected >= 0, got {self.seed!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(
                f"precision: expected 'fp32', 'bf16' or 'fp16', got {self.precision!r}"
            )


__all__ = ["EMAConfig", "OptimConfig", "Precision", "ScheduleConfig", "TrainConfig"]
