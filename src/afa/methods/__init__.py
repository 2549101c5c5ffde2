"""L4 training methods: each computes a loss from a batch; ``afa.training`` runs them all.

Importing this package registers every method (``@register_method`` at each class):
``standard``, ``pgd-at``, ``trades``, ``mart``, ``afa``, ``afa-trades``, ``supcon``, ``acl``,
``dynacl``. A new
method is one file here, imported below. ``LinearProbe`` is a stage-2 method of the
pre-training ones and is not registered.
"""

from __future__ import annotations

from afa.methods.acl import ACL
from afa.methods.afa import AFAPretrain
from afa.methods.afa_trades import AFATrades
from afa.methods.base import Batch, Method, StepOutput
from afa.methods.dynacl import DynACL
from afa.methods.mart import MART
from afa.methods.pgd_at import PGDAT
from afa.methods.probe import LinearProbe
from afa.methods.registry import METHODS, method_config_class, register_method
from afa.methods.standard import Standard
from afa.methods.supcon import SupConPretrain
from afa.methods.trades import TRADES

__all__ = [
    "ACL",
    "METHODS",
    "AFAPretrain",
    "AFATrades",
    "DynACL",
    "SupConPretrain",
    "MART",
    "PGDAT",
    "TRADES",
    "Batch",
    "LinearProbe",
    "Method",
    "StepOutput",
    "Standard",
    "method_config_class",
    "register_method",
]
