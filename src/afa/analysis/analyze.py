"""The feature-alignment analysis of a trained classifier, as one JSON-ready dict.

:func:`analyze` composes :mod:`~afa.analysis.alignment`, :mod:`~afa.analysis.geometry`,
:mod:`~afa.analysis.lipschitz` and :mod:`~afa.analysis.separation` on a (seeded) subset of
the data; :func:`write_analysis` writes ``analysis.json`` atomically and the figures.
Definitions are those of docs/method.md, "Measuring alignment", detailed in each module.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from afa._io import atomic_write_text, write_json
from afa.analysis import plots
from afa.analysis.alignment import (
    centroid_alignment,
    class_centroids,
    knn_alignment,
    margin_vs_robustness,
    restatement,
    summarize,
)
from afa.analysis.geometry import cosine_geometry
from afa.analysis.lipschitz import local_lipschitz, summarize_lipschitz
from afa.analysis.measure import alignment_markdown, measure_alignment
from afa.analysis.separation import input_separation
from afa.attacks import ThreatModel, cross_entropy, perturb, pgd_label
from afa.data import to_float
from afa.errors import ConfigError
from afa.models.base import Classifier

__all__ = ["FIGURES", "analyze", "write_analysis"]

FIGURES = {
    "tsne": "analysis_tsne.png",
    "distances": "analysis_distances.png",
    "aligned_accuracy": "analysis_aligned_accuracy.png",
}
"""File names of the figures ``write_analysis`` writes beside ``analysis.json``."""

SPLITS = ("clean", "adversarial")


def _tensor(a: np.ndarray | Tensor) -> Tensor:
    return a if isinstance(a, Tensor) else torch.from_numpy(np.asarray(a))


def _to_unit(x: Tensor, device: torch.device) -> Tensor:
    """A batch as float32 in [0, 1] on ``device`` (uint8 pixels divided by 255)."""
    return to_float(x, device) if x.dtype == torch.uint8 else x.to(device).float()


def _subset(n_total: int, n: int | None, gen: torch.Generator) -> Tensor:
    """Sorted indices of a seeded random subset of size ``n`` (all when ``None``)."""
    if n is None or n >= n_total:
        return torch.arange(n_total)
    if n < 1:
        raise ValueError(f"subset size must be >= 1, got {n}")
    return torch.randperm(n_total, generator=gen)[:n].sort().values


@torch.no_grad()
def _features(model: Classifier, images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    out = [
        model.features(_to_unit(images[s : s + batch_size], device))
        for s in range(0, len(images), batch_size)
    ]
    return torch.cat(out).float() if out else torch.zeros(0, model.num_features, device=device)


def analyze(
    model: Classifier,
    train_images: np.ndarray | Tensor,
    train_labels: np.ndarray | Tensor,
    test_images: np.ndarray | Tensor,
    test_labels: np.ndarray | Tensor,
    threat: ThreatModel,
    *,
    k: int = 10,
    n_test: int | None = None,
    n_train: int | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int = 0,
    tsne_samples: int = 1000,
    lipschitz: bool = True,
    separation: bool = True,
    alignment: bool = True,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Feature alignment, geometry, local Lipschitzness and input separation of ``model``.

    Features are ``normalize(model.features(x))`` with the model in eval mode (its mode is
    restored on return). Centroids and kNN neighbours come from the clean training subset;
    adversarial test inputs are PGD under ``threat`` on the cross-entropy objective
    (:func:`afa.attacks.perturb`), seeded by ``seed``.

    Args:
        model: a :class:`~afa.models.base.Classifier`.
        train_images, train_labels: training images (uint8 in [0, 255] or float in [0, 1])
            and labels; the source of centroids and neighbours.
        test_images, test_labels: the evaluated samples.
        threat: the run's threat model (adversaries and the Lipschitz ball).
        k: neighbours of the kNN rule.
        n_test, n_train: seeded random subsets (``None``: all).
        batch_size: examples per forward / attack batch.
        device: where to compute (default: the model's device).
        seed: subsets, attack random starts, t-SNE.
        tsne_samples: test samples embedded by t-SNE (0 disables it).
        lipschitz: estimate the local Lipschitz constant on the test subset.
        separation: the exact L∞ separation of the *subsets* (train-train, test-train); a
            minimum over a subset is an upper bound of the full data's.
        alignment: the alignment protocol on the same subsets
            (:func:`~afa.analysis.measure.measure_alignment`: AFA loss over chance,
            ``cos_gap``, class separation and aligned fractions, clean and under PGD on CE
            and on the AFA term; the linear probe; the collapse indicator), under
            ``feature_alignment``.
        class_names: names for the figures.

    Returns:
        A JSON-ready dict (numbers as numbers, ``None`` for undefined rates) with keys
        ``threat_model``, ``n_train``, ``n_test``, ``k``, ``seed``, ``num_classes``,
        ``accuracy`` {clean, adversarial}, ``alignment`` {centroid, knn} x {clean,
        adversarial} (see :func:`~afa.analysis.alignment.summarize`),
        ``nearest_centroid_accuracy``, ``knn_accuracy``, ``restates_accuracy`` and
        ``notes`` (the plain-words verdict), ``distances`` (mean/median of ``d_own``,
        ``d_other``, ``margin``), ``margin_vs_robustness``, ``geometry``, ``lipschitz``,
        ``separation``, ``feature_alignment``, ``tsne``, ``samples`` (per-sample distances for the figures),
        ``class_names``, ``versions``, ``time_s``.

    Shape:
        images: (N, C, H, W); labels: (N,).
    """
    start = time.perf_counter()
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    train_x, train_y = _tensor(train_images), _tensor(train_labels).long().reshape(-1)
    test_x, test_y = _tensor(test_images), _tensor(test_labels).long().reshape(-1)
    num_classes = int(model.num_classes)
    tr = _subset(len(train_y), n_train, gen)
    te = _subset(len(test_y), n_test, gen)
    train_x, train_y = train_x[tr], train_y[tr]
    missing = sorted(set(range(num_classes)) - set(train_y.tolist()))
    if missing:
        raise ConfigError(
            f"n_train={n_train}: the training subset has no example of classes {missing}, so "
            "their centroids are undefined; use a larger n_train (--n-train) or all of it"
        )
    if k > len(train_y):  # the kNN rule would quietly use fewer neighbours than recorded
        raise ConfigError(
            f"k={k} (--k): expected at most the {len(train_y)} training examples the "
            "neighbours are drawn from (--n-train)"
        )
    test_x, test_y = test_x[te], test_y[te]
    attack_gen = torch.Generator().manual_seed(seed + 1)

    was_training = model.training
    model.eval()
    try:
        train_f = _features(model, train_x, batch_size, device)
        train_y_dev = train_y.to(device)
        centroids = class_centroids(train_f, train_y_dev, num_classes)
        feats: dict[str, list[Tensor]] = {s: [] for s in SPLITS}
        preds: dict[str, list[Tensor]] = {s: [] for s in SPLITS}
        lips: list[Tensor] = []
        lip_gen = torch.Generator().manual_seed(seed + 2)
        for s in range(0, len(test_y), batch_size):
            x = _to_unit(test_x[s : s + batch_size], device)
            y = test_y[s : s + batch_size].to(device)
            x_adv = perturb(model, x, y, threat, cross_entropy, generator=attack_gen)
            for split, inp in (("clean", x), ("adversarial", x_adv)):
                with torch.no_grad():
                    f = model.features(inp)
                    preds[split].append(model.head(f).argmax(dim=1))
                feats[split].append(f.float())
            if lipschitz:
                lips.append(
                    local_lipschitz(model, x, threat, batch_size=batch_size, generator=lip_gen)
                )
        y_dev = test_y.to(device)
        result: dict[str, Any] = {
            "threat_model": dataclasses.asdict(threat),
            "attack": pgd_label(threat, "CE"),
            "n_train": len(train_y),
            "n_test": len(test_y),
            "k": k,
            "seed": seed,
            "num_classes": num_classes,
            "class_names": list(class_names) if class_names else None,
        }
        acc, per_sample, align_c, align_k, ncc_acc, knn_acc, geom = {}, {}, {}, {}, {}, {}, {}
        restates, notes, dists = {}, [], {}
        for split in SPLITS:
            z = (
                torch.cat(feats[split])
                if feats[split]
                else torch.zeros(0, train_f.shape[1], device=device)
            )
            pred = (
                torch.cat(preds[split])
                if preds[split]
                else torch.zeros(0, dtype=torch.long, device=device)
            )
            correct = pred == y_dev
            ca = centroid_alignment(z, y_dev, centroids)
            ka, kpred = knn_alignment(z, y_dev, train_f, train_y_dev, k=k, num_classes=num_classes)
            acc[split] = _mean(correct)
            align_c[split] = summarize(ca.aligned, correct, y_dev, num_classes)
            align_k[split] = summarize(ka, correct, y_dev, num_classes)
            ncc_acc[split] = _mean(ca.prediction == y_dev)
            knn_acc[split] = _mean(kpred == y_dev)
            restates[split], note = restatement(align_c[split], split)
            notes.append(note)
            geom[split] = cosine_geometry(z, y_dev)
            dists[split] = {
                name: _stats(getattr(ca, name)) for name in ("d_own", "d_other", "margin")
            }
            per_sample[split] = {"ca": ca, "correct": correct, "z": z}
        robust = per_sample["adversarial"]["correct"]
        result.update(
            accuracy=acc,
            alignment={"centroid": align_c, "knn": align_k},
            nearest_centroid_accuracy=ncc_acc,
            knn_accuracy=knn_acc,
            restates_accuracy=restates,
            notes=notes,
            distances=dists,
            margin_vs_robustness={
                "target": "correct under the PGD (CE) adversary",
                "clean_margin": margin_vs_robustness(per_sample["clean"]["ca"].margin, robust),
                "adversarial_margin": margin_vs_robustness(
                    per_sample["adversarial"]["ca"].margin, robust
                ),
            },
            geometry=geom,
        )
        result["lipschitz"] = (
            summarize_lipschitz(torch.cat(lips) if lips else torch.zeros(0), threat, "logits")
            if lipschitz
            else None
        )
        result["separation"] = (
            input_separation(
                train_x,
                train_y,
                test_x,
                test_y,
                eps=threat.eps,
                num_classes=num_classes,
                device=device,
            )
            if separation
            else None
        )
        result["feature_alignment"] = (
            measure_alignment(
                model,
                train_x,
                train_y,
                test_x,
                test_y,
                threat,
                k=k,
                batch_size=batch_size,
                device=device,
                seed=seed,
            ).to_dict()
            if alignment
            else None
        )
        result["tsne"] = _tsne(per_sample, y_dev, tsne_samples, seed)
        result["samples"] = {
            split: {
                name: _rounded(getattr(per_sample[split]["ca"], name))
                for name in ("d_own", "d_other")
            }
            for split in SPLITS
        }
    finally:
        model.train(was_training)
    result["versions"] = {"torch": torch.__version__, "numpy": np.__version__}
    result["time_s"] = time.perf_counter() - start
    return result


