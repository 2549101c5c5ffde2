"""One alignment measurement for every method, on held-out images (the alignment protocol).

:func:`measure_alignment` measures a trained classifier's encoder features ``g(x)``
(``model.features``) the same way whatever trained it
(``docs/method.md#the-alignment-protocol``), on clean held-out images and under two
adversaries of the run's threat model:

* **PGD (CE)**: PGD on the cross-entropy of the classifier f = W ∘ g;
* **PGD (AFA)**: PGD maximising each image's own AFA term (the AFA inner maximisation,
  :func:`afa.methods.contrastive.craft_afa_views`, scored by :class:`afa.losses.AFALoss`):
  the contrast set while crafting is the batch's clean features, each attacked image
  replacing its own clean copy as the anchor.

For each kind of input: the classifier's accuracy, the centroid- and kNN-aligned fractions of
:mod:`afa.analysis.alignment` (centroids and neighbours from clean *training* features), the
AFA loss over its chance level (one clean and one attacked view per image, the attacked
views as anchors, the whole held-out set one contrast set; for clean inputs the "attacked"
view is the image itself), the cosine geometry (``cos_gap``) and the scale-free statistics
of the collapse indicator (:mod:`afa.methods.collapse`: class separation, effective rank).
Then a linear probe (logistic regression on the normalised clean features of the training
images, scored on the clean held-out images) and the collapse verdict of the clean features
against randomly initialised copies of the encoder on the same images.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from afa.analysis.alignment import centroid_alignment, class_centroids, knn_alignment
from afa.analysis.geometry import cosine_geometry
from afa.attacks import ThreatModel, cross_entropy, perturb, pgd_label
from afa.data import to_float
from afa.losses import AFALoss, Views
from afa.losses.contrastive import Denominator
from afa.methods.collapse import (
    INIT_SEEDS,
    class_separation,
    effective_rank,
    init_separation,
    judge,
)
from afa.methods.contrastive import craft_afa_views
from afa.models.base import Classifier

__all__ = ["INPUTS", "AlignmentReport", "InputAlignment", "alignment_markdown", "measure_alignment"]

INPUTS = ("clean", "pgd", "afa")
"""The kinds of input measured: clean, PGD on CE, PGD on the AFA term."""


@dataclass
class InputAlignment:
    """The alignment of the features of one kind of input.

    Attributes:
        label: the input's name ("clean", "PGD-10 (CE, BN eval)", ...).
        accuracy: the classifier's accuracy on these inputs.
        centroid_aligned: share of images whose feature is closer (cosine) to its own
            class centroid than to every other (centroids of clean training features).
        knn_aligned: share whose own class wins the vote of the k nearest clean training
            features.
        afa_loss, afa_chance: the AFA loss with these inputs' features as anchors against
            the clean features, and its chance level; ``loss_over_chance`` their ratio.
        cos_same, cos_diff, cos_gap: mean cosine of same-class pairs, different-class
            pairs, and their gap.
        separation: chance-corrected between-class share of the variance
            (:func:`afa.methods.collapse.class_separation`).
        effective_rank: :func:`afa.methods.collapse.effective_rank`.
    """

    label: str
    accuracy: float | None
    centroid_aligned: float | None
    knn_aligned: float | None
    afa_loss: float
    afa_chance: float
    loss_over_chance: float
    cos_same: float | None
    cos_diff: float | None
    cos_gap: float | None
    separation: float
    effective_rank: float


@dataclass
class AlignmentReport:
    """What :func:`measure_alignment` measured, with how (JSON-ready by :meth:`to_dict`).

    Attributes:
        n: held-out images measured.
        n_train: clean training images behind the centroids, the kNN neighbours and the
            probe.
        k: neighbours of the kNN rule.
        temperature, denominator: the AFA loss's options (the attack's and the measure's).
        threat: the threat model of both adversaries.
        inputs: ``"clean"``, ``"pgd"``, ``"afa"`` -> :class:`InputAlignment`.
        probe: ``{"accuracy", "fitted_on", "scored_on", "C"}``: logistic regression on
            the normalised, standardised clean training features; ``None`` when skipped.
        collapse: the collapse indicator on the clean features: ``separation``,
            ``effective_rank``, ``separation_init`` (the mean over randomly initialised
            copies of the encoder, seeds ``init_seeds``, same images; ``None`` when
            skipped) with ``separation_init_seeds``, ``reasons`` and ``collapsed``.
        seed: the attacks' random starts and the probe's subset.
        time_s: wall time of the measurement.
        setup: what was measured how, in words.
    """

    n: int
    n_train: int
    k: int
    temperature: float
    denominator: str
    threat: dict[str, Any]
    inputs: dict[str, InputAlignment]
    probe: dict[str, Any] | None
    collapse: dict[str, Any]
    seed: int = 0
    time_s: float = 0.0
    setup: str = field(
        default=(
            "encoder features g(x) in eval mode; AFA loss with one clean and one attacked view "
            "per image, the attacked views as anchors, all held-out images one contrast set"
        )
    )

    def to_dict(self) -> dict[str, Any]:
        """Numbers as numbers, ``None`` where undefined (NaN is written as ``None``)."""
        return _finite(dataclasses.asdict(self))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _unit(x: Tensor, device: torch.device) -> Tensor:
    return to_float(x, device) if x.dtype == torch.uint8 else x.to(device).float()


@torch.no_grad()
def _features(model: Classifier, images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    out = [
        model.features(_unit(images[s : s + batch_size], device)).float()
        for s in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, model.num_features, device=device)


def _rate(b: Tensor) -> float | None:
    return int(b.sum()) / b.numel() if b.numel() else None


def measure_alignment(
    model: Classifier,
    train_images: Tensor | np.ndarray,
    train_labels: Tensor | np.ndarray,
    test_images: Tensor | np.ndarray,
    test_labels: Tensor | np.ndarray,
    threat: ThreatModel,
    *,
    k: int = 10,
    temperature: float = 0.1,
    denominator: Denominator = "negatives",
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int = 0,
    probe: bool = True,
    probe_train: int | None = 10_000,
    init_reference: bool = True,
) -> AlignmentReport:
    """The alignment protocol on ``model``'s encoder (see the module docstring).

    Args:
        model: a :class:`~afa.models.base.Classifier`; for a pre-trained run, the model of
            its checkpoint (``model.features`` is the encoder). Its mode is restored.
        train_images, train_labels: clean training images (uint8 or float in [0, 1]): the
            centroids, the kNN neighbours and the probe's training set.
        test_images, test_labels: the held-out images measured.
        threat: the threat model of both adversaries (BN mode and steps as given).
        k: neighbours of the kNN rule.
        temperature, denominator: the AFA loss's options (0.1 and ``"negatives"``, the
            defaults of ``afa``).
        batch_size: images per forward and per attack batch (the AFA attack's contrast
            set is its batch).
        device: where to compute (default: the model's device).
        seed: the attacks' random starts.
        probe: fit the linear probe (scikit-learn).
        probe_train: the probe is fitted on a seeded subset of this many of the training
            images (``None``: all), which bounds its cost on large training sets.
        init_reference: measure randomly initialised copies of the encoder (the
            collapse indicator's reference, :func:`afa.methods.collapse.init_separation`).

    Returns:
        An :class:`AlignmentReport`.

    Shape:
        images: (N, C, H, W); labels: (N,).
    """
    start = time.perf_counter()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    train_x, train_y = torch.as_tensor(train_images), torch.as_tensor(train_labels).long()
    test_x, test_y = torch.as_tensor(test_images), torch.as_tensor(test_labels).long()
    num_classes = int(model.num_classes)
    criterion = AFALoss(temperature=temperature, denominator=denominator, gather=False)
    gen_pgd = torch.Generator().manual_seed(seed + 1)
    gen_afa = torch.Generator().manual_seed(seed + 2)
    labels = {
        "clean": "clean",
        "pgd": pgd_label(threat, "CE"),
        "afa": pgd_label(threat, "AFA"),
    }
    was_training = model.training
    model.eval()
    try:
        train_f = _features(model, train_x, batch_size, device)
        ref_y = train_y.to(device)
        centroids = class_centroids(train_f, ref_y, num_classes)
        feats: dict[str, list[Tensor]] = {kind: [] for kind in INPUTS}
        preds: dict[str, list[Tensor]] = {kind: [] for kind in INPUTS}
        for s in range(0, len(test_y), batch_size):
            x = _unit(test_x[s : s + batch_size], device)
            y = test_y[s : s + batch_size].to(device)
            x_pgd = perturb(model, x, y, threat, cross_entropy, generator=gen_pgd)
            x_afa = craft_afa_views(
                model, model.features, x, x, y, threat, criterion, generator=gen_afa
            )
            for kind, inp in (("clean", x), ("pgd", x_pgd), ("afa", x_afa)):
                with torch.no_grad():
                    f = model.features(inp).float()
                    preds[kind].append(model.head(f).argmax(dim=1))
                feats[kind].append(f)
        y_all = test_y.to(device)
        empty = torch.zeros(0, train_f.shape[1], device=device)
        cat = {kind: torch.cat(feats[kind]) if feats[kind] else empty for kind in INPUTS}
        inputs = {}
        for kind in INPUTS:
            z = cat[kind]
            pred = torch.cat(preds[kind]) if preds[kind] else y_all[:0]
            ca = centroid_alignment(z, y_all, centroids)
            ka, _ = knn_alignment(z, y_all, train_f, ref_y, k=k, num_classes=num_classes)
            with torch.no_grad():
                out = criterion(torch.cat([cat["clean"], z]), Views.stack(y_all, 1, 1))
            geom = cosine_geometry(z, y_all)
            loss, chance = float(out.afa), float(out.chance)
            inputs[kind] = InputAlignment(
                label=labels[kind],
                accuracy=_rate(pred == y_all),
                centroid_aligned=_rate(ca.aligned),
                knn_aligned=_rate(ka),
                afa_loss=loss,
                afa_chance=chance,
                loss_over_chance=loss / chance if chance > 0 else float("nan"),
                cos_same=geom["within"],
                cos_diff=geom["between"],
                cos_gap=geom["gap"],
                separation=float(class_separation(z, y_all)),
                effective_rank=float(effective_rank(z)),
            )
        probe_result = None
        if probe:
            keep = torch.arange(len(ref_y))
            if probe_train is not None and probe_train < len(ref_y):
                perm = torch.randperm(len(ref_y), generator=torch.Generator().manual_seed(seed))
                keep = perm[:probe_train].sort().values
            keep = keep.to(device)
            probe_result = _linear_probe(train_f[keep], ref_y[keep], cat["clean"], y_all, seed)
        sep_init, sep_seeds = None, None
        if init_reference:
            sep_init, sep_seeds = init_separation(
                model, test_x, test_y, batch_size=batch_size, device=device
            )
    finally:
        model.train(was_training)
    clean = inputs["clean"]
    reasons = judge(clean.separation, clean.effective_rank, sep_init)
    return AlignmentReport(
        n=len(test_y),
        n_train=len(train_y),
        k=k,
        temperature=temperature,
        denominator=denominator,
        threat=dataclasses.asdict(threat),
        inputs=inputs,
        probe=probe_result,
        collapse={
            "separation": clean.separation,
            "effective_rank": clean.effective_rank,
            "separation_init": sep_init,
            "separation_init_seeds": sep_seeds,
            "init_seeds": list(INIT_SEEDS),
            "reasons": reasons,
            "collapsed": bool(reasons),
        },
        seed=seed,
        time_s=time.perf_counter() - start,
    )


def _linear_probe(
    train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, seed: int
) -> dict[str, Any]:
    """Logistic regression (L2, C = 1) on normalised, standardised clean training features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def unit(f: Tensor) -> np.ndarray:
        return F.normalize(f.double(), dim=1).cpu().numpy()

    result: dict[str, Any] = {
        "fitted_on": f"clean features of {len(train_y)} training images",
        "scored_on": f"clean features of the {len(test_y)} held-out images",
        "C": 1.0,
        "accuracy": None,
    }
    if len(torch.unique(train_y)) < 2 or len(test_y) == 0:
        return result
    clf = make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    )
    clf.fit(unit(train_f), train_y.cpu().numpy())
    result["accuracy"] = float((clf.predict(unit(test_f)) == test_y.cpu().numpy()).mean())
    return result


def _pct(v: float | None) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def _num(v: float | None, d: int = 3) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{d}f}"


