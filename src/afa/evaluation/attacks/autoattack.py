"""AutoAttack (Croce & Hein 2020) as evaluation attacks: the standard version, or one of
its components alone (``version="custom"``; a cheap check, not a reportable number).

AutoAttack is parameter-free: only the threat's ``norm`` and ``eps`` are used.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from afa.attacks import ThreatModel, autoattack
from afa.evaluation.attacks import EvalAttack, EvalSettings, register_attack

COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")


def _autoattack(
    component: str | None,
    model: nn.Module,
    threat: ThreatModel,
    settings: EvalSettings,
    generator: torch.Generator,
) -> EvalAttack:
    version, parts = ("standard", None) if component is None else ("custom", [component])

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
    return EvalAttack(component or "autoattack", label, recorded, run)


register_attack("autoattack")(partial(_autoattack, None))
for _component in COMPONENTS:
    register_attack(_component)(partial(_autoattack, _component))
