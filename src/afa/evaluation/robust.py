"""Robust accuracy: a boolean correctness matrix (examples x attacks), the worst case per
example, sanity flags against gradient masking, and a self-describing ``eval.json``.

The protocol follows AutoAttack (Croce & Hein 2020): attacks run in a fixed order, each
only on the points every earlier attack failed to break; robust accuracy is the fraction
of examples that survive all of them. Results are written in the spirit of RobustBench's
``model_info/*.json``, with numbers stored as numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from afa.attacks import ThreatModel, attack_mode
from afa.errors import ConfigError
from afa.evaluation.attacks import EVAL_ATTACKS, EvalSettings, build_attacks
from afa.evaluation.matrix import correctness_matrix
from afa.evaluation.result import CLEAN, EvalResult
from afa.evaluation.sanity import sanity_checks

# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    threat: ThreatModel,
    *,
    attacks: Sequence[str] = ("pgd", "cw", "autoattack"),
    settings: EvalSettings | None = None,
    device: torch.device | str | None = None,
    n_examples: int | None = None,
    sanity: bool = True,
    progress: bool = False,
) -> EvalResult:
    """Clean and robust accuracy of ``model`` under ``threat``.

    Attacks are registered evaluation attacks (:mod:`afa.evaluation.attacks`), run in the
    order given, each only on the examples still robust:

    * ``"pgd"``: "PGD-{steps} (CE, BN eval)" — :func:`perturb` with cross-entropy
      (Madry et al. 2018), 20 steps unless ``settings`` says otherwise;
    * ``"cw"``: "PGD-{steps} (CW margin, BN eval)" — :func:`perturb` on the
      Carlini-Wagner margin (the "CW∞" of TRADES/MART/AFA tables), 30 steps by default;
    * ``"autoattack"``: "AutoAttack (standard)" (Croce & Hein 2020), or one component
      (``"apgd-ce"``, ``"apgd-t"``, ``"fab-t"``, ``"square"``, ...) run alone.

    Both PGD attacks are ``threat`` with only ``steps`` replaced and ``bn_mode`` set to
    ``"eval"`` (the evaluated function is the model at inference): its ``eps``,
    ``step_size``, ``random_start`` and ``restarts`` are used as given. AutoAttack uses
    only ``norm`` and ``eps``. Each attack's settings are recorded with its result.

    The model is in eval mode throughout (its modes are restored afterwards). Random starts
    come from a local ``torch.Generator`` seeded with ``settings.seed`` (on the CPU, so CPU
    and GPU evaluations draw the same starts); the global RNG is not touched.

    Args:
        model: classifier taking inputs in [0, 1].
        images: uint8 images (scaled by 1/255) or floats in [0, 1]; they may stay on the
            CPU, batches are moved to ``device``.
        labels: int labels.
        threat: the evaluation's threat model.
        attacks: registered names (``afa.evaluation.attacks.EVAL_ATTACKS``), in order.
        settings: each attack's own settings (the steps of "pgd" are also those of the
            sanity checks' PGD), the batch size and the seed; default: every default.
        device: where to compute; default: the model's device.
        n_examples: evaluate the first ``n_examples`` only.
        sanity: run :func:`sanity_checks` (on at most 500 examples).
        progress: show a progress bar per attack.

    Returns:
        An :class:`EvalResult` with the correctness matrix and the settings it ran with.

    Shape:
        images: (N, C, H, W); labels: (N,).
    """
    start = time.perf_counter()
    settings = settings if settings is not None else EvalSettings()
    unknown = [a for a in attacks if a not in EVAL_ATTACKS]
    if unknown:
        raise ConfigError(f"eval.attacks: unknown {unknown}; choose from {EVAL_ATTACKS.names()}")
    if len(set(attacks)) != len(attacks):
        raise ConfigError(f"eval.attacks: each attack once, got {list(attacks)}")
    if n_examples is not None:
        if n_examples < 1:
            raise ConfigError(f"eval.n_examples: expected >= 1, got {n_examples}")
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
    seed = settings.seed
    plan = build_attacks(
        list(attacks), model, threat, settings, torch.Generator().manual_seed(seed)
    )
    with attack_mode(model, "eval"):
        correct, attacked, times = correctness_matrix(
            model,
            images,
            labels,
            [(a.label, a.run) for a in plan],
            batch_size=settings.batch_size,
            device=device,
            progress=progress,
            chunks=[a.chunk for a in plan],
        )
        info = {
            a.label: {
                "name": a.name,
                **a.settings,
                "n_attacked": int(attacked[:, k].sum()),
                "time_s": times[a.label],
            }
            for k, a in enumerate(plan)
        }
        columns = [CLEAN] + [a.label for a in plan]
        result = EvalResult(threat, columns, correct, info, seed=seed, settings=settings)
        if sanity and threat.eps > 0:
            result.sanity = sanity_checks(
                model,
                images,
                labels,
                result,
                attacked,
                {a.label: a for a in plan},
                settings=settings,
                device=device,
                generator=torch.Generator().manual_seed(seed + 1),
            )
    result.time_s = time.perf_counter() - start
    return result
