"""Read what a run directory holds into one flat summary, tolerating every missing piece.

A run directory may hold ``config.yaml``, ``metrics.jsonl``, ``eval.json``,
``analysis.json`` and the analysis figures. Each is optional here: what is absent or
unreadable becomes ``None`` and a note saying so, never an exception.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from afa._io import read_jsonl
from afa.attacks.threat import format_radius
from afa.config import parse_number, parse_yaml
from afa.errors import ConfigError

__all__ = ["RunSummary", "load_run", "sanity_messages"]


@dataclass
class RunSummary:
    """Everything the report shows about one run.

    Attributes:
        name: a short unique label (the directory name unless two runs share it).
        path: the run directory.
        method, model, dataset: from config.yaml, else eval.json.
        threat: a one-line description of the evaluated threat model.
        clean_acc, robust_acc: clean and worst-case accuracy from eval.json.
        attacks: accuracy under each attack, by attack label.
        aligned_clean, aligned_adv: centroid-aligned fractions from analysis.json.
        restates: the analysis's "alignment only restates accuracy" flags by split.
        lipschitz: mean empirical local Lipschitz constant.
        separation: the analysis's input-separation finding, in words.
        test_set: the test set eval.json scored (``npz:held.npz``, ``digits test split``).
        own_test_set: whether it is the run's own test split (False: ``--test-data``).
        shift: accuracy on each natural-shift test set of eval.json (``shift.cifar10.1``).
        corruption_acc: corruption accuracy (CA, the mean over corruptions and severities).
        corruptions: eval.json's ``shift.corruptions`` record (per corruption and severity).
        train_time_s: summed ``time_s`` of metrics.jsonl (training steps, no validation).
        adversarial_epochs: from eval.json, else computed from config.yaml.
        epochs: completed epochs per stage, in order.
        metrics: the metrics.jsonl records.
        sanity: eval.json's sanity checks.
        analysis_notes: the analysis's plain-words notes.
        alignment_rows: per input kind (clean, adversarial), the alignment measurements.
        analysis_setup: what the analysis measured on (samples, adversary), in words.
        figures: analysis figure name -> path.
        moved_on: one sentence per result file (eval.json, analysis.json) whose recorded
            checkpoint the run's checkpoint no longer is (a later epoch, a re-trained run).
        notes: what is missing or unreadable.
    """

    name: str
    path: Path
    method: str | None = None
    model: str | None = None
    dataset: str | None = None
    threat: str | None = None
    clean_acc: float | None = None
    robust_acc: float | None = None
    n_examples: int | None = None
    test_set: str | None = None
    own_test_set: bool = True
    attacks: dict[str, float | None] = field(default_factory=dict)
    aligned_clean: float | None = None
    aligned_adv: float | None = None
    restates: dict[str, bool] = field(default_factory=dict)
    lipschitz: float | None = None
    separation: str | None = None
    shift: dict[str, float | None] = field(default_factory=dict)
    corruption_acc: float | None = None
    corruptions: dict[str, Any] | None = None
    train_time_s: float | None = None
    adversarial_epochs: int | None = None
    epochs: dict[str, int] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    sanity: dict[str, dict[str, Any]] = field(default_factory=dict)
    analysis_notes: list[str] = field(default_factory=list)
    alignment_rows: list[dict[str, Any]] = field(default_factory=list)
    analysis_setup: str | None = None
    figures: dict[str, Path] = field(default_factory=dict)
    moved_on: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The table row as JSON-ready data."""
        return {
            "name": self.name,
            "path": str(self.path),
            "method": self.method,
            "model": self.model,
            "dataset": self.dataset,
            "threat": self.threat,
            "clean_acc": self.clean_acc,
            "attacks": dict(self.attacks),
            "robust_acc": self.robust_acc,
            "n_examples": self.n_examples,
            "test_set": self.test_set,
            "own_test_set": self.own_test_set,
            "aligned_clean": self.aligned_clean,
            "aligned_adv": self.aligned_adv,
            "alignment_restates_accuracy": dict(self.restates),
            "lipschitz": self.lipschitz,
            "separation": self.separation,
            "shift": dict(self.shift),
            "corruption_acc": self.corruption_acc,
            "train_time_s": self.train_time_s,
            "adversarial_epochs": self.adversarial_epochs,
            "epochs": dict(self.epochs),
            "sanity_failed": [n for n, c in self.sanity.items() if c.get("passed") is False],
            "checkpoint_moved_on": list(self.moved_on),
            "notes": list(self.notes),
        }


