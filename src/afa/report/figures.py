"""The report's own figures: the clean/robust tradeoff, each run's training curves and the
accuracy under corruptions by severity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from afa.analysis.plots import save_figure
from afa.report.collect import RunSummary

__all__ = ["plot_corruption_severity", "plot_tradeoff", "plot_training_curves"]


def plot_tradeoff(runs: Sequence[RunSummary], path: str | Path) -> Path | None:
    """Clean accuracy (x) vs worst-case robust accuracy (y), one labelled point per run.

    Runs without both numbers are left out; ``None`` when no run has them.
    """
    pts = [
        (r, r.clean_acc, r.robust_acc)
        for r in runs
        if r.clean_acc is not None and r.robust_acc is not None
    ]
    if not pts:
        return None
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    xs = np.array([100 * c for _, c, _ in pts])
    ys = np.array([100 * a for _, _, a in pts])
    ax.scatter(xs, ys, s=46, color="tab:blue", zorder=3)
    for (run, _, _), x, y in zip(pts, xs, ys, strict=True):
        ax.annotate(run.name, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9)
    pad_x = max(2.0, 0.12 * (xs.max() - xs.min()))
    pad_y = max(2.0, 0.12 * (ys.max() - ys.min()))
    ax.set_xlim(max(0, xs.min() - pad_x), min(100, xs.max() + 3 * pad_x))
    ax.set_ylim(max(0, ys.min() - pad_y), min(100, ys.max() + 2 * pad_y))
    ax.grid(alpha=0.3)
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("robust accuracy, worst case over attacks (%)")
    ax.set_title("Clean vs robust accuracy (up and right is better)", fontsize=11)
    return save_figure(fig, path)


def _series(rows: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i, r in enumerate(rows):
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            xs.append(r.get("global_epoch", i + 1))
            ys.append(float(v))
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def plot_training_curves(run: RunSummary, path: str | Path) -> Path | None:
    """Training loss and validation accuracies vs epoch, stage boundaries marked.

    The x axis is the epoch counted over all stages (``global_epoch``, else the line
    number); each new stage starts at a dashed line labelled with its name.
    """
    rows = run.metrics
    if not rows:
        return None
    rows = [dict(r, global_epoch=r.get("global_epoch", i + 1)) for i, r in enumerate(rows)]
    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    # Loss of each stage separately: stages optimise different losses.
    stages: list[tuple[str, list[dict]]] = []
    for r in rows:
        stage = str(r.get("stage", "train"))
        if not stages or stages[-1][0] != stage:
            stages.append((stage, []))
        stages[-1][1].append(r)
    colours = ["tab:blue", "tab:purple", "tab:brown", "tab:gray"]
    for i, (stage, stage_rows) in enumerate(stages):
        x, y = _series(stage_rows, "train/loss")
        if len(x):
            ax_loss.plot(
                x, y, marker="o", ms=3, color=colours[i % len(colours)], label=f"{stage} loss"
            )
    curves = (
        ("train/acc", "train accuracy", "tab:gray", ":"),
        ("val/clean_acc", "val clean accuracy", "tab:green", "-"),
        ("val/pgd_acc", "val PGD accuracy", "tab:red", "-"),
    )
    plotted = False
    for key, label, colour, style in curves:
        x, y = _series(rows, key)
        if len(x):
            ax_acc.plot(x, 100 * y, marker="o", ms=3, color=colour, linestyle=style, label=label)
            plotted = True
    for ax in (ax_loss, ax_acc):
        for stage, stage_rows in stages[1:]:
            start = stage_rows[0]["global_epoch"] - 0.5
            ax.axvline(start, color="0.5", linestyle="--", linewidth=1)
            ax.annotate(
                f"stage: {stage}",
                (start, 1),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
                fontsize=8,
                color="0.3",
            )
        ax.set_xlabel("epoch (all stages)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("Training loss", fontsize=10)
    if ax_loss.lines:
        ax_loss.legend(fontsize=8)
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_title("Accuracies (validation under the run's threat model)", fontsize=10)
    if plotted:
        ax_acc.legend(fontsize=8)
    else:
        ax_acc.text(
            0.5, 0.5, "no accuracies logged", ha="center", va="center", transform=ax_acc.transAxes
        )
    fig.suptitle(f"{run.name}: training curves", fontsize=11)
    return save_figure(fig, path)


def plot_corruption_severity(runs: Sequence[RunSummary], path: str | Path) -> Path | None:
    """Accuracy vs corruption severity, one line per run: clean accuracy at severity 0, then
    the mean over corruptions at each severity (Hendrycks & Dietterich 2019); the legend gives
    each run's corruption accuracy (CA).

    ``None`` when no run has corruption results.
    """
    lines = []
    for r in runs:
        per = (r.corruptions or {}).get("per_severity")
        if not isinstance(per, dict) or not per:
            continue
        pts = sorted((int(s), float(a)) for s, a in per.items() if isinstance(a, (int, float)))
        clean = (r.corruptions or {}).get("clean_acc")
        if isinstance(clean, (int, float)):
            pts = [(0, float(clean)), *pts]
        if pts:
            lines.append((r, pts))
    if not lines:
        return None
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for r, pts in lines:
        xs, ys = zip(*pts, strict=True)
        ca = "" if r.corruption_acc is None else f" (CA {100 * r.corruption_acc:.1f}%)"
        ax.plot(xs, [100 * y for y in ys], marker="o", ms=4, label=f"{r.name}{ca}")
    ax.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
    ax.set_xlabel("corruption severity")
    ax.set_ylabel("accuracy, mean over corruptions (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy under common corruptions", fontsize=11)
    return save_figure(fig, path)