def _mean(b: Tensor) -> float | None:
    """A rate as a count divided once (exact, unlike a float32 mean)."""
    return int(b.sum()) / b.numel() if b.numel() else None


def _stats(t: Tensor) -> dict[str, float | None]:
    t = t.double()
    if not t.numel():
        return {"mean": None, "median": None}
    return {"mean": float(t.mean()), "median": float(t.median())}


def _rounded(t: Tensor, digits: int = 5) -> list[float]:
    return [round(float(v), digits) for v in t.cpu().tolist()]


def _tsne(per_sample: dict[str, Any], labels: Tensor, n: int, seed: int) -> dict[str, Any] | None:
    """A joint 2-D t-SNE of clean and adversarial features of ``n`` test samples."""
    total = len(labels)
    n = min(n, total)
    if n < 3:
        return None
    from sklearn.manifold import TSNE

    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed + 3))[:n].sort().values
    idx_dev = idx.to(labels.device)
    z = torch.cat([F.normalize(per_sample[s]["z"][idx_dev], dim=1) for s in SPLITS]).cpu().numpy()
    perplexity = float(min(30.0, (len(z) - 1) / 3))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        z
    )
    emb = np.round(emb.astype(np.float64), 3)
    return {
        "labels": labels[idx_dev].cpu().tolist(),
        "indices": idx.tolist(),
        "clean": emb[:n].tolist(),
        "adversarial": emb[n:].tolist(),
        "perplexity": perplexity,
    }