def _num(value: Any) -> float | None:
    """A finite float, else None (eval files are numbers, but tolerate strings and junk)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        notes.append(f"no {path.name}")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name} unreadable ({exc.__class__.__name__}: {exc})")
        return None
    if not isinstance(data, dict):
        notes.append(f"{path.name} is not a JSON object")
        return None
    return data


def _read_config(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        notes.append("no config.yaml")
        return None
    try:  # within the bounds of a config (a run directory may come from anywhere)
        data = parse_yaml(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        notes.append(f"config.yaml unreadable ({exc.__class__.__name__})")
        return None
    return data if isinstance(data, dict) else None


def _read_metrics(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    if not path.is_file():
        notes.append("no metrics.jsonl")
        return []
    bad: list[int] = []
    try:
        rows = read_jsonl(path, on_bad_line=lambda number, _line: bad.append(number))
    except OSError as exc:
        notes.append(f"metrics.jsonl unreadable ({exc.__class__.__name__})")
        return []
    if bad:
        notes.append(f"metrics.jsonl: {len(bad)} unreadable line(s) skipped")
    return rows


def _adversarial_epochs_from_config(raw: dict[str, Any]) -> int | None:
    """The training plan's own count, when the config parses (it may be a partial one)."""
    try:
        from afa.runs import adversarial_epochs, parse_run_config

        return int(adversarial_epochs(parse_run_config(raw)))
    except Exception:  # a config from another version, or hand-written: not ours to judge
        return None


