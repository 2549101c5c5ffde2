"""ACL: adversarial contrastive learning, self-supervised (Jiang, Chen, Chen, Wang,
"Robust Pre-Training by Adversarial Contrastive Learning", NeurIPS 2020; the "A2A"/dual-stream
variant their code releases, VITA-Group/Adversarial-Contrastive-Learning ``train_simCLR.py``).

One step on a batch of B images, no labels in the loss:

1. two SimCLR views ``x1, x2`` of every image (``Batch.view()`` twice; the recipe sets
   ``data.augment: contrastive``);
2. the adversarial pair ``(x̃1, x̃2)`` crafted *jointly* by PGD on the pair's own NT-Xent
   (:func:`afa.losses.nt_xent`): ``attack_steps`` (5) steps of the run's ``step_size``
   (2/255) in the run's eps ball (8/255), random start, the run's ``bn_mode`` (eval), on
   the ``adv`` BN branch;
3. minimise ``a * NT-Xent(clean pair) + b * NT-Xent(adversarial pair)``, the clean pair on
   the ``clean`` branch and the adversarial pair on ``adv`` (dual BN, ``model.dual_bn``;
   without it both share one BN); ACL: a = b = 1/2.

The projection head is ACL's ``proj_head`` with BN (dual too when the model is):
``Linear(d, d) - BN - ReLU - Linear(d, d, no bias) - BN`` (``head_layers: 2``), which is what
their forward runs: their third layer (``fc3``/``bn3``) is built only when ``twoLayerProj`` is
False yet called only when it is True, so it never trains. ``head_layers: 3`` adds it
(``- ReLU - Linear(d, d, no bias) - BN``). Output width ``head_dim`` (their ``d`` = the
encoder's width).

Stage 2 (``classifier.protocol``: ``slf``, ``alf``, ``aff`` with TRADES; the robust
self-supervised benchmark's protocols) is the planner's classifier stage; with dual BN it
runs on the model's default branch (``model.bn_branch``; ACL fine-tunes the ``adv`` one).

Labels are read only by the per-batch feature geometry (``alignment_metrics``), never by
the loss.
Under DDP the NT-Xent of training is over the gathered global batch
(:class:`afa.losses.NTXentLoss`); the attack contrasts each rank's adversarial pair with
its own rows (a collective per PGD step would be needed otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from afa.attacks import perturb
from afa.attacks.threat import ThreatModel
from afa.errors import ConfigError
from afa.losses import NTXentLoss, nt_xent, view_sample_ids
from afa.methods.base import Batch, Method, StepOutput
from afa.methods.clean_term import CleanTerm, clean_adv_weights
from afa.methods.contrastive import alignment_metrics
from afa.methods.registry import register_method
from afa.models.base import Classifier
from afa.models.dual_bn import Branch, bn_branch, convert_dual_bn, on_branch


def acl_projection_head(in_dim: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """ACL's projection head with batch norm after every linear layer (see the module doc).

    Shape:
        input: (B, in_dim); output: (B, out_dim).
    """
    if layers not in (2, 3):
        raise ConfigError(f"method.head_layers: expected 2 or 3, got {layers!r}")
    mods: list[nn.Module] = [nn.Linear(in_dim, in_dim), nn.BatchNorm1d(in_dim), nn.ReLU()]
    if layers == 3:
        mods += [nn.Linear(in_dim, in_dim, bias=False), nn.BatchNorm1d(in_dim), nn.ReLU()]
    mods += [nn.Linear(in_dim, out_dim, bias=False), nn.BatchNorm1d(out_dim)]
    return nn.Sequential(*mods)


@register_method("acl")
class ACL(Method):
    """ACL pre-training: ``min_θ a · NT-Xent(x1, x2) + b · NT-Xent(x̃1, x̃2)``, a = b = 1/2.

    ``(x̃1, x̃2) = argmax_{‖δ‖ ≤ ε} NT-Xent(x1 + δ1, x2 + δ2)`` (Jiang et al. 2020).

    Args:
        model: the classifier whose encoder is pre-trained (``model.head`` is not trained).
        threat: the run's threat model (eps, step size, BN mode of the attack).
        config: the options below.
    """

    pretraining = True
    collapse_remedies: ClassVar[tuple[str, ...]] = ("method.temperature",)
    #: How the clean and adversarial terms are weighted (:mod:`afa.methods.clean_term`).
    weighting: ClassVar[CleanTerm] = "acl"

    @dataclass(frozen=True)
    class Config:
        """Options of ACL.

        Attributes:
            temperature: NT-Xent's tau (0.5, ACL's and DynACL's ``nt_xent(x, t=0.5)``).
            head_layers: 2 (the head ACL's code trains) or 3 (see the module docstring).
            head_dim: output width of the head; None: the encoder's width (ACL's 512 for
                ResNet-18).
            attack_steps: PGD steps of the contrastive attack (5: ACL's and DynACL's
                ``pgd_iter``); None: the run's ``threat.steps``. Eps, step size, random
                start and BN mode are the run's threat model's.
        """

        temperature: float = 0.5
        head_layers: Literal[2, 3] = 2
        head_dim: int | None = None
        attack_steps: int | None = 5

        def __post_init__(self) -> None:
            if not float(self.temperature) > 0:
                raise ConfigError(f"method.temperature: expected > 0, got {self.temperature!r}")
            if self.head_layers not in (2, 3):
                raise ConfigError(f"method.head_layers: expected 2 or 3, got {self.head_layers!r}")
            if self.head_dim is not None and self.head_dim < 1:
                raise ConfigError(f"method.head_dim: expected >= 1 or null, got {self.head_dim!r}")
            if self.attack_steps is not None and self.attack_steps < 0:
                raise ConfigError(
                    f"method.attack_steps: expected >= 0 or null, got {self.attack_steps!r}"
                )

    config: Config

    def __init__(self, model: Classifier, threat: ThreatModel, config: Any = None) -> None:
        super().__init__(model, threat, config)
        c = self.config
        d = model.num_features
        self.projector = acl_projection_head(d, c.head_dim or d, c.head_layers)
        if model.dual_bn:
            convert_dual_bn(self.projector)  # the head's BN follows the model's branches
        self.criterion = NTXentLoss(temperature=c.temperature)
        self.term_weights = clean_adv_weights(self.weighting, 0, 1, *self._schedule())

    def _schedule(self) -> tuple[int, float]:
        return 50, 2 / 3  # unused by "acl"; DynACL's own options override

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Encoder and projection head (``model.head`` is left to the classifier stage)."""
        head = {id(p) for p in self.model.head.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in head]

    def splits_bn(self) -> bool:
        return True

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.term_weights = clean_adv_weights(self.weighting, epoch, epochs, *self._schedule())

    def embed(self, x: Tensor) -> Tensor:
        """``h(g(x))`` on the current BN branch.

        Shape:
            x: (B, C, H, W) in [0, 1]; result: (B, head_dim).
        """
        return self.projector(self.model.features(x))

    def attack_threat(self) -> ThreatModel:
        """The run's threat model with ``attack_steps`` PGD steps."""
        steps = self.config.attack_steps
        return self.threat if steps is None else self.threat.with_(steps=steps)

    def craft_pair(self, pair: Tensor) -> Tensor:
        """The adversarial pair: PGD on the pair's joint NT-Xent, on the ``adv`` branch.

        Every row's NT-Xent term is its objective; their sum is the pair's loss (times 2B),
        so each step ascends the joint loss, with every other row of the pair moving too.

        Shape:
            pair: (2B, C, H, W), view 1 of every image then view 2 -> (2B, C, H, W).
        """
        sample = view_sample_ids(pair.shape[0] // 2, 2, device=pair.device)
        temperature = self.config.temperature

        def objective(z: Tensor, idx: Tensor) -> Tensor:
            return nt_xent(z, sample[idx], temperature=temperature).per_anchor.float()

        rows = torch.arange(pair.shape[0], device=pair.device)
        forward = on_branch(self, "adv", self.embed)
        return perturb(self, pair, rows, self.attack_threat(), objective, forward=forward)

    def _embed_on(self, x: Tensor, branch: Branch) -> tuple[Tensor, Tensor]:
        with bn_branch(self, branch):
            feats = self.model.features(x)
            return feats, self.projector(feats)

    def forward(self, batch: Batch) -> StepOutput:
        pair = torch.cat([batch.view(), batch.view()])
        pair_adv = self.craft_pair(pair)
        feats_c, z_c = self._embed_on(pair, "clean")
        feats_a, z_a = self._embed_on(pair_adv, "adv")
        clean = self.criterion(z_c)
        adv = self.criterion(z_a)
        w_clean, w_adv = self.term_weights
        loss = w_clean * clean.loss + w_adv * adv.loss
        labels = batch.y.repeat(4)
        dev = loss.device
        metrics = {
            "loss": loss.detach(),
            "clean_loss": clean.loss.detach(),
            "adv_loss": adv.loss.detach(),
            "ntxent_chance": adv.chance,
            "loss_over_chance": adv.loss.detach() / adv.chance.clamp_min(1e-12),
            "adv_weight": torch.tensor(w_adv, device=dev),
            **alignment_metrics(torch.cat([z_c, z_a]), torch.cat([feats_c, feats_a]), labels),
        }
        return StepOutput(loss, metrics)


__all__ = ["ACL", "acl_projection_head"]
