"""L6 evaluation: the correctness matrix, the worst case per example, sanity flags, eval.json."""

from afa.evaluation.robust import (
    ATTACKS,
    EvalResult,
    SanityCheck,
    correctness_matrix,
    eval_record,
    evaluate,
    format_table,
    sanity_checks,
    write_eval_json,
)

__all__ = [
    "ATTACKS",
    "EvalResult",
    "SanityCheck",
    "correctness_matrix",
    "eval_record",
    "evaluate",
    "format_table",
    "sanity_checks",
    "write_eval_json",
]