def load_run(path: str | Path, name: str | None = None) -> RunSummary:
    """Summarise one run directory (see :class:`RunSummary`); never raises for bad content."""
    path = Path(path)
    run = RunSummary(name=name or path.name, path=path)
    if not path.is_dir():
        run.notes.append("run directory not found")
        return run
    cfg = _read_config(path / "config.yaml", run.notes)
    ev = _read_json(path / "eval.json", run.notes)
    an = _read_json(path / "analysis.json", run.notes)
    run.metrics = _read_metrics(path / "metrics.jsonl", run.notes)

    run.method = _get(cfg, "method", "name") or _get(ev, "method") or _get(an, "method")
    run.model = _get(cfg, "model", "name") or _get(ev, "model")
    run.dataset = _get(cfg, "data", "name") or _get(ev, "dataset")
    for attr in ("method", "model", "dataset"):
        value = getattr(run, attr)
        setattr(run, attr, None if value is None else str(value))

    if ev is not None:
        tm = ev.get("threat_model")
        if isinstance(tm, dict):
            run.threat = tm.get("description") or _describe_threat(tm)
        run.clean_acc = _num(ev.get("clean_acc"))
        run.robust_acc = _num(ev.get("robust_acc"))
        n = ev.get("n_examples")
        run.n_examples = n if isinstance(n, int) else None
        attacks = ev.get("attacks")
        if isinstance(attacks, dict):
            run.attacks = {str(k): _num(_get(v, "robust_acc")) for k, v in attacks.items()}
        if run.robust_acc is None and run.attacks:
            known = [a for a in run.attacks.values() if a is not None]
            run.robust_acc = min(known) if known else None
            if run.robust_acc is not None:
                run.notes.append("eval.json has no worst case: the minimum over attacks is shown")
        sanity = ev.get("sanity")
        if isinstance(sanity, dict):
            run.sanity = {str(k): v for k, v in sanity.items() if isinstance(v, dict)}
        if isinstance(ev.get("adversarial_epochs"), int):
            run.adversarial_epochs = ev["adversarial_epochs"]
        _read_shift(run, ev.get("shift"))
        _read_test_set(run, ev.get("test_data"))
    if run.threat is None and cfg is not None and isinstance(cfg.get("threat"), dict):
        run.threat = _describe_threat(cfg["threat"])
    if run.adversarial_epochs is None and cfg is not None:
        run.adversarial_epochs = _adversarial_epochs_from_config(cfg)

    if an is not None:
        run.aligned_clean = _num(_get(an, "alignment", "centroid", "clean", "aligned_fraction"))
        run.aligned_adv = _num(_get(an, "alignment", "centroid", "adversarial", "aligned_fraction"))
        run.lipschitz = _num(_get(an, "lipschitz", "mean"))
        run.separation = _separation_words(an.get("separation"))
        restates = an.get("restates_accuracy")
        if isinstance(restates, dict):
            run.restates = {str(k): bool(v) for k, v in restates.items()}
        notes = an.get("notes")
        if isinstance(notes, list):
            run.analysis_notes = [str(n) for n in notes]
        run.alignment_rows = _alignment_rows(an)
        run.analysis_setup = _analysis_setup(an)
        figures = an.get("figures")
        if isinstance(figures, dict):
            for fig_name, file in figures.items():
                p = path / str(file)
                if p.is_file():
                    run.figures[str(fig_name)] = p
                else:
                    run.notes.append(f"analysis figure {file} missing")

    for what, record in (("eval.json", ev), ("analysis.json", an)):
        if record is not None:
            _check_checkpoint(run, record, what)

    times = [_num(r.get("time_s")) for r in run.metrics]
    if run.metrics and all(t is not None for t in times):
        run.train_time_s = float(sum(times))  # type: ignore[arg-type]
    for r in run.metrics:
        stage = str(r.get("stage", "train"))
        epoch = r.get("epoch")
        if isinstance(epoch, int):
            run.epochs[stage] = max(run.epochs.get(stage, 0), epoch)
    return run


def _read_test_set(run: RunSummary, tested: Any) -> None:
    """eval.json's ``test_data``; an eval.json without it scored the run's own test split."""
    label = _get(tested, "label")
    run.own_test_set = _get(tested, "own") is not False
    if isinstance(label, str) and label:
        run.test_set = label
    elif run.own_test_set:
        run.test_set = f"{run.dataset} test split" if run.dataset else "the run's test split"
    else:
        run.test_set = "another test set"
        run.notes.append("eval.json names no test set under test_data")


def _check_checkpoint(run: RunSummary, record: dict[str, Any], what: str) -> None:
    """Is the run's checkpoint still the one ``what`` measured? A sentence in
    ``run.moved_on`` when not; a note when ``what`` does not say which one it measured."""
    from afa.runs import checkpoint_moved_on

    identity = record.get("checkpoint_identity")
    if not isinstance(identity, dict):
        if record.get("checkpoint") and any(run.path.glob("*.pt")):
            run.notes.append(
                f"{what} does not record which checkpoint it measured (epoch, step, sha256), "
                "so whether the run has moved on since cannot be told"
            )
        return
    try:
        sentence = checkpoint_moved_on(run.path, identity, what)
    except OSError as exc:  # a checkpoint that cannot be read now: say so, never raise
        run.notes.append(f"{what}: its checkpoint could not be checked ({exc})")
        return
    if sentence:
        run.moved_on.append(sentence)


def _read_shift(run: RunSummary, shift: Any) -> None:
    """eval.json's ``shift``: natural-shift accuracies and the corruption record."""
    if not isinstance(shift, dict):
        return
    for key, value in shift.items():
        if key != "corruptions" and isinstance(value, dict):
            run.shift[str(key)] = _num(value.get("acc"))
    corr = shift.get("corruptions")
    if isinstance(corr, dict) and isinstance(corr.get("per_corruption"), dict):
        run.corruptions = corr
        run.corruption_acc = _num(corr.get("mean_acc"))
        if run.corruption_acc is None:
            run.notes.append("eval.json: corruptions without a mean accuracy")


