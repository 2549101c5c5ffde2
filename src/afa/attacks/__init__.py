"""L3 attacks: one threat model, one PGD, pluggable objectives, AutoAttack.

Everything here takes the shared :class:`ThreatModel`; gradients are taken with respect
to the input only and module modes are restored on exit (:func:`attack_mode`).
"""

from afa.attacks.autoattack import autoattack
from afa.attacks.mode import attack_mode
from afa.attacks.objectives import Objective, cross_entropy, cw_margin, trades_kl
from afa.attacks.pgd import fgsm, fgsm_threat, perturb, perturb_worst_case
from afa.attacks.threat import ThreatModel, format_radius, pgd_label

__all__ = [
    "Objective",
    "ThreatModel",
    "attack_mode",
    "autoattack",
    "cross_entropy",
    "cw_margin",
    "fgsm",
    "fgsm_threat",
    "format_radius",
    "pgd_label",
    "perturb",
    "perturb_worst_case",
    "trades_kl",
]
