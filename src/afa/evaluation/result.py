"""What an evaluation produces: the correctness matrix with its columns (:class:`EvalResult`)
and the sanity flags against gradient masking (:class:`SanityCheck`).

The types live apart from the code that fills them, so :mod:`afa.evaluation.robust` (the
evaluation) and :mod:`afa.evaluation.sanity` (the flags) both import them and not each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from afa.attacks import ThreatModel
from afa.evaluation.attacks import EvalSettings

CLEAN = "clean"
"""The first column of every evaluation: accuracy without an attack."""


@dataclass(frozen=True)
class SanityCheck:
    """One flag against gradient masking: ``passed`` compares ``value`` with ``threshold``.

    Attributes:
        name: the flag (``large_eps``, ``eps_monotone`` ...).
        passed: whether ``value`` is on the right side of ``threshold``.
        value: the measured number the flag judges.
        threshold: its limit.
        description: the sentence eval.json keeps beside the numbers.
        details: the numbers behind ``value``, by name (the radius, the steps, the
            accuracies compared, the examples counted; each check's keys are listed in
            :func:`~afa.evaluation.sanity.sanity_checks`). Readers take numbers from here,
            never from ``description``.
    """

    name: str
    passed: bool
    value: float
    threshold: float
    description: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What eval.json keeps under ``sanity.<name>`` (``details`` only when measured)."""
        out: dict[str, Any] = {
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "description": self.description,
        }
        if self.details:
            out["details"] = dict(self.details)
        return out


@dataclass
class EvalResult:
    """The outcome of :func:`~afa.evaluation.robust.evaluate`.

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
        sanity: the flags of :func:`~afa.evaluation.sanity.sanity_checks`, by name (empty
            when not run).
        seed: seed of the random starts (PGD) and of AutoAttack.
        time_s: wall time of the whole evaluation.
        settings: the evaluation attacks' settings it ran with (``None``: not recorded, a
            result put together by hand).

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
    settings: EvalSettings | None = None

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

    @property
    def attack_names(self) -> list[str]:
        """The registered names of the attacks run, in order (those recorded)."""
        return [str(a["name"]) for a in self.attacks.values() if "name" in a]