def _alignment_rows(an: dict[str, Any]) -> list[dict[str, Any]]:
    """Clean and adversarial rows of the alignment table (missing numbers are None)."""
    rows = []
    for split in ("clean", "adversarial"):
        summary = _get(an, "alignment", "centroid", split)
        if not isinstance(summary, dict):
            continue
        gap = _num(_get(an, "geometry", split, "gap"))
        auc_key = "clean_margin" if split == "clean" else "adversarial_margin"
        rows.append(
            {
                "input": split,
                "aligned": _num(summary.get("aligned_fraction")),
                "accuracy": _num(summary.get("accuracy")),
                "acc_aligned": _num(summary.get("acc_aligned")),
                "acc_misaligned": _num(summary.get("acc_misaligned")),
                "agreement": _num(summary.get("agreement")),
                "ncc_accuracy": _num(_get(an, "nearest_centroid_accuracy", split)),
                "knn_aligned": _num(_get(an, "alignment", "knn", split, "aligned_fraction")),
                "margin_auc": _num(_get(an, "margin_vs_robustness", auc_key, "auc")),
                "cos_gap": gap,
                "restates": bool(_get(an, "restates_accuracy", split)),
            }
        )
    return rows


def _analysis_setup(an: dict[str, Any]) -> str | None:
    n, tm = an.get("n_test"), an.get("threat_model")
    if not isinstance(n, int):
        return None
    adversary = an.get("attack") or "PGD (CE)"
    if isinstance(tm, dict):
        adversary = f"{adversary}, {_describe_threat(tm).split(',')[0]}"
    k = an.get("k")
    label = _get(an, "test_data", "label")
    if _get(an, "test_data", "own") is False and isinstance(label, str):
        samples = f"the first {n} samples of the test set {label}"
    else:
        samples = f"the first {n} test samples (those `afa eval` scores)"
    return f"{samples}, adversary {adversary}" + (f", kNN with k = {k}" if k else "")


def _separation_words(sep: Any) -> str | None:
    """One sentence on Yang et al.'s comparison of 2r with 2 eps."""
    two_r, eps = _num(_get(sep, "two_r")), _num(_get(sep, "eps"))
    if two_r is None or eps is None:
        return None
    n_train, n_test = _get(sep, "n_train"), _get(sep, "n_test")
    where = f"{n_train} training" + (f" and {n_test} test" if n_test else "") + " images"
    verdict = (
        "the classes are separated at this eps, so a classifier both accurate and robust at eps "
        "exists on these points (Yang et al. 2020)"
        if two_r > 2 * eps
        else "the data alone does not guarantee that a classifier accurate and robust at eps exists"
    )
    return (
        f"the closest differently labelled images are 2r = {two_r:.3f} apart "
        f"in Linf ({where}) against 2 eps = {2 * eps:.3f}: {verdict}."
    )


def _describe_threat(tm: dict[str, Any]) -> str:
    """``Linf eps=8/255, 10 steps of 2/255`` from a threat-model mapping."""
    norm = str(tm.get("norm", "linf"))
    parts = [
        f"{'Linf' if norm == 'linf' else 'L2' if norm == 'l2' else norm} eps={_radius(tm.get('eps'))}"
    ]
    if tm.get("steps") is not None:
        parts.append(f"{tm['steps']} steps of {_radius(tm.get('step_size'))}")
    return ", ".join(parts)


def _radius(x: Any) -> str:
    """A radius as the config may hold it (a number or an exact fraction string)."""
    try:
        return format_radius(parse_number(x))
    except ConfigError:
        return str(x)


# ------------------------------------------------------------------ sanity checks in words


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:.1f}%"


