"""``afa compare``: one report over several runs (Markdown, self-contained HTML, JSON).

What a reader needs to judge methods side by side: the methods table sorted by worst-case
robust accuracy, the clean/robust tradeoff, training curves, the evaluation's sanity checks
in plain words (a failed one means the robust numbers are not to be trusted) and the
alignment analysis with its own caveat (when alignment only restates accuracy, it says so).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afa._io import atomic_write_text
from afa.evaluation import binomial_halfwidth
from afa.report.collect import RunSummary, load_run, sanity_messages
from afa.report.figures import plot_corruption_severity, plot_tradeoff, plot_training_curves

__all__ = ["compare"]

log = logging.getLogger("afa")

MISSING = "—"
MOVED_ON = "‡"
"""Marks a run whose checkpoint changed after its eval.json or analysis.json was written."""
FIGURE_DIR = "report_figures"
_ANALYSIS_CAPTIONS = {
    "tsne": "t-SNE of penultimate features (clean: dots, PGD: crosses)",
    "distances": "cosine distance to the own and the nearest other class centroid",
    "aligned_accuracy": "accuracy among centroid-aligned vs misaligned samples",
}


@dataclass
class _Figure:
    path: Path
    caption: str


@dataclass
class _Report:
    title: str
    runs: list[RunSummary]
    attacks: list[str]
    common: dict[str, str | None]
    tradeoff: _Figure | None = None
    curves: dict[str, _Figure] = field(default_factory=dict)
    shifts: list[str] = field(default_factory=list)
    has_ca: bool = False
    severity: _Figure | None = None


_SHIFT_LABELS = {"cifar10.1": "CIFAR-10.1", "cifar10.1-v4": "CIFAR-10.1 v4"}


def _shift_label(name: str) -> str:
    return _SHIFT_LABELS.get(name, name)


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names = [p.name or str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def _sort_key(run: RunSummary) -> tuple[int, float, float]:
    """Worst-case robust accuracy descending, then clean; runs without numbers last."""
    return (
        run.robust_acc is None,
        -(run.robust_acc or 0.0),
        -(run.clean_acc or 0.0),
    )


def _pct(x: float | None) -> str:
    return MISSING if x is None else f"{100 * x:.2f}"


def _duration(s: float | None) -> str:
    if s is None:
        return MISSING
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _common(values: list[str | None]) -> str | None:
    """The value every run that has one shares, else None (then it gets its own column)."""
    present = {v for v in values if v is not None}
    return present.pop() if len(present) == 1 else None


def _chosen_test_sets(rep: _Report) -> bool:
    """Whether any run was scored on a test set other than its own (``afa eval --test-data``)."""
    return any(not r.own_test_set for r in rep.runs)


def _columns(rep: _Report) -> list[str]:
    cols = ["#", "Run", "Method", "Model"]
    if rep.common["dataset"] is None:
        cols.append("Dataset")
    if _chosen_test_sets(rep):  # the test set travels with every row copied out of the table
        cols.append("Test set")
    if rep.common["threat"] is None:
        cols.append("Threat model")
    cols += ["Clean (%)"] + [f"{a} (%)" for a in rep.attacks] + ["Worst case (%)"]
    cols += [f"{_shift_label(s)} (%)" for s in rep.shifts]
    cols += ["Corruptions CA (%)"] if rep.has_ca else []
    cols += ["Aligned clean (%)", "Aligned adv (%)", "Lipschitz", "Train time", "Adv. epochs"]
    return cols


def _cells(rep: _Report, i: int, run: RunSummary) -> list[str]:
    def aligned(x: float | None, split: str) -> str:
        return _pct(x) + (" †" if x is not None and run.restates.get(split) else "")

    name = run.name + (f" {MOVED_ON}" if run.moved_on else "")
    cells = [str(i + 1), name, run.method or MISSING, run.model or MISSING]
    if rep.common["dataset"] is None:
        cells.append(run.dataset or MISSING)
    if _chosen_test_sets(rep):
        cells.append(run.test_set or MISSING)
    if rep.common["threat"] is None:
        cells.append(run.threat or MISSING)
    cells += [_pct(run.clean_acc)] + [_pct(run.attacks.get(a)) for a in rep.attacks]
    cells.append(_pct(run.robust_acc) + (" ⚠" if _failed(run) else ""))
    cells += [_pct(run.shift.get(s)) for s in rep.shifts]
    cells += [_pct(run.corruption_acc)] if rep.has_ca else []
    cells += [
        aligned(run.aligned_clean, "clean"),
        aligned(run.aligned_adv, "adversarial"),
        MISSING if run.lipschitz is None else f"{run.lipschitz:.3g}",
        _duration(run.train_time_s),
        MISSING if run.adversarial_epochs is None else str(run.adversarial_epochs),
    ]
    return cells


def _failed(run: RunSummary) -> bool:
    """A sanity check failed and nothing explained it away (see :func:`sanity_messages`)."""
    return bool(sanity_messages(run)[0])


def _legend(rep: _Report) -> list[str]:
    """Plain sentences under the table."""
    lines = [
        "Sorted by worst-case robust accuracy (the per-example worst case over every attack). "
        f"{MISSING} marks a number that is not available (see the notes).",
    ]
    if any(_failed(r) for r in rep.runs):
        lines.append(
            '⚠ a sanity check of this evaluation failed: see "Sanity checks"; do not trust that robust accuracy.'
        )
    if any(r.moved_on for r in rep.runs):
        lines.append(
            f"{MOVED_ON} the run's checkpoint has changed since its eval.json or analysis.json "
            'was written: those numbers describe earlier weights (see "Notes").'
        )
    if any(r.restates.get(s) for r in rep.runs for s in ("clean", "adversarial")):
        lines.append(
            '† on these inputs the aligned fraction only restates accuracy: see "Feature alignment".'
        )
    lines.append(
        "Aligned: share of test samples whose normalised penultimate feature is closer (cosine) "
        "to its own class centroid than to any other (adv: under PGD). Lipschitz: mean empirical "
        "local Lipschitz constant of the logits over the threat model's ball (Yang et al. 2020). "
        "Train time: summed training-step time of the logged epochs. Adv. epochs: epochs that "
        "crafted adversarial examples."
    )
    if rep.shifts:
        lines.append(
            "CIFAR-10.1: accuracy on the new CIFAR-10 test set of Recht et al. (2018), a natural "
            "distribution shift."
        )
    if rep.has_ca:
        lines.append(
            "Corruptions CA: corruption accuracy, the mean accuracy over every corruption and "
            'severity 1-5 (Hendrycks & Dietterich 2019); see "Common corruptions".'
        )
    return lines


def _corruption_runs(rep: _Report) -> list[tuple[RunSummary, dict[str, Any]]]:
    """The runs with corruption results, each with its ``corruptions`` record."""
    return [(r, r.corruptions) for r in rep.runs if r.corruptions]


def _corruption_table(rep: _Report) -> tuple[list[str], list[list[str]]]:
    """Rows: each corruption (mean over severities), each severity (mean over corruptions),
    clean, CA; one column per run with corruption results."""
    runs = _corruption_runs(rep)
    names: list[str] = []
    severities: list[str] = []
    for _, c in runs:
        names += [n for n in c["per_corruption"] if n not in names]
        severities += [s for s in c.get("per_severity", {}) if s not in severities]

    def cell(r: RunSummary, value: Any) -> str:
        return _pct(value if isinstance(value, (int, float)) else None)

    rows = []
    for n in names:
        rows.append(
            [n.replace("_", " ")]
            + [cell(r, c["per_corruption"].get(n, {}).get("mean_acc")) for r, c in runs]
        )
    for s in severities:
        rows.append(
            [f"severity {s} (mean)"] + [cell(r, c.get("per_severity", {}).get(s)) for r, c in runs]
        )
    rows.append(["clean (same images)"] + [cell(r, c.get("clean_acc")) for r, c in runs])
    rows.append(["CA (mean)"] + [_pct(r.corruption_acc) for r, _ in runs])
    return ["Corruption"] + [f"{r.name} (%)" for r, _ in runs], rows


def _corruption_text(rep: _Report) -> list[tuple[str, str]]:
    """Where the corrupted images came from, what was left out, and comparability."""
    out: list[tuple[str, str]] = []
    runs = _corruption_runs(rep)
    setups: dict[str, list[str]] = {}
    for r, c in runs:
        source = c.get("source")
        n = c.get("n_examples")
        if source == "generated":
            where = (
                f"generated from the first {n} test images by afa.data.transforms.corruptions "
                f"(Hendrycks & Dietterich's CIFAR-10-C constants), seed {c.get('seed')}"
            )
        else:
            where = f"the official files in {source}, the first {n} images of each severity"
        not_run = c.get("not_run") or {}
        if not_run:
            where += "; not run: " + "; ".join(f"{k} ({v})" for k, v in not_run.items())
        setups.setdefault(where, []).append(r.name)
    for where, names in setups.items():
        who = "all runs" if len(names) == len(rep.runs) else ", ".join(names)
        out.append(("note", f"Corrupted images ({who}): {where}."))
    if len(setups) > 1:
        out.append(
            (
                "warn",
                "The runs were scored on different corrupted images: their CA differ in setup.",
            )
        )
    without = [r.name for r in rep.runs if not r.corruptions]
    if without and runs:
        out.append(
            ("note", f"No corruption results (`afa eval --corruptions`): {', '.join(without)}.")
        )
    return out


def _context(rep: _Report) -> list[str]:
    lines = []
    if rep.common["dataset"]:
        lines.append(f"Dataset: {rep.common['dataset']}.")
    else:
        lines.append("Runs use different datasets: compare rows of the same dataset only.")
    if _chosen_test_sets(rep) and rep.common["test_set"] is None:
        lines.append(
            "Runs were scored on different test sets: compare rows of the same test set only."
        )
    if rep.common["threat"]:
        lines.append(f"Threat model (evaluation): {rep.common['threat']}.")
    elif any(r.threat for r in rep.runs):
        lines.append(
            "Runs were evaluated under different threat models: their robust accuracies are not comparable."
        )
    ns = {r.n_examples for r in rep.runs if r.n_examples is not None}
    if len(ns) == 1:
        n = ns.pop()
        lines.append(
            f"Test examples per evaluation: {n}, so each accuracy carries a 95% binomial "
            f"interval of up to ±{100 * binomial_halfwidth(0.5, n):.1f} points (at 50%; "
            f"±{100 * binomial_halfwidth(0.9, n):.1f} at 90% or 10%): smaller differences "
            "between rows are noise."
        )
    elif len(ns) > 1:
        lines.append(
            f"Evaluations used different numbers of test examples ({', '.join(map(str, sorted(ns)))})."
        )
    return lines


_ALIGN_COLS = [
    "Run",
    "Input",
    "Aligned (%)",
    "Accuracy (%)",
    "Acc. if aligned (%)",
    "Acc. if misaligned (%)",
    "Agreement (%)",
    "Nearest-centroid acc. (%)",
    "kNN aligned (%)",
    "Margin AUC",
    "Cos gap",
]
_TEXT_COLS = {
    "Run",
    "Method",
    "Model",
    "Dataset",
    "Test set",
    "Threat model",
    "Input",
    "Corruption",
}


def _alignment_table(rep: _Report) -> list[list[str]]:
    rows = []
    for run in rep.runs:
        for r in run.alignment_rows:
            rows.append(
                [
                    run.name,
                    "clean" if r["input"] == "clean" else "PGD",
                    _pct(r["aligned"]) + (" †" if r["restates"] else ""),
                    _pct(r["accuracy"]),
                    _pct(r["acc_aligned"]),
                    _pct(r["acc_misaligned"]),
                    _pct(r["agreement"]),
                    _pct(r["ncc_accuracy"]),
                    _pct(r["knn_aligned"]),
                    MISSING if r["margin_auc"] is None else f"{r['margin_auc']:.2f}",
                    MISSING if r["cos_gap"] is None else f"{r['cos_gap']:.3f}",
                ]
            )
    return rows


def _alignment_text(rep: _Report) -> list[tuple[str, str]]:
    """``(kind, sentence)`` under the alignment table; kind is ``warn`` or ``note``."""
    out: list[tuple[str, str]] = []
    without = [r.name for r in rep.runs if not r.alignment_rows]
    out.append(
        (
            "note",
            "Aligned: the test sample's normalised penultimate feature is closer (cosine) to its "
            "own class centroid (from clean training features) than to every other centroid. "
            "Agreement: share of samples where 'aligned' and 'correctly classified' coincide. "
            "Nearest-centroid acc.: accuracy of classifying by the nearest centroid. kNN aligned: "
            "the own class wins the vote of the nearest training features. Margin AUC: how well "
            "the alignment margin (distance to the nearest other centroid minus distance to the "
            "own) ranks samples that stay correct under PGD above those that do not (0.5 = no "
            "information). Cos gap: mean cosine within classes minus between classes (it also "
            "shrinks when features spread out, so a small gap alone is no collapse).",
        )
    )
    for setup in dict.fromkeys(r.analysis_setup for r in rep.runs if r.analysis_setup):
        names = [r.name for r in rep.runs if r.analysis_setup == setup]
        who = "all runs" if len(names) == len(rep.runs) else ", ".join(names)
        out.append(("note", f"Measured on ({who}): {setup}."))
    for run in rep.runs:
        for row, note in zip(run.alignment_rows, run.analysis_notes, strict=False):
            if row["restates"]:
                out.append(("warn", f"† {run.name}: {note}"))
    for sentence in dict.fromkeys(r.separation for r in rep.runs if r.separation):
        names = [r.name for r in rep.runs if r.separation == sentence]
        who = "all runs" if len(names) == len(rep.runs) else ", ".join(names)
        out.append(("note", f"Input separation ({who}): {sentence}"))
    if without:
        out.append(
            ("note", f"No alignment analysis (analysis.json missing): {', '.join(without)}.")
        )
    return out


def _figure_groups(rep: _Report) -> list[tuple[str, list[tuple[str, Path]]]]:
    """Analysis figures by kind (so methods sit side by side), each with its runs' files."""
    kinds = list(_ANALYSIS_CAPTIONS) + sorted(
        {k for r in rep.runs for k in r.figures} - set(_ANALYSIS_CAPTIONS)
    )
    groups = []
    for kind in kinds:
        files = [(r.name, r.figures[kind]) for r in rep.runs if kind in r.figures]
        if files:
            groups.append((_ANALYSIS_CAPTIONS.get(kind, kind), files))
    return groups


