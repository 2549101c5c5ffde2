"""Sanity flags against gradient masking, computed beside the main evaluation.

Each flag has a name, a value, a threshold, the numbers behind the value (``details``)
and a sentence; eval.json stores them and the report says them in words from the numbers.
References: Athalye et al. 2018; Carlini et al. 2019, "On evaluating adversarial
robustness", section 5; Croce & Hein 2020.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from afa.attacks import ThreatModel, cross_entropy, perturb_worst_case, pgd_label
from afa.evaluation.attacks import EvalAttack, EvalSettings, build_attacks
from afa.evaluation.matrix import correct_on
from afa.evaluation.result import EvalResult, SanityCheck

SANITY_SUBSET = 500
LARGE_EPS_MAX_ACC = 0.05
EPS_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0)
MONOTONE_TOL = 0.02
AA_ABOVE_PGD_TOL = 0.02
PGD_AA_GAP_TOL = 0.10
GAP_DIAGNOSIS = "gap_closed_by_gradient_attacks"
GAP_CLOSED_MIN = 0.8
GAP_ATTACKS = ("apgd-ce", "apgd-t")


def sanity_checks(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    result: EvalResult,
    attacked: Tensor,
    attacks: Mapping[str, EvalAttack],
    *,
    settings: EvalSettings,
    device: torch.device | str,
    generator: torch.Generator,
    subset: int = SANITY_SUBSET,
) -> dict[str, SanityCheck]:
    """Flags for gradient masking (Athalye et al. 2018; Carlini et al. 2019, "On evaluating
    adversarial robustness", §5; Croce & Hein 2020), each computed on a fixed random subset
    of at most ``subset`` examples. "PGD" below is PGD on CE with the threat's step size
    and the ``pgd`` attack's steps (its setting in ``settings``), counted like the main PGD
    (:func:`~afa.attacks.perturb_worst_case`: broken when any iterate of any restart is
    misclassified); the main evaluation's run is reused where it is that attack.

    Every check records the numbers behind its value in ``details``; ``n_examples`` (the
    subset's size) in all of them, and:

    * ``large_eps``: PGD-CE accuracy at a radius that contains, around every input, the
      constant mid-grey image (Linf 0.5; L2 ``0.5 * sqrt(dim)``) must be <= 0.05. At that
      radius every input can be moved to the same image, so a working attack leaves at most
      one class standing and in practice none; 0.05 leaves room for a 20-step PGD's misses.
      Gradient masking (shattered or vanishing gradients) shows up as accuracy that stays
      high. Details: ``eps`` (that radius), ``steps``, ``accuracy``.
    * ``eps_monotone``: PGD-CE accuracy at eps x (0.25, 0.5, 1, 2) (the step size scaled
      alike) must not increase with eps by more than 0.02: a larger ball contains the
      smaller one, so an increase is the attack failing. 0.02 absorbs the randomness of
      restarts on a 500-example subset (10 examples). Details: ``multipliers``, ``eps``
      and ``accuracies`` (one per multiplier), ``steps``.
    * ``pgd_below_clean``: PGD-CE accuracy must be below clean accuracy. Details:
      ``clean_acc``, ``pgd_acc``, ``steps``.
    * ``autoattack_not_weaker_than_pgd`` (when AutoAttack ran): AutoAttack's accuracy run on
      its own must not exceed PGD-CE's by more than 0.02; it is the stronger attack, so the
      opposite says AutoAttack was misconfigured or saw a different model. Details:
      ``attack`` (its label), ``autoattack_acc``, ``pgd_acc``, ``steps``.
    * ``autoattack_gap`` (when AutoAttack and PGD-CE ran): PGD-CE accuracy minus the
      worst case over all attacks must be <= 0.10. Published PGD-20 and AutoAttack figures
      of sound defences differ by a few points (TRADES: 56.6 vs 53.1, Croce & Hein 2020);
      a much larger gap means every PGD-based number (e.g. training's validation)
      overstates robustness. Details: ``attack`` (PGD's label), ``steps``, ``pgd_acc``,
      ``worst_case_acc``.
    * ``gap_closed_by_gradient_attacks`` (only when ``autoattack_gap`` fails): of the
      points PGD-CE left correct but the worst case broke, the share that APGD-CE + APGD-T
      break must be >= 0.8. Then the gap is PGD's weakness at this radius and the worst
      case stands; below it, only gradient-free attacks (Square, FAB) found those points,
      the signature of masked gradients (Croce & Hein 2020). Details: ``attacks``,
      ``n_points`` (the points of the gap), ``n_broken`` (those the attacks broke).

    Args:
        model: the evaluated classifier (in eval mode).
        images, labels: the evaluated examples.
        result: the main evaluation's result (its matrix is reused, not recomputed).
        attacked: which examples each attack of ``result`` ran on, (N, A) bool.
        attacks: the main attacks by label, to complete their standalone runs.
        settings: the evaluation's settings (the ``pgd`` attack's steps, the batch size).
        device: as in :func:`~afa.evaluation.robust.evaluate`.
        generator: random starts of the sanity PGD runs.
        subset: size of the random subset.

    Returns:
        The checks by name.
    """
    threat = result.threat
    steps = int(settings.attack_options("pgd")["steps"])
    batch_size = settings.batch_size
    n = result.n_examples
    sub = torch.randperm(n, generator=torch.Generator().manual_seed(result.seed))[:subset]
    sub = sub.sort().values
    clean = result.correct[sub, 0]
    n_sub = len(sub)

    def pgd_acc(eps: float) -> float:
        scale = eps / threat.eps
        t = threat.with_(eps=eps, step_size=threat.step_size * scale, steps=steps)
        ok = correct_on(
            model,
            images,
            labels,
            sub[clean],
            lambda x, y: perturb_worst_case(model, x, y, t, cross_entropy, generator=generator),
            batch_size,
            device,
        )
        return int(ok.sum()) / n_sub

    def standalone(k: int) -> Tensor:
        """Correctness on the subset under attack k as if it had run alone: its own result
        where it ran, and a fresh run where an earlier attack had broken the example first."""
        label = result.columns[k + 1]
        ok = result.correct[sub, k + 1].clone()
        missing = clean & ~attacked[sub, k]
        attack = attacks[label]
        ok[missing] = correct_on(
            model, images, labels, sub[missing], attack.run, attack.chunk or batch_size, device
        )
        return ok

    checks: dict[str, SanityCheck] = {}
    big = 0.5 if threat.norm == "linf" else 0.5 * math.sqrt(images[0].numel())
    acc = pgd_acc(big)
    checks["large_eps"] = SanityCheck(
        "large_eps",
        acc <= LARGE_EPS_MAX_ACC,
        acc,
        LARGE_EPS_MAX_ACC,
        f"{pgd_label(threat.with_(steps=steps), 'CE')} accuracy at eps={big:.4g}, "
        "a ball holding the mid-grey image "
        "around every input, should be about zero; high values mean masked gradients.",
        {"eps": big, "steps": steps, "accuracy": acc, "n_examples": n_sub},
    )

    labels_run = result.columns[1:]
    # the registered PGD (CE), not any attack on the cross-entropy (an FGSM would be one)
    pgd_k = _first(labels_run, lambda a: result.attacks[a].get("name") == "pgd")
    aa_k = _first(labels_run, lambda a: "version" in result.attacks[a])
    accs = [int(clean.sum()) / n_sub]
    pgd_ok = standalone(pgd_k) if pgd_k is not None else None
    for m in EPS_MULTIPLIERS:
        if m == 1.0 and pgd_ok is not None:
            accs.append(int(pgd_ok.sum()) / n_sub)  # the main PGD-CE is this very attack
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
        {
            "multipliers": list(EPS_MULTIPLIERS),
            "eps": [threat.eps * m for m in EPS_MULTIPLIERS],
            "accuracies": accs[1:],
            "steps": steps,
            "n_examples": n_sub,
        },
    )
    checks["pgd_below_clean"] = SanityCheck(
        "pgd_below_clean",
        pgd < accs[0] or accs[0] == 0,
        accs[0] - pgd,
        0.0,
        "Clean accuracy minus PGD accuracy on the subset; an attack that changes nothing "
        "is not attacking.",
        {"clean_acc": accs[0], "pgd_acc": pgd, "steps": steps, "n_examples": n_sub},
    )

    if aa_k is not None:
        aa_acc = int(standalone(aa_k).sum()) / n_sub
        value = aa_acc - pgd
        checks["autoattack_not_weaker_than_pgd"] = SanityCheck(
            "autoattack_not_weaker_than_pgd",
            value <= AA_ABOVE_PGD_TOL,
            value,
            AA_ABOVE_PGD_TOL,
            f"{labels_run[aa_k]} accuracy run alone minus PGD accuracy on the subset; "
            "AutoAttack is the stronger attack, so it should not be higher.",
            {
                "attack": labels_run[aa_k],
                "autoattack_acc": aa_acc,
                "pgd_acc": pgd,
                "steps": steps,
                "n_examples": n_sub,
            },
        )
        if pgd_k is not None:
            worst = int(result.worst_case[sub].sum()) / n_sub
            gap = pgd - worst
            checks["autoattack_gap"] = SanityCheck(
                "autoattack_gap",
                gap <= PGD_AA_GAP_TOL,
                gap,
                PGD_AA_GAP_TOL,
                f"{labels_run[pgd_k]} accuracy run alone minus the worst case over all "
                "attacks, on the subset; a large gap means PGD overstates robustness (see "
                "gap_closed_by_gradient_attacks for whether its gradients are masked).",
                {
                    "attack": labels_run[pgd_k],
                    "steps": steps,
                    "pgd_acc": pgd,
                    "worst_case_acc": worst,
                    "n_examples": n_sub,
                },
            )
            if not checks["autoattack_gap"].passed:
                left = sub[pgd_ok & ~result.worst_case[sub]]
                checks[GAP_DIAGNOSIS] = _gap_diagnosis(
                    model, images, labels, left, threat, settings, device
                )
    return checks


def _gap_diagnosis(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    left: Tensor,
    threat: ThreatModel,
    settings: EvalSettings,
    device: torch.device | str,
) -> SanityCheck:
    """Is PGD weak, or are the gradients masked? On the points PGD-CE left correct but the
    worst case broke, run the gradient-based APGD-CE, then APGD-T on what is left.

    A gap that gradient attacks close is the optimiser's weakness (PGD's fixed step, no
    momentum, untargeted), not masking: masked gradients would stop APGD too and leave the
    gap to the gradient-free Square and FAB (Croce & Hein 2020, section 4).
    """
    apgd = build_attacks(
        list(GAP_ATTACKS), model, threat, settings, torch.Generator().manual_seed(settings.seed)
    )
    still = left
    for attack in apgd:
        ok = correct_on(
            model, images, labels, still, attack.run, attack.chunk or settings.batch_size, device
        )
        still = still[ok]
    closed = 1 - len(still) / len(left) if len(left) else 1.0
    return SanityCheck(
        GAP_DIAGNOSIS,
        closed >= GAP_CLOSED_MIN,
        closed,
        GAP_CLOSED_MIN,
        f"Of the {len(left)} subset points PGD-CE left correct but the worst case broke, the "
        "share that gradient-based APGD-CE + APGD-T break; a high share means PGD is weak at "
        "this radius (not masked gradients), a low one that only gradient-free attacks "
        "succeed, the mark of masked gradients.",
        {
            "attacks": list(GAP_ATTACKS),
            "n_points": len(left),
            "n_broken": len(left) - len(still),
        },
    )


def _first(labels: Sequence[str], keep: Callable[[str], bool]) -> int | None:
    return next((k for k, a in enumerate(labels) if keep(a)), None)
