"""The method registry: ``@register_method("name")`` at a method's class definition.

A new training method is one file, ``methods/<name>.py``: a :class:`~afa.methods.Method`
subclass with its nested ``Config``, decorated with ``@register_method("<name>")`` and
imported by ``afa/methods/__init__.py``. The planner builds it by name from a run config
(``method.name``) and asks the class for its traits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from afa._registry import Registry
from afa.methods.base import Method

M = TypeVar("M", bound=type[Method])

METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str) -> Callable[[M], M]:
    """Register a Method class under ``name`` (its ``name`` attribute is set to it)."""

    def deco(cls: M) -> M:
        cls.name = name
        METHODS.register(name)(cls)
        return cls

    return deco


def method_config_class(cls: type[Method]) -> type:
    """The method's options dataclass (``cls.Config``)."""
    return cls.Config


__all__ = ["METHODS", "method_config_class", "register_method"]
