"""AFA stage 1: adversarial feature alignment pre-training of the encoder.

Park et al., "Adversarial Feature Alignment: Balancing Robustness and Accuracy in Deep
Learning via Adversarial Training", arXiv 2402.12187 (ACM AISec 2024); the method card is
``docs/method.md``. One step:

1. draw ``clean_views`` clean augmented views and ``adv_views`` more augmented views of the
   batch (``Batch.view()``, a fresh augmentation each);
2. craft each of the latter into an adversarial view (the inner maximisation): PGD on the
   adversarial anchor's own AFA term ``l(i)`` (``attack_loss="afa"``) with the rest of the
   contrast set computed on clean inputs and held fixed, or on the cross-entropy of
   ``f = model(x)`` (``attack_loss="ce"``);
3. minimise the AFA loss (:class:`afa.losses.AFALoss`) of all views' features
   ``z = normalize(h(g(x)))`` (one forward over the concatenated views).

Stage 2 (a linear probe or fine-tuning) is added by the planner (``pretraining = True``).

The helpers here (:func:`projection_head`, :func:`afa_objective`, :func:`craft_afa_views`,
:func:`alignment_metrics`) are shared with ``afa-trades`` and ``supcon``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from afa.attacks import attack_mode, cross_entropy, perturb
from afa.attacks.objectives import Objective
from afa.attacks.threat import ThreatModel
from afa.errors import ConfigError
from afa.losses import AFALoss, AFAOutput, Views, contrastive_terms, gather_with_grad
from afa.losses.contrastive import Denominator
from afa.methods.base import Batch, Method, StepOutput, accuracy_metric
from afa.models.base import Classifier

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


def afa_objective(
    ref_z: Tensor,
    ref_labels: Tensor,
    ref_is_adv: Tensor,
    anchor_labels: Tensor,
    self_index: Tensor,
    *,
    temperature: float,
    denominator: Denominator,
    cross_view_positives: bool,
) -> Objective:
    """The AFA inner maximisation as a PGD objective (``docs/method.md``, "The inner maximisation").

    The attacked forward returns the anchors' features; the objective returns each
    adversarial anchor's own term ``l(i)`` against the fixed (detached) contrast set
    ``ref_z``. The second argument PGD passes through is not a label but the anchor's index
    into ``anchor_labels`` / ``self_index``, so the objective stays per-example whatever
    subset PGD evaluates.

    Args:
        ref_z, ref_labels, ref_is_adv: the contrast set, computed on clean inputs.
        anchor_labels: label of each anchor.
        self_index: the contrast-set row each anchor replaces (excluded from its terms).
        temperature, denominator, cross_view_positives: as in :class:`AFALoss`.

    Returns:
        ``objective(z, idx) -> (B,)`` float32, the term to maximise.

    Shape:
        ref_z: (R, D); ref_labels, ref_is_adv: (R,); anchor_labels, self_index: (A,);
        objective: z (B, D), idx (B,) int64 in [0, A) -> (B,).
    """
    ref_z = ref_z.detach()

    def objective(z: Tensor, idx: Tensor) -> Tensor:
        per, _, _ = contrastive_terms(
            z,
            anchor_labels[idx],
            torch.ones_like(idx, dtype=torch.bool),
            ref_z,
            ref_labels,
            ref_is_adv,
            self_index[idx],
            temperature=temperature,
            denominator=denominator,
            cross_view_positives=cross_view_positives,
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
    *,
    temperature: float,
    denominator: Denominator,
    cross_view_positives: bool,
    generator: torch.Generator | None = None,
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
        temperature, denominator, cross_view_positives: the loss options.
        generator: RNG of PGD's random start.

    Returns:
        Detached adversarial views, the shape of ``starts``.

    Shape:
        clean: (Vc * B, C, H, W); starts: (Va * B, C, H, W); y: (B,).
    """
    if threat.steps == 0 or threat.eps == 0 or starts.shape[0] == 0:
        return starts.detach().clone()
    b = y.shape[0]
    vc, va = clean.shape[0] // b, starts.shape[0] // b
    views = Views.stack(y, vc, va)
    with torch.no_grad(), attack_mode(module, threat.bn_mode):
        ref_local = embed(torch.cat([clean, starts]))
    ref_z, offset = gather_with_grad(ref_local, return_offset=True)  # type: ignore[misc]
    ref_labels = gather_with_grad(views.labels)
    ref_is_adv = gather_with_grad(views.is_adv)
    self_index = offset + torch.arange(vc * b, (vc + va) * b, device=y.device)
    objective = afa_objective(
        ref_z,
        ref_labels,  # type: ignore[arg-type]
        ref_is_adv,  # type: ignore[arg-type]
        y.repeat(va),
        self_index,
        temperature=temperature,
        denominator=denominator,
        cross_view_positives=cross_view_positives,
    )
    idx = torch.arange(va * b, device=y.device)
    return perturb(module, starts, idx, threat, objective, forward=embed, generator=generator)


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
    """Collapse indicators on the batch's detached, normalised features.

    * ``cos_same``: mean cosine between different rows of the same class (the loss's
      features z); ``cos_diff``: between rows of different classes;
    * ``cos_gap = cos_same - cos_diff``: near 0 means no class structure (a collapse: all
      features alike, or still at initialisation); it grows as classes align;
    * ``feat_cos_gap``: the same gap on the encoder features g(x) that stage 2 reads.

    Shape:
        z: (N, D); feats: (N, F); labels: (N,); results: scalars.
    """
    c_same, c_diff = _pair_means(z, labels)
    f_same, f_diff = _pair_means(feats, labels)
    return {
        "cos_same": c_same,
        "cos_diff": c_diff,
        "cos_gap": c_same - c_diff,
        "feat_cos_gap": f_same - f_diff,
    }