def alignment_markdown(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """A markdown table of :meth:`AlignmentReport.to_dict` results, one row per name.

    Columns: per input (clean, PGD (CE), PGD (AFA)) the loss over chance, ``cos_gap``, the
    class separation and the centroid-aligned %; then the clean probe %, the clean effective
    rank, the separation of a random initialisation and the collapse verdict.
    """
    head = (
        "| run | clean: loss/chance | cos_gap | separation | aligned % "
        "| CE adversary: loss/chance | cos_gap | separation | aligned % "
        "| AFA adversary: loss/chance | cos_gap | separation | aligned % "
        "| probe % (clean) | eff. rank | separation at init | collapse |"
    )
    lines = [head, "|---" + "|---:" * 16 + "|---|"]
    for name, rep in rows:
        cells = [name]
        for kind in INPUTS:
            i = rep["inputs"][kind]
            cells += [
                _num(i["loss_over_chance"]),
                _num(i["cos_gap"]),
                _num(i["separation"]),
                _pct(i["centroid_aligned"]),
            ]
        col = rep["collapse"]
        cells += [
            _pct((rep.get("probe") or {}).get("accuracy")),
            _num(col["effective_rank"], 1),
            _num(col["separation_init"]),
            "yes" if col["collapsed"] else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        rep = rows[0][1]
        labels = ", ".join(rep["inputs"][k]["label"] for k in INPUTS[1:])
        lines += [
            "",
            f"On g(x), {rep['n']} held-out images; adversaries {labels}; AFA loss at "
            f"temperature {rep['temperature']}, `{rep['denominator']}` denominator "
            "(one clean and one attacked view, the attacked views as anchors); "
            "separation: chance-corrected between-class share of the normalised features' "
            "variance; probe: logistic regression fitted on clean training features.",
        ]
    return "\n".join(lines) + "\n"