# ------------------------------------------------------------------------------ Markdown


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _md_table(cols: list[str], rows: list[list[str]]) -> list[str]:
    align = "|".join("---" if c in _TEXT_COLS else "---:" for c in cols)
    return ["| " + " | ".join(cols) + " |", f"|{align}|"] + [
        "| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows
    ]


def _render_md(rep: _Report, out_dir: Path) -> str:
    def rel(p: Path) -> str:
        return Path(os.path.relpath(p, out_dir)).as_posix()

    cols = _columns(rep)
    out = [f"# {rep.title}", "", f"{len(rep.runs)} run(s); generated {_now()}.", ""]
    out += [f"{line}  " for line in _context(rep)] + [""]
    out += ["## Methods", ""]
    out += _md_table(cols, [_cells(rep, i, run) for i, run in enumerate(rep.runs)]) + [""]
    out += [f"{line}  " for line in _legend(rep)] + [""]
    out += ["## Sanity checks", ""]
    for run in rep.runs:
        out += [f"- **{run.name}**: {s}" for s in _sanity_lines(run)]
    out.append("")
    if _corruption_runs(rep):
        out += ["## Common corruptions", ""]
        out += _md_table(*_corruption_table(rep)) + [""]
        out += [
            f"{'**Warning.** ' if kind == 'warn' else ''}{text}  "
            for kind, text in _corruption_text(rep)
        ]
        out.append("")
        if rep.severity:
            out += [f"![{rep.severity.caption}]({rel(rep.severity.path)})", ""]
    out += ["## Feature alignment", ""]
    rows = _alignment_table(rep)
    if rows:
        out += _md_table(_ALIGN_COLS, rows) + [""]
    out += [
        f"{'**Warning.** ' if kind == 'warn' else ''}{text}  "
        for kind, text in _alignment_text(rep)
    ]
    out.append("")
    if rep.tradeoff:
        out += [
            "## Clean vs robust accuracy",
            "",
            f"![{rep.tradeoff.caption}]({rel(rep.tradeoff.path)})",
            "",
        ]
    out += ["## Training curves", ""]
    for run in rep.runs:
        fig = rep.curves.get(run.name)
        out.append(
            f"![{fig.caption}]({rel(fig.path)})" if fig else f"- **{run.name}**: no metrics.jsonl."
        )
    out.append("")
    out += ["## Analysis figures", ""]
    for caption, files in _figure_groups(rep):
        out += [f"### {caption[0].upper()}{caption[1:]}", ""]
        out += [f"![{name}: {caption}]({rel(path)})" for name, path in files] + [""]
    missing = [r.name for r in rep.runs if not r.figures]
    if missing:
        out += [f"No analysis figures (run `afa analyze`): {', '.join(missing)}.", ""]
    notes = [(r.name, n) for r in rep.runs for n in [*r.moved_on, *r.notes]]
    if notes:
        out += ["## Notes", ""] + [f"- **{name}**: {n}." for name, n in notes] + [""]
    return "\n".join(out)