def loss_metrics(out: AFAOutput) -> dict[str, Tensor]:
    """``afa_loss``, its chance level, their ratio and the number of valid anchors."""
    return {
        "afa_loss": out.afa,
        "afa_chance": out.chance,
        "loss_over_chance": out.afa / out.chance.clamp_min(1e-12),
        "valid_anchors": out.num_valid.float(),
    }


def check_options(**values: object) -> None:
    """Raise a :class:`ConfigError` naming the first out-of-range method option."""
    t = values.get("temperature")
    if t is not None and not float(t) > 0:  # type: ignore[arg-type]
        raise ConfigError(f"method.temperature: expected > 0, got {t!r}")
    for key in ("head_dim",):
        v = values.get(key)
        if v is not None and int(v) < 1:  # type: ignore[call-overload]
            raise ConfigError(f"method.{key}: expected >= 1, got {v!r}")
    for key in ("lambda_ce", "clean_anchor_weight", "afa_weight", "beta", "eps_warmup_epochs"):
        v = values.get(key)
        if v is not None and not float(v) >= 0:  # type: ignore[arg-type]
            raise ConfigError(f"method.{key}: expected >= 0, got {v!r}")
    for key, allowed in (
        ("denominator", ("negatives", "supcon")),
        ("anchors", ("adversarial", "all")),
        ("head", ("mlp", "linear", "none")),
        ("attack_loss", ("afa", "ce")),
    ):
        v = values.get(key)
        if v is not None and v not in allowed:
            raise ConfigError(
                f"method.{key}: expected {' or '.join(repr(a) for a in allowed)}, got {v!r}"
            )


