"""Evaluation attacks: a registry of named attacks, each a label, its settings and a function.

``afa eval`` and :func:`afa.evaluation.evaluate` take attack *names* (``pgd``, ``cw``,
``autoattack``, ``apgd-ce`` ...) and build each through its registered factory from one
source of settings: the evaluation's threat model (the run's, with any change asked on the
command line applied) and one :class:`EvalSettings` (each attack's own settings, batch
size, seed). What a factory returns is exactly what runs and what eval.json records, so a
label or a recorded setting cannot disagree with the attack.

An attack's own settings are the keyword-only parameters of its factory, each with a type
and a default, as a model's options are its entry point's. :class:`EvalSettings` carries
the values asked for (``eval.attack_options.<attack>.<key>`` in a run's config, ``afa eval
--attack-option ATTACK.KEY=VALUE``), checks them against the declaration, and
:func:`build_attacks` passes each factory its own. Adding an evaluation attack, with
settings or without, is one file in this package (the worked example of
docs/architecture.md#how-to-add-an-evaluation-attack)::

    @register_attack("name")
    def my_attack(model, threat, settings, generator, *, strength: float = 1.0):
        ...  # uses strength, settings.batch_size, settings.seed
        return EvalAttack("name", "My attack (CE)", recorded_settings, run)

Every module of this package is imported when the package is, so registering is all a
new file has to do.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from afa._registry import Registry, unknown_name_message
from afa.attacks import ThreatModel
from afa.config import from_dict
from afa.errors import ConfigError

AttackFn = Callable[[Tensor, Tensor], Tensor]
"""``(x, y) -> x_adv`` on one batch (on the evaluation device)."""

OPTIONS_KEY = "eval.attack_options"
"""Where an attack's own settings live in a run's config (and how errors name them)."""


@dataclass(frozen=True)
class EvalSettings:
    """The settings of the evaluation attacks besides the threat model: one object from the
    run's ``eval`` section and the command line to every attack factory.

    Attributes:
        options: the settings asked of each attack, by registered name (``{"cw":
            {"steps": 50}}``); what is not given is the attack's declared default. Checked
            on construction: an unknown attack or key is refused naming the closest match,
            a value of the wrong type naming the key.
        steps: every attack's ``steps`` setting, over ``options`` (``afa eval --steps``);
            ``None``: each attack's own.
        batch_size: examples per attack batch.
        seed: seed of every random start and of AutoAttack.

    Example:
        >>> EvalSettings({"cw": {"steps": 50}}).attack_options("cw")
        {'steps': 50}
    """

    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    steps: int | None = None
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"eval.batch_size: expected >= 1, got {self.batch_size!r}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps: expected >= 1, got {self.steps!r}")
        if not isinstance(self.options, Mapping):
            raise ConfigError(f"{OPTIONS_KEY}: expected a mapping, got {self.options!r}")
        checked = {
            str(name): _check_options(str(name), given) for name, given in self.options.items()
        }
        object.__setattr__(self, "options", checked)

    def attack_options(self, name: str) -> dict[str, Any]:
        """Every setting of attack ``name``: its declared defaults, then ``options[name]``,
        then ``steps`` (for an attack that has a ``steps`` setting)."""
        resolved = {**declared_options(name), **self.options.get(name, {})}
        if self.steps is not None and "steps" in resolved:
            resolved["steps"] = self.steps
        return resolved

    def record(self, names: Iterable[str]) -> dict[str, Any]:
        """What eval.json keeps under ``settings``: the batch size, the seed and, for each
        attack named, every setting it ran with (resolved: read back by :meth:`from_record`,
        it builds the same attacks)."""
        return {
            "batch_size": self.batch_size,
            "seed": self.seed,
            "attack_options": {name: self.attack_options(name) for name in names},
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EvalSettings:
        """The settings :meth:`record` wrote (eval.json's ``settings``)."""
        if not isinstance(record, Mapping):
            raise ConfigError(f"settings: expected a mapping, got {record!r}")
        return cls(
            options=record.get("attack_options") or {},
            batch_size=record.get("batch_size", 256),
            seed=record.get("seed", 0),
        )


@dataclass(frozen=True)
class EvalAttack:
    """One built evaluation attack.

    Attributes:
        name: the registered name (``pgd``).
        label: what tables and eval.json call it (``PGD-20 (CE, BN eval)``).
        settings: every setting it runs with, recorded verbatim in eval.json; the sanity
            checks find attacks by these (``objective``, ``version``), not by labels.
            :func:`build_attacks` adds the attack's own settings it left out.
        run: the attack on one batch.
        chunk: examples per call of ``run`` (``None``: the evaluation's batch size).
    """

    name: str
    label: str
    settings: dict[str, Any]
    run: AttackFn
    chunk: int | None = None


AttackFactory = Callable[..., EvalAttack]
"""``(model, threat, settings, generator, **own_settings) -> EvalAttack``; ``generator``
(CPU) seeds random starts and is shared by the attacks of one evaluation; the keyword-only
parameters, each typed and with a default, are the attack's own settings."""

EVAL_ATTACKS: Registry[AttackFactory] = Registry("evaluation attack")


def register_attack(name: str) -> Callable[[AttackFactory], AttackFactory]:
    """Register an evaluation attack factory under ``name``.

    Raises:
        TypeError: a keyword-only parameter (an own setting) without a type or a default.
    """

    def deco(factory: AttackFactory) -> AttackFactory:
        _options_class(name, factory)  # a bad declaration fails at import, not at use
        return EVAL_ATTACKS.register(name)(factory)

    return deco


def declared_options(name: str) -> dict[str, Any]:
    """The own settings attack ``name`` declares, with their defaults."""
    cls = _options_class(name, EVAL_ATTACKS.get(name))
    return {f.name: f.default for f in dataclasses.fields(cls)}


def attack_settings(threat: ThreatModel, objective: str, **extra: Any) -> dict[str, Any]:
    """The recorded settings of a PGD-type attack: the whole threat model it ran with."""
    return {**dataclasses.asdict(threat), "objective": objective, **extra}


def build_attacks(
    names: list[str] | tuple[str, ...],
    model: nn.Module,
    threat: ThreatModel,
    settings: EvalSettings,
    generator: torch.Generator,
) -> list[EvalAttack]:
    """Build the named attacks, in order, each given its own settings from ``settings``
    (unknown names raise a ConfigError naming them). Each attack's recorded settings gain
    those of its own settings it did not record itself."""
    built = []
    for name in names:
        own = settings.attack_options(name)
        attack = EVAL_ATTACKS.get(name)(model, threat, settings, generator, **own)
        missing = {k: v for k, v in own.items() if k not in attack.settings}
        built.append(dataclasses.replace(attack, settings={**attack.settings, **missing}))
    return built


def _options_class(name: str, factory: AttackFactory) -> type[Any]:
    """The attack's own settings as a frozen dataclass: its factory's keyword-only
    parameters (their annotations and defaults), so ``from_dict`` checks them strictly."""
    params = [p for p in inspect.signature(factory).parameters.values() if p.kind is p.KEYWORD_ONLY]
    hints = typing.get_type_hints(getattr(factory, "func", factory)) if params else {}
    fields = []
    for p in params:
        if p.default is p.empty or p.name not in hints:
            raise TypeError(
                f"evaluation attack {name!r}: its setting {p.name!r} needs a type and a default"
            )
        fields.append((p.name, hints[p.name], field(default=p.default)))
    return dataclasses.make_dataclass(f"{name.replace('-', '_')}_settings", fields, frozen=True)


def _check_options(name: str, given: Any) -> dict[str, Any]:
    """``given`` checked against attack ``name``'s declaration, converted to its types."""
    key = f"{OPTIONS_KEY}.{name}"
    if name not in EVAL_ATTACKS:
        raise ConfigError(f"{OPTIONS_KEY}: " + unknown_name_message("attack", name, EVAL_ATTACKS))
    cls = _options_class(name, EVAL_ATTACKS.get(name))
    if not dataclasses.fields(cls) and given:
        raise ConfigError(f"{key}: attack {name!r} has no settings of its own, got {dict(given)}")
    checked = from_dict(cls, given, key)
    return {k: getattr(checked, k) for k in given}


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "EVAL_ATTACKS",
    "OPTIONS_KEY",
    "AttackFactory",
    "AttackFn",
    "EvalAttack",
    "EvalSettings",
    "attack_settings",
    "build_attacks",
    "declared_options",
    "register_attack",
]
