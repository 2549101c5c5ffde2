"""PGD on the cross-entropy (Madry et al. 2018) and on the CW margin (the "CW∞" of
TRADES/MART/AFA tables; Carlini & Wagner 2017's f_6 loss), as evaluation attacks.

Both are the evaluation's threat model with only ``steps`` set from the evaluation
settings; BN is in eval mode (the evaluated function is the model at inference).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from afa.attacks import Objective, ThreatModel, cross_entropy, cw_margin, perturb, pgd_label
from afa.evaluation.attacks import EvalAttack, EvalSettings, attack_settings, register_attack


def _pgd(
    name: str,
    model: nn.Module,
    threat: ThreatModel,
    steps: int,
    objective: Objective,
    short: str,
    generator: torch.Generator,
) -> EvalAttack:
    t = threat.with_(steps=steps, bn_mode="eval")

    def run(x: Tensor, y: Tensor) -> Tensor:
        return perturb(model, x, y, t, objective, generator=generator)

    return EvalAttack(name, pgd_label(t, short), attack_settings(t, objective.__name__), run)


@register_attack("pgd")
def pgd_ce(
    model: nn.Module, threat: ThreatModel, settings: EvalSettings, generator: torch.Generator
) -> EvalAttack:
    """``PGD-{pgd_steps} (CE, BN eval)``."""
    return _pgd("pgd", model, threat, settings.pgd_steps, cross_entropy, "CE", generator)


@register_attack("cw")
def pgd_cw(
    model: nn.Module, threat: ThreatModel, settings: EvalSettings, generator: torch.Generator
) -> EvalAttack:
    """``PGD-{cw_steps} (CW margin, BN eval)``."""
    return _pgd("cw", model, threat, settings.cw_steps, cw_margin, "CW margin", generator)