def write_analysis(
    run_dir: str | Path, result: dict[str, Any], figures: bool = True
) -> dict[str, Path]:
    """Write ``analysis.json`` (atomically), ``analysis.md`` and, with ``figures``, the PNGs.

    The figures are drawn from ``result`` alone, so they can be redrawn from the JSON. Their
    file names are recorded under ``result["figures"]`` before the JSON is written.
    ``analysis.md`` (atomic) holds the alignment protocol's table when ``result`` has a
    ``feature_alignment`` section.

    Returns:
        ``{"json": path, "markdown": path (when written), "<figure name>": path, ...}``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    written: dict[str, str] = {}
    if figures:
        names = result.get("class_names")
        if result.get("tsne"):
            paths["tsne"] = plots.plot_tsne(
                result["tsne"], run_dir / FIGURES["tsne"], class_names=names
            )
        if result.get("samples"):
            paths["distances"] = plots.plot_distances(
                result["samples"], run_dir / FIGURES["distances"]
            )
        centroid = (result.get("alignment") or {}).get("centroid")
        if centroid:
            paths["aligned_accuracy"] = plots.plot_aligned_accuracy(
                centroid, run_dir / FIGURES["aligned_accuracy"]
            )
        written = {name: p.name for name, p in paths.items()}
    result["figures"] = written
    out = run_dir / "analysis.json"
    write_json(out, result)
    paths["json"] = out
    if result.get("feature_alignment"):
        text = "# Feature alignment\n\n" + alignment_markdown(
            [(run_dir.name, result["feature_alignment"])]
        )
        paths["markdown"] = atomic_write_text(run_dir / "analysis.md", text)
    return paths
