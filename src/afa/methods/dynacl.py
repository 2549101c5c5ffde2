"""DynACL: adversarial contrastive learning with dynamic augmentation and loss weights
(Luo, Wang, Wang, "Rethinking the Effect of Data Augmentation in Adversarial Contrastive
Learning", ICLR 2023; PKU-ML/DYNACL ``train_DynACL.py``).

ACL (:mod:`afa.methods.acl`) with two schedules:

* the loss ``((2 - w) NT-Xent(clean pair) + w NT-Xent(adversarial pair)) / 2`` with
  ``w = min(1 + ((e + 1) // K) * (K / epochs) * swap, 2)`` (e from 0; K = ``dynacl_k`` = 50,
  swap = ``dynacl_swap`` = 2/3; :func:`afa.methods.clean_term.dynacl_adv_weight`);
* the augmentation strength annealed from 1 to 0 in blocks of K epochs: the recipe's
  ``data.augment: contrastive`` with ``data.contrastive.schedule: anneal``,
  ``anneal_every: 50`` and ``min_scale: 0.1`` (their crop scale ``(1 - 0.9 s, 1)``).

Their momentum encoder (``resnet18_momentum``, a key encoder EMA'd from the query one) and the
DynACL++ post-processing are not implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from afa.methods.acl import ACL
from afa.methods.clean_term import CleanTerm, check_schedule
from afa.methods.registry import register_method


@register_method("dynacl")
class DynACL(ACL):
    """DynACL pre-training: ACL with DynACL's loss-weight schedule (see the module docstring).

    Args:
        model: the classifier whose encoder is pre-trained.
        threat: the run's threat model.
        config: ACL's options plus ``dynacl_k`` and ``dynacl_swap``.
    """

    weighting: ClassVar[CleanTerm] = "dynacl"

    @dataclass(frozen=True)
    class Config(ACL.Config):
        """Options of DynACL (besides ACL's).

        Attributes:
            dynacl_k: epochs per block of the schedules (their ``reload_frequency``, 50).
            dynacl_swap: their ``swap_param`` (2/3): how fast ``w`` rises.
        """

        dynacl_k: int = 50
        dynacl_swap: float = 2 / 3

        def __post_init__(self) -> None:
            super().__post_init__()
            check_schedule(self.dynacl_k, self.dynacl_swap)

    config: Config

    def _schedule(self) -> tuple[int, float]:
        return self.config.dynacl_k, self.config.dynacl_swap


__all__ = ["DynACL"]
