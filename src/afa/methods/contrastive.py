"""The contrastive toolbox shared by ``afa``, ``afa-trades`` and ``supcon``.

One config base (the loss's temperature and denominator, the projection head), one
constructor (the head ``projector`` and the :class:`~afa.losses.AFALoss` ``criterion``),
one ``embed``, and the pieces of the AFA inner maximisation (Park et al., "Adversarial
Feature Alignment", arXiv 2402.12187; ``docs/method.md``, "The inner maximisation"):
:func:`afa_objective` and :func:`craft_afa_views` receive the criterion itself, so the
attack scores its anchors with exactly the options of the training loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from afa.attacks import attack_mode, perturb
from afa.attacks.objectives import Objective
from afa.attacks.threat import ThreatModel
from afa.errors import ConfigError
from afa.losses import AFALoss, AFAOutput, Views, gather_with_grad
from afa.losses.contrastive import Denominator
from afa.methods.base import Method, accuracy_metric, check_choices, check_non_negative
from afa.methods.collapse import class_separation, effective_rank
from afa.models.base import Classifier
from afa.models.dual_bn import convert_dual_bn

HeadKind = Literal["mlp", "linear", "none"]


def projection_head(kind: HeadKind, in_dim: int, out_dim: int) -> nn.Module:
    """The projection head h between the encoder and the contrastive loss.

    * ``"mlp"``: Linear(in, in) - ReLU - Linear(in, out), the head of SupCon (Khosla et
      al. 2020) and SimCLR;
    * ``"linear"``: Linear(in, out);
    * ``"none"``: the identity (the loss sees g(x) itself; ``out_dim`` is ignored).

    Shape:
        input: (B, in_dim); output: (B, out_dim) (or (B, in_dim) for ``"none"``).
    """
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim)
        )
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"method.head: expected 'mlp', 'linear' or 'none', got {kind!r}")


@dataclass(frozen=True)
class ContrastiveConfig:
    """Options every contrastive method has (validated here, once for all of them).

    Attributes:
        temperature: tau of the contrastive loss (0.1, the SupCon value of Khosla et al.).
        denominator: ``"negatives"`` (AFA: each positive against the negatives only) or
            ``"supcon"`` (Khosla et al.).
        head: projection head ``"mlp"`` (as SupCon), ``"linear"`` or ``"none"``.
        head_dim: output width of the head (128, as SupCon).
    """

    temperature: float = 0.1
    denominator: Denominator = "negatives"
    head: HeadKind = "mlp"
    head_dim: int = 128

    def __post_init__(self) -> None:
        check_choices(self)
        if not float(self.temperature) > 0:
            raise ConfigError(f"method.temperature: expected > 0, got {self.temperature!r}")
        if int(self.head_dim) < 1:
            raise ConfigError(f"method.head_dim: expected >= 1, got {self.head_dim!r}")


@dataclass(frozen=True)
class PretrainConfig(ContrastiveConfig):
    """A contrastive pre-training method's options: the base plus an online CE probe.

    Attributes:
        lambda_ce: weight of a cross-entropy term of ``model.head`` on the encoder
            features of every view (0 = off).
        ce_detach: the CE term sees detached features: it trains only the head (an online
            linear probe) and sends no gradient to the encoder (default True). False makes
            it a supervised regulariser of the encoder.
    """

    lambda_ce: float = 0.0
    ce_detach: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative(self, "lambda_ce")


class ContrastiveMethod(Method):
    """A method with a projection head ``projector`` and an :class:`AFALoss` ``criterion``.

    Subclasses declare their ``Config`` (a :class:`ContrastiveConfig`) and the criterion's
    other options in :meth:`criterion_options`.
    """

    config: ContrastiveConfig
    #: Options (dotted config keys) the collapse warning suggests, all of this method's own.
    collapse_remedies: ClassVar[tuple[str, ...]] = ("method.temperature",)

    def __init__(self, model: Classifier, threat: ThreatModel, config: Any = None) -> None:
        super().__init__(model, threat, config)
        c = self.config
        self.projector = projection_head(c.head, model.num_features, c.head_dim)
        if model.dual_bn:
            convert_dual_bn(self.projector)  # a head's BN layers follow the model's branches
        self.criterion = AFALoss(
            temperature=c.temperature, denominator=c.denominator, **self.criterion_options()
        )

    def criterion_options(self) -> dict[str, Any]:
        """The :class:`AFALoss` options besides temperature and denominator."""
        return {}

    def embed(self, x: Tensor) -> Tensor:
        """``h(g(x))``, the features the loss normalises (the AFA attack's forward).

        Shape:
            x: (B, C, H, W) in [0, 1]; result: (B, head_dim) (or (B, num_features)).
        """
        return self.projector(self.model.features(x))


class ContrastivePretraining(ContrastiveMethod):
    """Encoder pre-training through the projection head (afa, supcon).

    ``model.head`` (the linear classifier) is trained only when ``config.lambda_ce > 0``;
    the planner adds the classifier stage (``pretraining = True``).
    """

    config: PretrainConfig
    pretraining = True

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Encoder and projection head; ``model.head`` too when ``lambda_ce > 0``."""
        if self.config.lambda_ce > 0:
            return super().trainable_parameters()
        head = {id(p) for p in self.model.head.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in head]

    def probe_ce(
        self, feats: Tensor, labels: Tensor, n_clean: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The online CE probe ``lambda_ce * CE(head(g(x)), y)`` over every view and its metrics.

        ``acc`` is measured on the first ``n_clean`` rows (the clean views) and ``adv_acc``
        on the rest, each only when it has rows.

        Returns:
            (the weighted term to add to the loss, ``{"ce", "acc"?, "adv_acc"?}``).

        Shape:
            feats: (N, num_features); labels: (N,).
        """
        c = self.config
        logits = self.model.head(feats.detach() if c.ce_detach else feats)
        ce = F.cross_entropy(logits.float(), labels)
        metrics = {"ce": ce.detach()}
        if n_clean:
            metrics["acc"] = accuracy_metric(logits[:n_clean], labels[:n_clean])
        if n_clean < labels.shape[0]:
            metrics["adv_acc"] = accuracy_metric(logits[n_clean:], labels[n_clean:])
        return c.lambda_ce * ce, metrics


def afa_objective(
    ref_z: Tensor,
    ref_labels: Tensor,
    ref_is_adv: Tensor,
    anchor_labels: Tensor,
    self_index: Tensor,
    criterion: AFALoss,
) -> Objective:
    """The AFA inner maximisation as a PGD objective (``docs/method.md``, "The inner maximisation").

    The attacked forward returns the anchors' features; the objective returns each
    adversarial anchor's own term ``l(i)`` against the fixed (detached) contrast set
    ``ref_z``, scored by ``criterion.terms`` (the training loss's temperature,
    denominator and positives). The second argument PGD passes through is not a label
    but the anchor's index into ``anchor_labels`` / ``self_index``, so the objective stays
    per-example whatever subset PGD evaluates.

    Args:
        ref_z, ref_labels, ref_is_adv: the contrast set, computed on clean inputs.
        anchor_labels: label of each anchor.
        self_index: the contrast-set row each anchor replaces (excluded from its terms).
        criterion: the method's :class:`AFALoss`.

    Returns:
        ``objective(z, idx) -> (B,)`` float32, the term to maximise.

    Shape:
        ref_z: (R, D); ref_labels, ref_is_adv: (R,); anchor_labels, self_index: (A,);
        objective: z (B, D), idx (B,) int64 in [0, A) -> (B,).
    """
    ref_z = ref_z.detach()

    def objective(z: Tensor, idx: Tensor) -> Tensor:
        per, _, _ = criterion.terms(
            z,
            anchor_labels[idx],
            torch.ones_like(idx, dtype=torch.bool),
            ref_z,
            ref_labels,
            ref_is_adv,
            self_index[idx],
        )
        return per.float()

    return objective


def craft_afa_views(
    module: nn.Module,
    embed: Callable[[Tensor], Tensor],
    clean: Tensor,
    starts: Tensor,
    y: Tensor,
    threat: ThreatModel,
    criterion: AFALoss,
    *,
    generator: torch.Generator | None = None,
    clean_embed: Callable[[Tensor], Tensor] | None = None,
    init: Tensor | None = None,
    reference: Tensor | None = None,
) -> Tensor:
    """Adversarial views maximising their own AFA term (the AFA inner maximisation).

    The contrast set while crafting is the layout of the training loss, ``clean`` views
    first and then the adversarial views, with every feature computed on a *clean* input
    (the adversarial views by their unperturbed ``starts``) under ``threat.bn_mode`` and
    detached; each anchor replaces its own start's row. Under DDP the contrast set is
    gathered from every rank (one collective per step, outside PGD's loop).

    Args:
        module: the module whose modes and ``requires_grad`` PGD manages (encoder + head).
        embed: ``x -> h(g(x))`` (the loss normalises).
        clean: the clean views, stacked view by view.
        starts: the augmented views to perturb, stacked view by view.
        y: labels of the B samples.
        threat: the (possibly warmed-up) threat model.
        criterion: the method's :class:`AFALoss` (its options score the anchors).
        generator: RNG of PGD's random start.
        clean_embed: the embedding of the ``clean`` rows of the contrast set (default
            ``embed``); with dual batch norm the clean views' branch, while ``embed`` (the
            attacked forward, also of the ``starts`` rows) runs on the adversarial one.
        init: where PGD starts instead of its random start (e.g. another attack's
            adversaries of ``starts``); the reference features stay those of ``starts``.
        reference: the contrast set's features, ``embed`` of ``cat([clean, starts])``
            under ``threat.bn_mode``, when the caller has computed them already (AFA +
            TRADES has them from its clean forward); saves one forward per step.

    Returns:
        Detached adversarial views, the shape of ``starts``.

    Shape:
        clean: (Vc * B, C, H, W); starts: (Va * B, C, H, W); y: (B,).
    """
    if threat.steps == 0 or threat.eps == 0 or starts.shape[0] == 0:
        return (starts if init is None or threat.eps == 0 else init).detach().clone()
    b = y.shape[0]
    vc, va = clean.shape[0] // b, starts.shape[0] // b
    views = Views.stack(y, vc, va)
    if reference is not None:
        ref_local = reference.detach()
    else:
        with torch.no_grad(), attack_mode(module, threat.bn_mode):
            if clean_embed is None:
                ref_local = embed(torch.cat([clean, starts]))
            else:
                rows = [clean_embed(clean)] if clean.shape[0] else []
                ref_local = torch.cat([*rows, embed(starts)])
    ref_z, offset = gather_with_grad(ref_local, return_offset=True)
    ref_labels = gather_with_grad(views.labels)
    ref_is_adv = gather_with_grad(views.is_adv)
    self_index = offset + torch.arange(vc * b, (vc + va) * b, device=y.device)
    objective = afa_objective(
        ref_z,
        ref_labels,
        ref_is_adv,
        y.repeat(va),
        self_index,
        criterion,
    )
    idx = torch.arange(va * b, device=y.device)
    return perturb(
        module, starts, idx, threat, objective, forward=embed, generator=generator, init=init
    )


def _pair_means(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    zn = F.normalize(z.detach().float(), dim=1)
    cos = zn @ zn.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=z.device)
    same = same & ~eye
    diff = ~same & ~eye
    # empty sets (one class in the batch) give 0 rather than a NaN that would poison the
    # loop's epoch averages
    c_same = (cos * same).sum() / same.sum().clamp_min(1)
    c_diff = (cos * diff).sum() / diff.sum().clamp_min(1)
    return c_same, c_diff


def alignment_metrics(z: Tensor, feats: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Per-batch feature geometry on the batch's detached features (averaged per epoch).

    * ``cos_same``: mean cosine between different rows of the same class (the loss's
      features z); ``cos_diff``: between rows of different classes;
    * ``cos_gap = cos_same - cos_diff``: near 0 at initialisation and in a collapse, but
      also low for spread-out features that are class-structured (it is the class
      separation times the spread), so it is reported, not judged;
    * ``feat_cos_gap``: the same gap on the encoder features g(x) that stage 2 reads;
    * ``feat_separation``, ``feat_erank``: the collapse indicator's statistics of g(x)
      over the batch's views (:mod:`afa.methods.collapse`; 0 where undefined, e.g. a
      batch of one class), judged by the loop when no validation measured them.

    Shape:
        z: (N, D); feats: (N, F); labels: (N,); results: scalars.
    """
    c_same, c_diff = _pair_means(z, labels)
    f_same, f_diff = _pair_means(feats, labels)
    separation = class_separation(feats, labels)
    return {
        "cos_same": c_same,
        "cos_diff": c_diff,
        "cos_gap": c_same - c_diff,
        "feat_cos_gap": f_same - f_diff,
        "feat_separation": torch.nan_to_num(separation, nan=0.0).float(),
        "feat_erank": effective_rank(feats).float(),
    }


def loss_metrics(out: AFAOutput) -> dict[str, Tensor]:
    """``afa_loss``, its chance level, their ratio and the number of valid anchors."""
    return {
        "afa_loss": out.afa,
        "afa_chance": out.chance,
        "loss_over_chance": out.afa / out.chance.clamp_min(1e-12),
        "valid_anchors": out.num_valid.float(),
    }


__all__ = [
    "ContrastiveConfig",
    "ContrastiveMethod",
    "ContrastivePretraining",
    "HeadKind",
    "PretrainConfig",
    "afa_objective",
    "alignment_metrics",
    "craft_afa_views",
    "loss_metrics",
    "projection_head",
]