class ContrastivePretraining(Method):
    """Encoder pre-training through a projection head ``self.projector`` (afa, supcon).

    ``model.head`` (the linear classifier) is trained only when ``config.lambda_ce > 0``;
    the planner adds the classifier stage (``pretraining = True``).
    """

    pretraining = True
    projector: nn.Module

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Encoder and projection head; ``model.head`` too when ``lambda_ce > 0``."""
        if self.config.lambda_ce > 0:
            return super().trainable_parameters()
        head = {id(p) for p in self.model.head.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in head]

    def embed(self, x: Tensor) -> Tensor:
        """``h(g(x))``, the features the loss normalises (the attacked forward).

        Shape:
            x: (B, C, H, W) in [0, 1]; result: (B, head_dim).
        """
        return self.projector(self.model.features(x))


class AFAPretrain(ContrastivePretraining):
    """AFA pre-training: min over the encoder (and head) of the AFA loss on adversarial views.

    ``min_θ E [ L_AFA(z(x_clean views), z(x̃ views), y) ]`` with
    ``x̃_i = argmax_{‖δ‖ ≤ ε} l(i; x_i + δ)`` (Park et al. 2024; ``docs/method.md``).

    Args:
        model: the classifier whose encoder g (``model.features``) is pre-trained.
        threat: the run's threat model (radius, PGD schedule, BN mode while crafting).
        config: the options below.

    The projection head is a sub-module (``projector``), so it is checkpointed with the
    method. ``model.head`` (the linear classifier) is trained only when ``lambda_ce > 0``.

    Collapse warnings are left to the loop/report, from the epoch-averaged ``cos_gap``
    (suggested: warn when it stays below 0.05 after the first epochs); ``epoch_metrics``
    adds nothing.
    """

    name = "afa"

    @dataclass(frozen=True)
    class Config:
        """Options of AFA pre-training.

        Attributes:
            temperature: tau of the AFA loss (0.1, the SupCon value of Khosla et al.).
            denominator: ``"negatives"`` (AFA: each positive against the negatives only)
                or ``"supcon"`` (Khosla et al.).
            anchors: ``"adversarial"`` (the adversarial views, default) or ``"all"``.
            cross_view_positives: clean and adversarial same-class features are positives
                of each other (default True; False ignores cross-kind same-class pairs).
            clean_views: V_c, clean augmented views per sample (default 1).
            adv_views: V_a, adversarial views per sample (default 1), each crafted from
                its own fresh augmented view.
            head: projection head ``"mlp"`` (default, as SupCon), ``"linear"`` or
                ``"none"``.
            head_dim: output width of the head (128, as SupCon).
            attack_loss: ``"afa"`` (each adversarial anchor maximises its own AFA term)
                or ``"ce"`` (PGD on the cross-entropy of ``model(x)``; a cheaper
                baseline, meaningful with ``lambda_ce > 0`` so the head is trained).
            eps_warmup_epochs: ramp eps and step_size linearly over this many epochs:
                epoch e (from 0) uses ``min(1, (e + 1) / eps_warmup_epochs)`` of them
                (0 = off).
            clean_anchor_weight: weight of an extra AFA term with the clean views as
                anchors (0 = off); a remedy if the clean features collapse.
            lambda_ce: weight of a cross-entropy term of ``model.head`` on the encoder
                features of every view (clean and adversarial; 0 = off).
            ce_detach: the CE term sees detached features: it trains only the head (an
                online linear probe) and sends no gradient to the encoder (default True).
                False makes it a supervised regulariser of the encoder.
        """

        temperature: float = 0.1
        denominator: Literal["negatives", "supcon"] = "negatives"
        anchors: Literal["adversarial", "all"] = "adversarial"
        cross_view_positives: bool = True
        clean_views: int = 1
        adv_views: int = 1
        head: Literal["mlp", "linear", "none"] = "mlp"
        head_dim: int = 128
        attack_loss: Literal["afa", "ce"] = "afa"
        eps_warmup_epochs: int = 0
        clean_anchor_weight: float = 0.0
        lambda_ce: float = 0.0
        ce_detach: bool = True

        def __post_init__(self) -> None:
            check_options(**{k: getattr(self, k) for k in self.__dataclass_fields__})
            if self.clean_views < 0:
                raise ConfigError(f"method.clean_views: expected >= 0, got {self.clean_views!r}")
            if self.adv_views < 1:
                raise ConfigError(f"method.adv_views: expected >= 1, got {self.adv_views!r}")
            if self.clean_anchor_weight > 0 and self.clean_views == 0:
                raise ConfigError("method.clean_anchor_weight: needs clean_views >= 1")

    def __init__(
        self, model: Classifier, threat: ThreatModel, config: Config | None = None
    ) -> None:
        super().__init__(model, threat, config)
        c = self.config
        self.projector = projection_head(c.head, model.num_features, c.head_dim)
        self.criterion = AFALoss(
            temperature=c.temperature,
            denominator=c.denominator,
            anchors=c.anchors,
            cross_view_positives=c.cross_view_positives,
            clean_anchor_weight=c.clean_anchor_weight,
        )
        self.current_threat = self.warmup_threat(0)

    def warmup_threat(self, epoch: int) -> ThreatModel:
        """The threat model of ``epoch`` (from 0) under the eps warm-up."""
        w = self.config.eps_warmup_epochs
        if w <= 0:
            return self.threat
        frac = min(1.0, (epoch + 1) / w)
        return self.threat.with_(eps=self.threat.eps * frac, step_size=self.threat.step_size * frac)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.current_threat = self.warmup_threat(epoch)

    def forward(self, batch: Batch) -> StepOutput:
        c = self.config
        y = batch.y
        clean = [batch.view() for _ in range(c.clean_views)]
        starts = torch.cat([batch.view() for _ in range(c.adv_views)])
        clean_x = torch.cat(clean) if clean else starts[:0]
        threat = self.current_threat
        if c.attack_loss == "afa":
            x_adv = craft_afa_views(
                self,
                self.embed,
                clean_x,
                starts,
                y,
                threat,
                temperature=c.temperature,
                denominator=c.denominator,
                cross_view_positives=c.cross_view_positives,
            )
        else:
            x_adv = perturb(self.model, starts, y.repeat(c.adv_views), threat, cross_entropy)

        views = Views.stack(y, c.clean_views, c.adv_views)
        feats = self.model.features(torch.cat([clean_x, x_adv]))
        z = self.projector(feats)
        out = self.criterion(z, views)
        loss = out.loss
        metrics = {**loss_metrics(out), **alignment_metrics(z, feats, views.labels)}
        if c.clean_anchor_weight > 0:
            metrics["clean_anchor_loss"] = out.clean
        if c.lambda_ce > 0:
            logits = self.model.head(feats.detach() if c.ce_detach else feats)
            ce = F.cross_entropy(logits.float(), views.labels)
            loss = loss + c.lambda_ce * ce
            n_clean = c.clean_views * y.shape[0]
            metrics["ce"] = ce.detach()
            if n_clean:
                metrics["acc"] = accuracy_metric(logits[:n_clean], views.labels[:n_clean])
            metrics["adv_acc"] = accuracy_metric(logits[n_clean:], views.labels[n_clean:])
        metrics["eps"] = torch.tensor(threat.eps, device=loss.device)
        metrics["loss"] = loss.detach()
        return StepOutput(loss, metrics)


__all__ = [
    "AFAPretrain",
    "ContrastivePretraining",
    "afa_objective",
    "alignment_metrics",
    "craft_afa_views",
    "loss_metrics",
    "projection_head",
]
