"""L7 evaluation: registered evaluation attacks, the correctness matrix, the worst case per
example, sanity flags, eval.json."""

from afa.evaluation.attacks import (
    EVAL_ATTACKS,
    EvalAttack,
    EvalSettings,
    build_attacks,
    register_attack,
)
from afa.evaluation.matrix import correctness_matrix
from afa.evaluation.record import (
    binomial_halfwidth,
    describe_radius,
    eval_record,
    format_table,
    write_eval_json,
)
from afa.evaluation.result import CLEAN, EvalResult, SanityCheck
from afa.evaluation.robust import evaluate
from afa.evaluation.sanity import sanity_checks

__all__ = [
    "CLEAN",
    "EVAL_ATTACKS",
    "EvalAttack",
    "EvalResult",
    "EvalSettings",
    "SanityCheck",
    "binomial_halfwidth",
    "build_attacks",
    "correctness_matrix",
    "describe_radius",
    "eval_record",
    "evaluate",
    "format_table",
    "register_attack",
    "sanity_checks",
    "write_eval_json",
]
