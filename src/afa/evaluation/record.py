"""``eval.json`` (RobustBench ``model_info`` style, numbers as numbers) and the markdown table."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import afa
from afa._io import write_json
from afa.attacks import format_radius
from afa.evaluation.result import CLEAN, EvalResult


def eval_record(result: EvalResult, *, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``eval.json`` content (RobustBench ``model_info`` style), numbers as numbers.

    ``extra`` (e.g. ``dataset``, ``model``, ``method``, ``checkpoint``,
    ``threat_overrides``) is merged at the top level; it may not replace a measured key.
    ``settings`` (when the result carries them) holds the evaluation attacks' settings,
    each attack's resolved (:meth:`EvalSettings.record`, read back by
    :meth:`EvalSettings.from_record`); each sanity check keeps the numbers behind its value
    under ``details``. ``per_example`` holds, as strings of ``0``/``1`` in evaluation order,
    whether each example is correct clean and under the worst case of the attacks.
    """
    import pyautoattack

    extra = dict(extra or {})
    record: dict[str, Any] = {
        "dataset": extra.pop("dataset", None),
        "model": extra.pop("model", None),
        "method": extra.pop("method", None),
        # Only what every attack shares; each attack records its own steps, step size,
        # restarts and BN mode under "attacks".
        "threat_model": {
            "norm": result.threat.norm,
            "eps": result.threat.eps,
            "description": describe_radius(result.threat.norm, result.threat.eps),
        },
        "n_examples": result.n_examples,
        "clean_acc": result.clean_acc,
        "n_correct": result.n_correct(CLEAN),
        "attacks": {
            label: {
                "robust_acc": result.acc(label),
                "n_correct": result.n_correct(label),
                **result.attacks.get(label, {}),
            }
            for label in result.columns[1:]
        },
        "robust_acc": result.robust_acc,
        "n_robust": int(result.worst_case.sum()),
        # Per example, in evaluation order: lets two models evaluated on the same images be
        # compared pairwise (a much tighter interval than two independent accuracies).
        "per_example": {
            "clean": flags(result.correct[:, result.columns.index(CLEAN)]),
            "robust": flags(result.worst_case),
        },
        "sanity": {name: c.record() for name, c in result.sanity.items()},
        "versions": {
            "afa": afa.__version__,
            "torch": torch.__version__,
            "pyautoattack": pyautoattack.__version__,
            "python": platform.python_version(),
        },
        "seed": result.seed,
        "time_s": result.time_s,
    }
    if result.settings is not None:
        record["settings"] = result.settings.record(result.attack_names)
    clash = sorted(set(extra) & set(record))
    if clash:
        raise ValueError(f"write_eval_json: extra may not replace {clash}")
    record.update(extra)
    return record


def flags(mask: torch.Tensor) -> str:
    """A boolean vector as a string of ``0`` and ``1``, one character per example."""
    return "".join("1" if v else "0" for v in mask.tolist())


def write_eval_json(
    result: EvalResult, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write :func:`eval_record` to ``path`` atomically.

    Returns:
        The record written.
    """
    record = eval_record(result, extra=extra)
    write_json(Path(path), record)
    return record


def format_table(
    results: Mapping[str, EvalResult | Mapping[str, Any]]
    | Sequence[tuple[str, EvalResult | Mapping[str, Any]]],
) -> str:
    """A markdown table: one row per result, sorted by worst-case robust accuracy (best first).

    Args:
        results: ``{name: result}`` or ``[(name, result), ...]``; a result is an
            :class:`EvalResult` or a loaded ``eval.json`` record.

    Returns:
        Columns: name, clean, each attack (in order of first appearance), worst case; accuracies
        in percent; "–" where a row did not run an attack.
    """
    items = list(results.items()) if isinstance(results, Mapping) else list(results)
    rows = [(name, r if isinstance(r, Mapping) else eval_record(r)) for name, r in items]
    labels: list[str] = []
    for _, rec in rows:
        labels += [a for a in rec["attacks"] if a not in labels]
    rows.sort(key=lambda row: -row[1]["robust_acc"])

    def pct(v: float) -> str:
        return f"{100 * v:.2f}"

    head = ["", "clean", *labels, "robust (worst case)"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for name, rec in rows:
        cells = [str(name), pct(rec["clean_acc"])]
        cells += [
            pct(rec["attacks"][a]["robust_acc"]) if a in rec["attacks"] else "–" for a in labels
        ]
        cells.append(pct(rec["robust_acc"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_radius(norm: str, eps: float) -> str:
    """``Linf eps=8/255``: the threat model's radius, which every evaluation attack shares."""
    return f"{'Linf' if norm == 'linf' else 'L2'} eps={format_radius(eps)}"


def binomial_halfwidth(acc: float, n: int, z: float = 1.96) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy on ``n`` examples:
    ``z * sqrt(acc (1 - acc) / n)``; the evaluation noise a table of ``n`` points carries."""
    return z * math.sqrt(max(acc * (1 - acc), 0.0) / n) if n > 0 else float("nan")