def _sanity_lines(run: RunSummary) -> list[str]:
    failed, explained, passed = sanity_messages(run)
    if not run.sanity:
        if not run.path.is_dir():
            return ["run directory not found."]
        if run.clean_acc is None and run.robust_acc is None:
            return ["not evaluated (no eval.json)."]
        return [
            "no sanity checks were run: the robust accuracies are unchecked for gradient masking."
        ]
    lines = [f"⚠ {m}" for m in failed] + [f"ℹ {m}" for m in explained]
    if passed:
        lines.append(f"{len(passed)} of {len(run.sanity)} checks passed ({', '.join(passed)}).")
    return lines


# ---------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.88rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.3rem 0.5rem; }
th { background: #f1f3f5; text-align: center; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
tr.flagged td { background: #fff7ed; color: #9a3412; }
.legend { font-size: 0.85rem; color: #444; }
.warn { color: #9a3412; background: #fff7ed; border-left: 4px solid #ea580c; padding: 0.35rem 0.6rem; margin: 0.3rem 0; }
.ok { color: #166534; }
.note { color: #555; }
figure { display: inline-block; margin: 0.5rem 1rem 1rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
.grid2 { display: flex; flex-wrap: wrap; gap: 1rem; }
.grid2 figure { width: calc(50% - 0.5rem); margin: 0 0 0.5rem 0; } .grid2 figure img { width: 100%; }
ul.checks { list-style: none; padding-left: 0; } ul.checks li { margin: 0.3rem 0; }
figcaption { font-size: 0.85rem; color: #444; }
"""


def _html_table(cols: list[str], rows: list[list[str]], flagged: list[bool] | None = None) -> str:
    e = html.escape
    out = ['<div class="table-wrap"><table>', "<thead><tr>"]
    out += [f"<th>{e(c)}</th>" for c in cols] + ["</tr></thead>", "<tbody>"]
    for i, row in enumerate(rows):
        out.append('<tr class="flagged">' if flagged and flagged[i] else "<tr>")
        out += [
            f"<td>{e(v)}</td>" if c in _TEXT_COLS else f'<td class="num">{e(v)}</td>'
            for c, v in zip(cols, row, strict=True)
        ]
        out.append("</tr>")
    out += ["</tbody>", "</table></div>"]
    return "".join(out)


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = html.escape(caption)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{cap}" /><figcaption>{cap}</figcaption></figure>'


def _render_html(rep: _Report) -> str:
    e = html.escape
    cols = _columns(rep)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8" />',
        '<meta name="viewport" content="width=device-width, initial-scale=1" />',
        f"<title>{e(rep.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{e(rep.title)}</h1>",
        f'<p class="meta">{len(rep.runs)} run(s); generated {e(_now())}.</p>',
        "<p>" + "<br />".join(e(line) for line in _context(rep)) + "</p>",
        "<h2>Methods</h2>",
        _html_table(
            cols,
            [_cells(rep, i, run) for i, run in enumerate(rep.runs)],
            flagged=[_failed(run) for run in rep.runs],
        ),
    ]
    parts += [f'<p class="legend">{e(line)}</p>' for line in _legend(rep)]

    parts.append("<h2>Sanity checks</h2>")
    parts.append('<ul class="checks">')
    for run in rep.runs:
        for line in _sanity_lines(run):
            cls = "warn" if line.startswith("⚠") else ("ok" if "passed" in line else "note")
            parts.append(f'<li class="{cls}"><strong>{e(run.name)}</strong>: {e(line)}</li>')
    parts.append("</ul>")

    if _corruption_runs(rep):
        parts.append("<h2>Common corruptions</h2>")
        parts.append(_html_table(*_corruption_table(rep)))
        parts += [f'<p class="{kind}">{e(text)}</p>' for kind, text in _corruption_text(rep)]
        if rep.severity:
            parts.append(_img(rep.severity.path, rep.severity.caption))
    parts.append("<h2>Feature alignment</h2>")
    rows = _alignment_table(rep)
    if rows:
        parts.append(_html_table(_ALIGN_COLS, rows))
    parts += [f'<p class="{kind}">{e(text)}</p>' for kind, text in _alignment_text(rep)]

    if rep.tradeoff:
        parts += [
            "<h2>Clean vs robust accuracy</h2>",
            _img(rep.tradeoff.path, rep.tradeoff.caption),
        ]
    parts.append("<h2>Training curves</h2>")
    for run in rep.runs:
        fig = rep.curves.get(run.name)
        parts.append(
            _img(fig.path, fig.caption)
            if fig
            else f'<p class="note">{e(run.name)}: no metrics.jsonl.</p>'
        )
    parts.append("<h2>Analysis figures</h2>")
    for caption, files in _figure_groups(rep):
        wide = caption == _ANALYSIS_CAPTIONS["distances"]
        parts.append(f"<h3>{e(caption[0].upper() + caption[1:])}</h3>")
        parts.append(f'<div class="{"grid1" if wide else "grid2"}">')
        parts += [_img(path, f"{name}: {caption}") for name, path in files]
        parts.append("</div>")
    missing = [r.name for r in rep.runs if not r.figures]
    if missing:
        parts.append(
            '<p class="note">No analysis figures (run <code>afa analyze</code>): '
            f"{e(', '.join(missing))}.</p>"
        )
    notes = [(r.name, n) for r in rep.runs for n in [*r.moved_on, *r.notes]]
    if notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li><strong>{e(name)}</strong>: {e(n)}.</li>" for name, n in notes]
        parts.append("</ul>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _now() -> str:
    return _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()


def _write(path: Path, text: str) -> Path:
    return atomic_write_text(path, text)


def compare(
    run_dirs: Sequence[str | Path], out_dir: str | Path, *, title: str = "afa report"
) -> dict[str, Path]:
    """Write one report over ``run_dirs`` into ``out_dir``.

    Files: ``report.md`` (figures beside it in ``report_figures/``, analysis figures linked
    from the run directories), ``report.html`` (self-contained: CSS inline, every figure
    embedded as a base64 PNG) and ``report.json`` (the table data and the notes).

    Missing pieces of a run (no eval.json, no analysis.json, no metrics.jsonl, even no
    directory) show as "—" with a note; nothing here raises for a run's content.

    Args:
        run_dirs: run directories (each as written by ``afa train``/``eval``/``analyze``).
        out_dir: where the report goes (created).
        title: the report's heading.

    Returns:
        ``{"md": path, "html": path, "json": path}``.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / FIGURE_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in run_dirs]
    runs = [load_run(p, name) for p, name in zip(paths, _unique_names(paths), strict=True)]
    runs.sort(key=_sort_key)
    for run in runs:
        for sentence in run.moved_on:
            log.warning("warning: %s: %s", run.name, sentence)
    attacks: list[str] = []
    for run in runs:
        attacks += [a for a in run.attacks if a not in attacks]
    rep = _Report(
        title=title,
        runs=runs,
        attacks=attacks,
        common={
            "dataset": _common([r.dataset for r in runs]),
            "test_set": _common([r.test_set for r in runs]),
            "threat": _common([r.threat for r in runs]),
        },
    )
    for run in runs:
        rep.shifts += [s for s in run.shift if s not in rep.shifts]
    rep.has_ca = any(r.corruption_acc is not None for r in runs)
    severity = plot_corruption_severity(runs, fig_dir / "corruption_severity.png")
    if severity:
        rep.severity = _Figure(
            severity, "accuracy under common corruptions by severity (mean over corruptions)"
        )
    tradeoff = plot_tradeoff(runs, fig_dir / "tradeoff.png")
    if tradeoff:
        rep.tradeoff = _Figure(tradeoff, "clean vs worst-case robust accuracy, one point per run")
    for k, run in enumerate(runs):
        curve = plot_training_curves(run, fig_dir / f"curves_{k + 1}.png")
        if curve:
            rep.curves[run.name] = _Figure(
                curve, f"{run.name}: training loss and accuracies per epoch"
            )
    md = _write(out_dir / "report.md", _render_md(rep, out_dir))
    page = _write(out_dir / "report.html", _render_html(rep))
    data: dict[str, Any] = {
        "title": title,
        "generated": _now(),
        "attacks": attacks,
        "shift": rep.shifts,
        "dataset": rep.common["dataset"],
        "test_set": rep.common["test_set"],
        "threat_model": rep.common["threat"],
        "runs": [
            {
                **run.row(),
                "rank": i + 1,
                "sanity_messages": sanity_messages(run)[0],
                "analysis_notes": run.analysis_notes,
            }
            for i, run in enumerate(runs)
        ],
    }
    js = _write(out_dir / "report.json", json.dumps(data, indent=2, allow_nan=False) + "\n")
    return {"md": md, "html": page, "json": js}
