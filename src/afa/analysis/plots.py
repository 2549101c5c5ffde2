"""Figures of the alignment analysis, drawn from the JSON-ready result of ``analyze``.

Matplotlib's object API on the Agg canvas (no ``pyplot``, so no global backend switch and
no window): every function builds one figure, writes a PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from afa._io import atomic_open

__all__ = ["plot_aligned_accuracy", "plot_distances", "plot_tsne", "save_figure"]

SPLITS = (("clean", "Clean"), ("adversarial", "Adversarial (PGD)"))
_MARKERS = {"clean": "o", "adversarial": "x"}


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG (Agg canvas) atomically and return the path.

    The PNG is drawn into a temporary file beside ``path`` and renamed over it
    (:func:`afa._io.atomic_open`): a process killed mid-write, or a drawing error, leaves
    the previous figure in place instead of a truncated or empty PNG.
    """
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _class_label(c: int, class_names: Sequence[str] | None) -> str:
    if class_names and 0 <= c < len(class_names) and class_names[c] != str(c):
        return f"{c}: {class_names[c]}"
    return f"class {c}"


def plot_tsne(
    tsne: dict[str, Any],
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "t-SNE of penultimate features",
) -> Path:
    """2-D t-SNE of clean and adversarial features, one colour per class, one marker per split.

    ``tsne`` is ``{"labels": [...], "clean": [[x, y], ...], "adversarial": [[x, y], ...]}``
    (one joint embedding, so the two splits share the axes).
    """
    labels = np.asarray(tsne["labels"], dtype=int)
    classes = np.unique(labels)
    cmap = _class_colours(len(classes))
    fig = Figure(figsize=(7.5, 6.2))
    ax = fig.add_subplot()
    for split, _ in SPLITS:
        pts = np.asarray(tsne.get(split) or [], dtype=float).reshape(-1, 2)
        if not len(pts):
            continue
        for i, c in enumerate(classes):
            sel = labels[: len(pts)] == c
            ax.scatter(
                pts[sel, 0],
                pts[sel, 1],
                s=10 if split == "clean" else 14,
                marker=_MARKERS[split],
                color=cmap[i],
                alpha=0.55 if split == "clean" else 0.8,
                linewidths=0.8,
            )
    class_handles = [
        ax.scatter([], [], marker="s", color=cmap[i], label=_class_label(int(c), class_names))
        for i, c in enumerate(classes)
    ]
    split_handles = [
        ax.scatter([], [], marker=_MARKERS[s], color="0.3", label=name) for s, name in SPLITS
    ]
    leg = ax.legend(
        handles=class_handles,
        title="class",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
    )
    ax.add_artist(leg)
    ax.legend(
        handles=split_handles,
        title="input",
        loc="lower left",
        bbox_to_anchor=(1.01, 0.0),
        fontsize=8,
    )
    ax.set_title(
        f"{title}\n(n = {len(labels)} test samples, clean and PGD views embedded jointly)",
        fontsize=10,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    return save_figure(fig, path)


def _class_colours(n: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [tuple(cmap(i % cmap.N)) for i in range(n)]


def plot_distances(samples: dict[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """Histograms of the cosine distance to the own centroid and to the nearest other one.

    ``samples`` is ``{"clean": {"d_own": [...], "d_other": [...]}, "adversarial": {...}}``.
    A sample is aligned when its own-centroid distance is the smaller one.
    """
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    values = [
        np.asarray(samples.get(s, {}).get(k) or [], dtype=float)
        for s, _ in SPLITS
        for k in ("d_own", "d_other")
    ]
    finite = (
        np.concatenate([v for v in values if len(v)])
        if any(len(v) for v in values)
        else np.zeros(1)
    )
    bins = np.linspace(min(0.0, float(finite.min())), max(1e-6, float(finite.max())), 41)
    for ax, (split, name) in zip(axes, SPLITS, strict=True):
        d = samples.get(split, {})
        own = np.asarray(d.get("d_own") or [], dtype=float)
        other = np.asarray(d.get("d_other") or [], dtype=float)
        if len(own):
            ax.hist(own, bins=bins, alpha=0.6, color="tab:blue", label="to own class centroid")
            ax.hist(other, bins=bins, alpha=0.6, color="tab:red", label="to nearest other centroid")
            aligned = float(np.mean(own < other))
            ax.set_title(f"{name}: {aligned:.1%} aligned (n = {len(own)})", fontsize=10)
        else:
            ax.set_title(f"{name}: no samples", fontsize=10)
        ax.set_xlabel("cosine distance 1 - cos(z, centroid)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("samples")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def plot_aligned_accuracy(
    alignment: dict[str, Any], path: str | Path, *, title: str | None = None
) -> Path:
    """Bars: classifier accuracy among aligned vs misaligned samples, clean and adversarial.

    ``alignment`` is ``{"clean": summary, "adversarial": summary}`` with the keys of
    :func:`afa.analysis.alignment.summarize`.
    """
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    width = 0.38
    xs = np.arange(len(SPLITS))
    for j, (key, n_key, name, colour) in enumerate(
        (
            ("acc_aligned", "n_aligned", "centroid-aligned samples", "tab:green"),
            ("acc_misaligned", "n_misaligned", "misaligned samples", "tab:orange"),
        )
    ):
        for i, (split, _) in enumerate(SPLITS):
            s = alignment.get(split) or {}
            acc, n = s.get(key), s.get(n_key, 0)
            x = xs[i] + (j - 0.5) * width
            ax.bar(
                x,
                0 if acc is None else 100 * acc,
                width,
                color=colour,
                label=name if i == 0 else None,
            )
            text = "n/a" if acc is None else f"{100 * acc:.1f}%"
            ax.text(
                x,
                (0 if acc is None else 100 * acc) + 1.5,
                f"{text}\nn={n}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(xs, [name for _, name in SPLITS])
    ax.set_ylim(0, 130)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("classifier accuracy (%)")
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    ax.set_title(title or "Accuracy among aligned vs misaligned samples", fontsize=10)
    return save_figure(fig, path)
