"""Training methods: each computes a loss from a batch; ``afa.training`` runs them all."""

from __future__ import annotations

from afa._registry import Registry
from afa.methods.afa import AFAPretrain
from afa.methods.afa_trades import AFATrades
from afa.methods.base import Batch, Method, StepOutput
from afa.methods.mart import MART
from afa.methods.pgd_at import PGDAT
from afa.methods.probe import LinearProbe
from afa.methods.standard import Standard
from afa.methods.supcon import SupConPretrain
from afa.methods.trades import TRADES

METHODS: Registry[type[Method]] = Registry("method")
for _cls in (Standard, PGDAT, TRADES, MART, AFAPretrain, AFATrades, SupConPretrain):
    METHODS.register(_cls.name)(_cls)


def method_config_class(cls: type[Method]) -> type:
    """The method's options dataclass (``cls.Config``)."""
    return cls.Config  # type: ignore[attr-defined]


__all__ = [
    "METHODS",
    "AFAPretrain",
    "AFATrades",
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
]
