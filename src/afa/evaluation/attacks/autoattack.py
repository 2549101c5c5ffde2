"""AutoAttack (Croce & Hein 2020) as evaluation attacks: the standard version, or one of
its components alone (``version="custom"``; a cheap check, not a reportable number).

AutoAttack is parameter-free: only the threat's ``norm`` and ``eps`` are used.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from afa.attacks import ThreatModel, autoattack
from afa.evaluation.attacks import EvalAttack, EvalSettings, register_attack

COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
CHUNK_BATCHES = 16
"""AutoAttack takes up to this many evaluation batches per call: it batches internally, and
each call pays a fixed cost per component (Square's 5,000 queries are 5,000 forwards
whatever the batch), so one call on every remaining example is up to twice as fast as
two half-full ones."""


def _autoattack(
    component: str | None,
    model: nn.Module,
    threat: ThreatModel,
    settings: EvalSettings,
    generator: torch.Generator,
) -> EvalAttack:
    version: Literal["standard", "custom"] = "standard" if component is None else "custom"
    parts = None if component is None else [component]

    def run(x: Tensor, y: Tensor) -> Tensor:
        return autoattack(
            model,
            x,
            y,
            threat,
            version=version,
            attacks_to_run=parts,
            batch_size=settings.batch_size,
            seed=settings.seed,
        )

    recorded = {
        "norm": threat.norm,
        "eps": threat.eps,
        "version": version,
        "attacks_to_run": parts,
        "seed": settings.seed,
    }
    label = f"AutoAttack ({component or 'standard'})"
    chunk = CHUNK_BATCHES * settings.batch_size
    return EvalAttack(component or "autoattack", label, recorded, run, chunk)


register_attack("autoattack")(partial(_autoattack, None))
for _component in COMPONENTS:
    register_attack(_component)(partial(_autoattack, _component))
