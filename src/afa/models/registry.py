"""The model registry: ``@register_model`` entry points and ``create_model``.

Every entry point is a function ``(num_classes, *, in_channels, image_size, mean, std,
**options) -> Classifier``; its keyword-only ``options`` (``width``, ``depth``, ...) are
what a configuration may set, and ``create_model`` rejects any other key by name.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from afa._registry import Registry
from afa.errors import ConfigError
from afa.models.base import Classifier
from afa.models.dual_bn import convert_dual_bn, has_dual_bn

__all__ = ["MODELS", "create_model", "model_names", "register_model"]

ModelFactory = Callable[..., Classifier]

MODELS: Registry[ModelFactory] = Registry("model")

# Arguments every entry point takes; the rest of its signature are the model's options.
_COMMON = ("num_classes", "in_channels", "image_size", "mean", "std")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register an entry point under ``name`` (a name may be registered once)."""
    return MODELS.register(name)


def model_names() -> list[str]:
    """Every registered model name, sorted."""
    return MODELS.names()


def model_options(name: str) -> list[str]:
    """The keyword options ``name`` accepts besides the common arguments."""
    params = inspect.signature(MODELS.get(name)).parameters
    return [p for p in params if p not in _COMMON]


def create_model(
    name: str,
    num_classes: int,
    *,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float],
    std: Sequence[float],
    dual_bn: bool = False,
    **kwargs: Any,
) -> Classifier:
    """Build a registered model.

    Args:
        name: a registered name (``model_names()``), e.g. ``"cnn"``, ``"resnet18"``,
            ``"wrn-28-10"``.
        num_classes: number of logits.
        in_channels: image channels C.
        image_size: image height/width (square inputs); small models use it to pick how
            much to downsample.
        mean, std: per-channel statistics of the inputs in [0, 1]; the model normalises
            internally, so it is always fed images in [0, 1].
        dual_bn: give every batch norm layer a clean and an adversarial branch
            (:mod:`afa.models.dual_bn`; ``model.dual_bn`` in a run config).
        **kwargs: the model's own options (``width``, ``depth``, ``widen_factor``,
            ``activation``, ...).

    Raises:
        ConfigError: unknown name (with the closest match), an option the model does not
            take (naming it and the model), statistics that do not match ``in_channels``, or
            ``dual_bn`` for a model without batch norm.

    Example:
        >>> model = create_model("cnn", 10, in_channels=1, image_size=8, mean=[0.5], std=[0.5])
    """
    factory = MODELS.get(name)
    options = model_options(name)
    for key in kwargs:
        if key not in options:
            close = difflib.get_close_matches(key, options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(options) if options else "none"
            raise ConfigError(f"model {name!r} has no option {key!r}{hint}; its options: {known}")
    if num_classes < 1:
        raise ConfigError(f"model {name!r}: num_classes must be >= 1, got {num_classes}")
    if image_size < 1:
        raise ConfigError(f"model {name!r}: image_size must be >= 1, got {image_size}")
    if len(mean) != in_channels or len(std) != in_channels:
        raise ConfigError(
            f"model {name!r}: mean and std need {in_channels} values (in_channels), "
            f"got {len(mean)} and {len(std)}"
        )
    if any(s <= 0 for s in std):
        raise ConfigError(f"model {name!r}: std must be positive, got {list(std)}")
    model = factory(
        num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        **kwargs,
    )
    if dual_bn:
        convert_dual_bn(model)
        if not has_dual_bn(model):
            raise ConfigError(f"model {name!r} has no batch norm layer: dual_bn needs one")
    return model


def check_positive(model: str, **values: int) -> None:
    """Raise a ConfigError naming the first option that is not a positive integer."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model {model!r}: {key} must be a positive integer, got {value!r}")