def sanity_messages(run: RunSummary) -> tuple[list[str], list[str], list[str]]:
    """``(failed, explained, passed)``: a plain-words sentence per failed check, a sentence
    per failed check whose cause another check has shown to be harmless, names of the passed.

    The sentences say what the number means for the reader and whether to trust the robust
    accuracies; unknown check names fall back to eval.json's own description. A PGD-to-worst-
    case gap that gradient-based APGD closes (``gap_closed_by_gradient_attacks`` passed) is
    PGD's weakness, not masking: it is explained, and the worst case stands.

    Numbers come from each check's fields (``value``, ``threshold`` and its ``details``:
    the radius, the steps), never from its sentence; a check written before ``details``
    existed is told without them (the radius or the steps "not recorded").
    """
    failed, explained, passed = [], [], []
    gap_closed = run.sanity.get("gap_closed_by_gradient_attacks", {})
    for name, check in run.sanity.items():
        if check.get("passed") is not False:
            passed.append(name)
            continue
        value, thr = _num(check.get("value")), _num(check.get("threshold"))
        desc = str(check.get("description") or "")
        given = check.get("details")
        details: dict[str, Any] = given if isinstance(given, dict) else {}
        if name == "large_eps":
            eps = _num(details.get("eps"))
            radius = "a very large radius (not recorded)" if eps is None else f"eps={eps:.4g}"
            failed.append(
                f"PGD at {radius} still leaves {_pct(value)} accuracy (it should be about 0; "
                f"threshold {_pct(thr)}): gradients may be masked; do not trust these robust accuracies."
            )
        elif name == "eps_monotone":
            failed.append(
                f"PGD accuracy rose by {_pct(value)} when the radius grew (allowed {_pct(thr)}): "
                "a larger ball cannot be safer, so the attack is failing, a sign of masked "
                "gradients; do not trust these robust accuracies."
            )
        elif name == "pgd_below_clean":
            failed.append(
                f"PGD did not lower accuracy below clean accuracy (drop {_pct(value)}): the "
                "attack is not attacking; the robust accuracies are meaningless."
            )
        elif name == "autoattack_not_weaker_than_pgd":
            failed.append(
                f"AutoAttack alone left {_pct(value)} more accuracy than PGD (allowed {_pct(thr)}): "
                "it is the stronger attack, so it was misconfigured or saw a different model; "
                "check the evaluation before using these numbers."
            )
        elif name == "autoattack_gap" and gap_closed.get("passed") is True:
            share = _pct(_num(gap_closed.get("value")))
            explained.append(
                f"{_pgd_name(details)} is {_pct(value)} above the worst case over all "
                f"attacks (allowed {_pct(thr)}), but the gradient-based APGD-CE and APGD-T "
                f"break {share} of the points it missed: PGD is weak at this radius, the "
                "gradients are not masked. Read the worst-case column; PGD-based numbers "
                "(such as training's validation accuracy) overstate robustness."
            )
        elif name == "autoattack_gap":
            failed.append(
                f"PGD accuracy is {_pct(value)} above the worst case over all attacks (allowed "
                f"{_pct(thr)}): PGD overstates robustness; trust only the worst-case column, "
                "not PGD-based numbers such as training's validation accuracy."
            )
        elif name == "gap_closed_by_gradient_attacks":
            failed.append(
                f"Gradient-based APGD-CE and APGD-T break only {_pct(value)} of the points PGD "
                f"missed but the worst case broke (expected at least {_pct(thr)}): only "
                "gradient-free attacks found them, the mark of masked gradients; the model's "
                "robustness is likely overstated even by the worst case."
            )
        else:
            failed.append(
                f"Sanity check '{name}' failed (value {value if value is None else f'{value:.4g}'}, "
                f"threshold {thr if thr is None else f'{thr:.4g}'}): {desc}".rstrip(": ")
            )
    return failed, explained, passed


def _pgd_name(details: dict[str, Any]) -> str:
    """``PGD-20 (CE)`` from a check's recorded steps; ``PGD (CE, steps not recorded)``
    for a check written without them."""
    steps = details.get("steps")
    if isinstance(steps, int) and not isinstance(steps, bool):
        return f"PGD-{steps} (CE)"
    return "PGD (CE, steps not recorded)"
