"""Robust accuracy: a boolean correctness matrix (examples x attacks), the worst case per
example, sanity flags against gradient masking, and a self-describing ``eval.json``.

The protocol follows AutoAttack (Croce & Hein 2020): attacks run in a fixed order, each
only on the points every earlier attack failed to break; robust accuracy is the fraction
of examples that survive all of them. Results are written in the spirit of RobustBench's
``model_info/*.json``, with numbers stored as numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import afa
from afa.attacks import ThreatModel, attack_mode, autoattack, cross_entropy, cw_margin, perturb
from afa.data import to_float
from afa.errors import ConfigError

AttackFn = Callable[[Tensor, Tensor], Tensor]
"""``(x, y) -> x_adv`` on one batch (on the evaluation device)."""

CLEAN = "clean"
AUTOATTACK_PARTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
ATTACKS = ("pgd", "cw", "autoattack", *AUTOATTACK_PARTS)
"""Names ``evaluate`` accepts: PGD on CE, PGD on the CW margin, AutoAttack standard, or one
AutoAttack component alone (``version="custom"``; cheap checks, not a reportable number)."""

SANITY_SUBSET = 500
LARGE_EPS_MAX_ACC = 0.05
EPS_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0)
MONOTONE_TOL = 0.02
AA_ABOVE_PGD_TOL = 0.02
PGD_AA_GAP_TOL = 0.10


@dataclass(frozen=True)
class SanityCheck:
    """One flag against gradient masking: ``passed`` compares ``value`` with ``threshold``."""

    name: str
    passed: bool
    value: float
    threshold: float
    description: str


@dataclass
class EvalResult:
    """The outcome of :func:`evaluate`.

    Attributes:
        threat: the threat model the attacks were built from (BN in eval mode).
        columns: ``["clean", <attack label>, ...]`` in the order they were run.
        correct: ``correct[i, k]``: example i is classified correctly after the attacks of
            columns 1..k (a point not attacked because an earlier column already failed is
            False). Column 0 is clean accuracy.
        attacks: per attack label, its settings and cost (``steps``, ``step_size``,
            ``objective`` or ``version``; ``n_attacked``; ``time_s``).
        sanity: the flags of :func:`sanity_checks`, by name (empty when not run).
        seed: seed of the random starts (PGD) and of AutoAttack.
        time_s: wall time of the whole evaluation.

    Shape:
        correct: (n_examples, len(columns)) bool.
    """

    threat: ThreatModel
    columns: list[str]
    correct: Tensor
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    sanity: dict[str, SanityCheck] = field(default_factory=dict)
    seed: int = 0
    time_s: float = 0.0

    @property
    def n_examples(self) -> int:
        return int(self.correct.shape[0])

    def n_correct(self, column: str) -> int:
        return int(self.correct[:, self.columns.index(column)].sum())

    def acc(self, column: str) -> float:
        """Accuracy of a column: its count of correct examples divided once by n."""
        return self.n_correct(column) / self.n_examples

    @property
    def clean_acc(self) -> float:
        return self.acc(CLEAN)

    @property
    def worst_case(self) -> Tensor:
        """Per example: correct under every column (the AND over the row)."""
        return self.correct.all(dim=1)

    @property
    def robust_acc(self) -> float:
        """Worst case over all attacks run, per example, then counted once."""
        return int(self.worst_case.sum()) / self.n_examples


# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    threat: ThreatModel,
    *,
    attacks: Sequence[str] = ("pgd", "cw", "autoattack"),
    pgd_steps: int = 20,
    cw_steps: int = 30,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int = 0,
    n_examples: int | None = None,
    sanity: bool = True,
    progress: bool = False,
) -> EvalResult:
    """Clean and robust accuracy of ``model`` under ``threat``.

    Attacks, run in the order given, each only on the examples still robust:

    * ``"pgd"``: "PGD-{pgd_steps} (CE)" — :func:`perturb` with cross-entropy
      (Madry et al. 2018);
    * ``"cw"``: "PGD-{cw_steps} (CW margin)" — :func:`perturb` on the Carlini-Wagner margin
      (the "CW∞" of TRADES/MART/AFA tables);
    * ``"autoattack"``: "AutoAttack (standard)" (Croce & Hein 2020), or one component
      (``"apgd-ce"``, ``"apgd-t"``, ``"fab-t"``, ``"square"``, ...) run alone.

    Both PGD attacks are the shared threat model with only ``steps`` replaced
    (``threat.with_(steps=...)``): ``eps``, ``step_size``, ``random_start`` and ``restarts``
    are the run's, so evaluation cannot drift from training. ``bn_mode`` is forced to
    ``"eval"``: the evaluated function is the model at inference. AutoAttack uses only
    ``norm`` and ``eps``.

    The model is in eval mode throughout (its modes are restored afterwards). Random starts
    come from a local ``torch.Generator`` seeded with ``seed`` (on the CPU, so CPU and GPU
    evaluations draw the same starts); the global RNG is not touched.

    Args:
        model: classifier taking inputs in [0, 1].
        images: uint8 images (scaled by 1/255) or floats in [0, 1]; they may stay on the
            CPU, batches are moved to ``device``.
        labels: int labels.
        threat: the shared threat model.
        attacks: names from :data:`ATTACKS`, in the order to run.
        pgd_steps: steps of "PGD (CE)" and of the sanity checks' PGD.
        cw_steps: steps of "PGD (CW margin)".
        batch_size: examples per attack batch.
        device: where to compute; default: the model's device.
        seed: seed of the random starts and of AutoAttack.
        n_examples: evaluate the first ``n_examples`` only.
        sanity: run :func:`sanity_checks` (on at most 500 examples).
        progress: show a progress bar per attack.

    Returns:
        An :class:`EvalResult` with the correctness matrix.

    Shape:
        images: (N, C, H, W); labels: (N,).
    """
    start = time.perf_counter()
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ConfigError(f"eval.attacks: unknown {unknown}; choose from {list(ATTACKS)}")
    if len(set(attacks)) != len(attacks):
        raise ConfigError(f"eval.attacks: each attack once, got {list(attacks)}")
    if n_examples is not None:
        images, labels = images[:n_examples], labels[:n_examples]
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(f"evaluate: {images.shape[0]} images and {labels.shape[0]} labels")
    if images.dtype != torch.uint8 and (images.min() < 0 or images.max() > 1):
        raise ValueError("evaluate: float images must lie in [0, 1]")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    threat = threat.with_(bn_mode="eval")
    generator = torch.Generator().manual_seed(seed)

    plan = [
        _build(model, name, threat, pgd_steps, cw_steps, batch_size, seed, generator)
        for name in attacks
    ]
    with attack_mode(model, "eval"):
        correct, attacked, times = correctness_matrix(
            model,
            images,
            labels,
            [(label, fn) for label, fn, _ in plan],
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        info = {}
        for k, (label, _, settings) in enumerate(plan):
            info[label] = {
                **settings,
                "n_attacked": int(attacked[:, k].sum()),
                "time_s": times[label],
            }
        result = EvalResult(threat, [CLEAN] + [p[0] for p in plan], correct, info, seed=seed)
        if sanity and threat.eps > 0:
            result.sanity = sanity_checks(
                model,
                images,
                labels,
                result,
                attacked,
                {label: fn for label, fn, _ in plan},
                pgd_steps=pgd_steps,
                batch_size=batch_size,
                device=device,
                generator=torch.Generator().manual_seed(seed + 1),
            )
    result.time_s = time.perf_counter() - start
    return result


def _build(
    model: nn.Module,
    name: str,
    threat: ThreatModel,
    pgd_steps: int,
    cw_steps: int,
    batch_size: int,
    seed: int,
    generator: torch.Generator,
) -> tuple[str, AttackFn, dict[str, Any]]:
    """(label, attack function, settings recorded in eval.json) for one attack name."""
    if name in ("pgd", "cw"):
        steps, objective, what = (
            (pgd_steps, cross_entropy, "CE")
            if name == "pgd"
            else (cw_steps, cw_margin, "CW margin")
        )
        t = threat.with_(steps=steps)

        def fn(x: Tensor, y: Tensor) -> Tensor:
            return perturb(model, x, y, t, objective, generator=generator)

        settings = {
            "steps": steps,
            "step_size": t.step_size,
            "restarts": t.restarts,
            "objective": "cross_entropy" if name == "pgd" else "cw_margin",
        }
        return f"PGD-{steps} ({what})", fn, settings
    version, parts = ("standard", None) if name == "autoattack" else ("custom", [name])

    def aa(x: Tensor, y: Tensor) -> Tensor:
        return autoattack(
            model,
            x,
            y,
            threat,
            version=version,
            attacks_to_run=parts,
            batch_size=batch_size,
            seed=seed,
        )

    settings = {"version": version, "attacks_to_run": parts}
    return f"AutoAttack ({version if parts is None else name})", aa, settings


def correctness_matrix(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[tuple[str, AttackFn]],
    *,
    batch_size: int,
    device: torch.device | str,
    progress: bool = False,
) -> tuple[Tensor, Tensor, dict[str, float]]:
    """Run ``attacks`` in order, each on the examples still robust, and record who survives.

    Args:
        model: classifier (called as is: set its mode before).
        images, labels: the examples (uint8 or floats in [0, 1]).
        attacks: ``(label, fn)`` pairs; ``fn(x, y) -> x_adv`` on one batch.
        batch_size: examples per call of ``fn``.
        device: where batches go.
        progress: a tqdm bar per attack.

    Returns:
        ``correct``: (N, 1 + A) bool, column 0 clean, column k correct after attack k (False
        for an example not attacked because it was already broken, so each column implies
        the one before it); ``attacked``: (N, A) bool, which examples each attack ran on;
        ``times``: seconds per attack label.
    """
    n = labels.shape[0]
    correct = torch.zeros(n, 1 + len(attacks), dtype=torch.bool)
    attacked = torch.zeros(n, len(attacks), dtype=torch.bool)
    times: dict[str, float] = {}
    everyone = torch.arange(n)
    correct[:, 0] = _correct_on(model, images, labels, everyone, None, batch_size, device)
    for k, (label, fn) in enumerate(attacks):
        t0 = time.perf_counter()
        idx = correct[:, k].nonzero().squeeze(1)
        attacked[idx, k] = True
        correct[idx, k + 1] = _correct_on(
            model, images, labels, idx, fn, batch_size, device, desc=label if progress else None
        )
        times[label] = time.perf_counter() - t0
    return correct, attacked, times


def _correct_on(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    idx: Tensor,
    attack: AttackFn | None,
    batch_size: int,
    device: torch.device | str,
    desc: str | None = None,
) -> Tensor:
    """Whether ``model`` classifies ``attack(images[idx])`` correctly: (len(idx),) bool, CPU."""
    out = torch.zeros(idx.shape[0], dtype=torch.bool)
    chunks = list(torch.arange(idx.shape[0]).split(batch_size))
    if desc is not None:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc=desc, leave=False)
    for chunk in chunks:
        sel = idx[chunk].to(images.device)
        x = images[sel]
        x = to_float(x, device) if x.dtype == torch.uint8 else x.to(device).float()
        y = labels[sel.to(labels.device)].to(device)
        if attack is not None:
            x = attack(x, y)
        with torch.no_grad():
            out[chunk] = (model(x).argmax(dim=1) == y).cpu()
    return out


# --------------------------------------------------------------------------- sanity


def sanity_checks(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    result: EvalResult,
    attacked: Tensor,
    attack_fns: Mapping[str, AttackFn],
    *,
    pgd_steps: int,
    batch_size: int,
    device: torch.device | str,
    generator: torch.Generator,
    subset: int = SANITY_SUBSET,
) -> dict[str, SanityCheck]:
    """Flags for gradient masking (Athalye et al. 2018; Carlini et al. 2019, "On evaluating
    adversarial robustness", §5; Croce & Hein 2020), each computed on a fixed random subset
    of at most ``subset`` examples. "PGD" below is PGD-``pgd_steps`` on CE with the
    threat's step size; the main evaluation's run is reused where it is that attack.

    * ``large_eps``: PGD-CE accuracy at a radius that contains, around every input, the
      constant mid-grey image (Linf 0.5; L2 ``0.5 * sqrt(dim)``) must be <= 0.05. At that
      radius every input can be moved to the same image, so a working attack leaves at most
      one class standing and in practice none; 0.05 leaves room for a 20-step PGD's misses.
      Gradient masking (shattered or vanishing gradients) shows up as accuracy that stays high.
    * ``eps_monotone``: PGD-CE accuracy at eps x (0.25, 0.5, 1, 2) (the step size scaled
      alike) must not increase with eps by more than 0.02: a larger ball contains the
      smaller one, so an increase is the attack failing. 0.02 absorbs the randomness of
      restarts on a 500-example subset (10 examples).
    * ``pgd_below_clean``: PGD-CE accuracy must be below clean accuracy.
    * ``autoattack_not_weaker_than_pgd`` (when AutoAttack ran): AutoAttack's accuracy run on
      its own must not exceed PGD-CE's by more than 0.02; it is the stronger attack, so the
      opposite says AutoAttack was misconfigured or saw a different model.
    * ``autoattack_gap`` (when AutoAttack and PGD-CE ran): PGD-CE accuracy minus the
      worst case over all attacks must be <= 0.10. Published PGD-20 and AutoAttack figures
      of sound defences differ by a few points (TRADES: 56.6 vs 53.1, Croce & Hein 2020);
      a much larger gap means PGD's gradients were masked, and every PGD-based number
      (e.g. training's validation) overstates robustness.

    Args:
        model: the evaluated classifier (in eval mode).
        images, labels: the evaluated examples.
        result: the main evaluation's result (its matrix is reused, not recomputed).
        attacked: which examples each attack of ``result`` ran on, (N, A) bool.
        attack_fns: the main attacks by label, to complete their standalone runs.
        pgd_steps: steps of the sanity PGD runs.
        batch_size, device: as in :func:`evaluate`.
        generator: random starts of the sanity PGD runs.
        subset: size of the random subset.

    Returns:
        The checks by name.
    """
    threat = result.threat
    n = result.n_examples
    sub = torch.randperm(n, generator=torch.Generator().manual_seed(result.seed))[:subset]
    sub = sub.sort().values
    clean = result.correct[sub, 0]

    def pgd_acc(eps: float) -> float:
        scale = eps / threat.eps
        t = threat.with_(eps=eps, step_size=threat.step_size * scale, steps=pgd_steps)
        ok = _correct_on(
            model,
            images,
            labels,
            sub[clean],
            lambda x, y: perturb(model, x, y, t, cross_entropy, generator=generator),
            batch_size,
            device,
        )
        return int(ok.sum()) / len(sub)

    def standalone_acc(k: int) -> float:
        """Accuracy of attack k on the subset as if it had run alone: its own result where
        it ran, and a fresh run where an earlier attack had broken the example first."""
        label = result.columns[k + 1]
        ok = result.correct[sub, k + 1].clone()
        missing = clean & ~attacked[sub, k]
        ok[missing] = _correct_on(
            model, images, labels, sub[missing], attack_fns[label], batch_size, device
        )
        return int(ok.sum()) / len(sub)

    checks: dict[str, SanityCheck] = {}
    big = 0.5 if threat.norm == "linf" else 0.5 * math.sqrt(images[0].numel())
    acc = pgd_acc(big)
    checks["large_eps"] = SanityCheck(
        "large_eps",
        acc <= LARGE_EPS_MAX_ACC,
        acc,
        LARGE_EPS_MAX_ACC,
        f"PGD-{pgd_steps} (CE) accuracy at eps={big:.4g}, a ball holding the mid-grey image "
        "around every input, should be about zero; high values mean masked gradients.",
    )

    labels_run = result.columns[1:]
    pgd_k = _first(labels_run, lambda a: result.attacks[a].get("objective") == "cross_entropy")
    aa_k = _first(labels_run, lambda a: "version" in result.attacks[a])
    accs = [int(clean.sum()) / len(sub)]
    for m in EPS_MULTIPLIERS:
        if m == 1.0 and pgd_k is not None:
            accs.append(standalone_acc(pgd_k))  # the main PGD-CE is this very attack
        else:
            accs.append(pgd_acc(threat.eps * m))
    pgd = accs[1 + EPS_MULTIPLIERS.index(1.0)]
    rise = max(0.0, *(b - a for a, b in zip(accs[1:], accs[2:], strict=False)))
    checks["eps_monotone"] = SanityCheck(
        "eps_monotone",
        rise <= MONOTONE_TOL,
        rise,
        MONOTONE_TOL,
        "Largest increase of PGD accuracy between consecutive radii eps x "
        f"{list(EPS_MULTIPLIERS)} (accuracies {[round(a, 4) for a in accs[1:]]}); "
        "accuracy must not grow with the radius.",
    )
    checks["pgd_below_clean"] = SanityCheck(
        "pgd_below_clean",
        pgd < accs[0] or accs[0] == 0,
        accs[0] - pgd,
        0.0,
        "Clean accuracy minus PGD accuracy on the subset; an attack that changes nothing "
        "is not attacking.",
    )

    if aa_k is not None:
        value = standalone_acc(aa_k) - pgd
        checks["autoattack_not_weaker_than_pgd"] = SanityCheck(
            "autoattack_not_weaker_than_pgd",
            value <= AA_ABOVE_PGD_TOL,
            value,
            AA_ABOVE_PGD_TOL,
            f"{labels_run[aa_k]} accuracy run alone minus PGD accuracy on the subset; "
            "AutoAttack is the stronger attack, so it should not be higher.",
        )
        if pgd_k is not None:
            gap = pgd - int(result.worst_case[sub].sum()) / len(sub)
            checks["autoattack_gap"] = SanityCheck(
                "autoattack_gap",
                gap <= PGD_AA_GAP_TOL,
                gap,
                PGD_AA_GAP_TOL,
                f"{labels_run[pgd_k]} accuracy run alone minus the worst case over all "
                "attacks, on the subset; a large gap means PGD's gradients are masked.",
            )
    return checks


def _first(labels: Sequence[str], keep: Callable[[str], bool]) -> int | None:
    return next((k for k, a in enumerate(labels) if keep(a)), None)


# --------------------------------------------------------------------------- records


def eval_record(result: EvalResult, *, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``eval.json`` content (RobustBench ``model_info`` style), numbers as numbers.

    ``extra`` (e.g. ``dataset``, ``model``, ``method``, ``checkpoint``,
    ``threat_overrides``) is merged at the top level; it may not replace a measured key.
    """
    import pyautoattack

    extra = dict(extra or {})
    record: dict[str, Any] = {
        "dataset": extra.pop("dataset", None),
        "model": extra.pop("model", None),
        "method": extra.pop("method", None),
        "threat_model": {
            **dataclasses.asdict(result.threat),
            "description": result.threat.describe(),
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
        "sanity": {
            name: {
                "passed": c.passed,
                "value": c.value,
                "threshold": c.threshold,
                "description": c.description,
            }
            for name, c in result.sanity.items()
        },
        "versions": {
            "afa": afa.__version__,
            "torch": torch.__version__,
            "pyautoattack": pyautoattack.__version__,
            "python": platform.python_version(),
        },
        "seed": result.seed,
        "time_s": result.time_s,
    }
    clash = sorted(set(extra) & set(record))
    if clash:
        raise ValueError(f"write_eval_json: extra may not replace {clash}")
    record.update(extra)
    return record


def write_eval_json(
    result: EvalResult, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write :func:`eval_record` to ``path`` atomically (a temporary file, then ``os.replace``).

    Returns:
        The record written.
    """
    record = eval_record(result, extra=extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
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
