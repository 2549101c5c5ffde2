"""The model contract every architecture implements, and the input normalisation layer."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from afa.models.dual_bn import Branch, bn_branch, has_dual_bn


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` inside the model, so inputs stay in [0, 1].

    The statistics are non-persistent buffers: they are part of the architecture,
    not of the checkpoint, and they follow the model's device and dtype.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """An image classifier split into an encoder and a linear head.

    Subclasses build ``self.normalize``, their layers and ``self.head`` and implement
    ``encode``. ``features`` is the pooled penultimate representation g(x) that AFA
    aligns; ``forward`` is f(x) = head(g(x)).

    Attributes:
        num_features: width of ``features(x)``.
        num_classes: number of logits.
        head: the linear classifier W.

    Shape:
        x: (B, C, H, W) in [0, 1]; features: (B, num_features); logits: (B, num_classes).
    """

    num_features: int
    num_classes: int
    head: nn.Linear
    normalize: Normalize

    def encode(self, x: Tensor) -> Tensor:
        """Pooled penultimate features of an already-normalised input."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """g(x): pooled penultimate features of an input in [0, 1]."""
        return self.encode(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @property
    def dual_bn(self) -> bool:
        """Whether the model keeps clean and adversarial BN branches (``model.dual_bn``)."""
        return has_dual_bn(self)

    def bn_branch(self, branch: Branch) -> AbstractContextManager[nn.Module]:
        """``with model.bn_branch("adv"):`` runs the block on that BN branch, restoring after.

        A no-op for a model without dual batch norm (:mod:`afa.models.dual_bn`).
        """
        return bn_branch(self, branch)
