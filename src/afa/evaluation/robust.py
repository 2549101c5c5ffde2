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
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from afa.attacks import ThreatModel, attack_mode
from afa.errors import ConfigError
from afa.evaluation.attacks import EVAL_ATTACKS, EvalSettings, build_attacks
from afa.evaluation.matrix import correctness_matrix
from afa.evaluation.sanity import SanityCheck, sanity_checks

CLEAN = "clean"


@dataclass
class EvalResult:
    """The outcome of :func:`evaluate`.

    Attributes:
        threat: the evaluation's threat model (the run's, with any requested change; BN in
            eval mode). Each attack's exact settings are in ``attacks``.
        columns: ``["clean", <attack label>, ...]`` in the order they were run.
        correct: ``correct[i, k]``: example i is classified correctly after the attacks of
            columns 1..k (a point not attacked because an earlier column already failed is
            False). Column 0 is clean accuracy.
        attacks: per attack label, every setting it ran with (for PGD the whole threat
            model and ``objective``; for AutoAttack ``version``), ``name``, and its cost
            (``n_attacked``, ``time_s``).
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

    Attacks are registered evaluation attacks (:mod:`afa.evaluation.attacks`), run in the
    order given, each only on the examples still robust:

    * ``"pgd"``: "PGD-{pgd_steps} (CE, BN eval)" — :func:`perturb` with cross-entropy
      (Madry et al. 2018);
    * ``"cw"``: "PGD-{cw_steps} (CW margin, BN eval)" — :func:`perturb` on the
      Carlini-Wagner margin (the "CW∞" of TRADES/MART/AFA tables);
    * ``"autoattack"``: "AutoAttack (standard)" (Croce & Hein 2020), or one component
      (``"apgd-ce"``, ``"apgd-t"``, ``"fab-t"``, ``"square"``, ...) run alone.

    Both PGD attacks are ``threat`` with only ``steps`` replaced and ``bn_mode`` set to
    ``"eval"`` (the evaluated function is the model at inference): its ``eps``,
    ``step_size``, ``random_start`` and ``restarts`` are used as given. AutoAttack uses
    only ``norm`` and ``eps``. Each attack's settings are recorded with its result.

    The model is in eval mode throughout (its modes are restored afterwards). Random starts
    come from a local ``torch.Generator`` seeded with ``seed`` (on the CPU, so CPU and GPU
    evaluations draw the same starts); the global RNG is not touched.

    Args:
        model: classifier taking inputs in [0, 1].
        images: uint8 images (scaled by 1/255) or floats in [0, 1]; they may stay on the
            CPU, batches are moved to ``device``.
        labels: int labels.
        threat: the evaluation's threat model.
        attacks: registered names (``afa.evaluation.attacks.EVAL_ATTACKS``), in order.
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
    settings = EvalSettings(pgd_steps, cw_steps, batch_size, seed)
    plan = build_attacks(
        list(attacks), model, threat, settings, torch.Generator().manual_seed(seed)
    )
    with attack_mode(model, "eval"):
        correct, attacked, times = correctness_matrix(
            model,
            images,
            labels,
            [(a.label, a.run) for a in plan],
            batch_size=batch_size,
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
        result = EvalResult(threat, [CLEAN] + [a.label for a in plan], correct, info, seed=seed)
        if sanity and threat.eps > 0:
            result.sanity = sanity_checks(
                model,
                images,
                labels,
                result,
                attacked,
                {a.label: a for a in plan},
                pgd_steps=pgd_steps,
                batch_size=batch_size,
                device=device,
                generator=torch.Generator().manual_seed(seed + 1),
            )
    result.time_s = time.perf_counter() - start
    return result
