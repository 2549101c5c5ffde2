"""AutoAttack (Croce & Hein 2020) through `pyautoattack`, the packaged port of fra31/auto-attack."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from afa.attacks.mode import attack_mode
from afa.attacks.pgd import _project
from afa.attacks.threat import ThreatModel

_NORMS = {"linf": "Linf", "l2": "L2"}


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    version: Literal["standard", "plus", "rand", "custom"] = "standard",
    batch_size: int = 256,
    seed: int = 0,
    attacks_to_run: Sequence[str] | None = None,
    verbose: bool = False,
) -> Tensor:
    """Adversarial examples from AutoAttack (Croce & Hein 2020, "Reliable evaluation of
    adversarial robustness with an ensemble of diverse parameter-free attacks").

    The "standard" version runs APGD-CE, APGD-T (9 target classes), FAB-T and Square
    (5,000 queries), each only on the points every earlier attack failed on; a point
    broken by one attack keeps that attack's adversarial example. Points that stay
    robust (or were misclassified clean) come back unchanged.

    Only ``threat.norm`` and ``threat.eps`` are used: AutoAttack is parameter-free (its
    own step sizes, iterations and restarts). The model is run in eval mode with
    ``requires_grad=False`` on its parameters (FAB calls ``backward``); modes come back on
    exit. AutoAttack reseeds the global RNG of the CPU and the current CUDA device; that
    state is saved and restored, so calling this does not change the caller's random
    stream. The device is taken from ``x``.

    Args:
        model: classifier returning logits for inputs in [0, 1].
        x: clean inputs in [0, 1].
        y: labels.
        threat: the shared threat model (norm, eps).
        version: ``"standard"`` (the leaderboard protocol), ``"plus"``, ``"rand"`` or
            ``"custom"`` (then ``attacks_to_run`` names the attacks, e.g. ``["apgd-ce"]``).
        batch_size: examples per forward.
        seed: AutoAttack's seed for its random starts.
        attacks_to_run: for ``version="custom"``: a subset of ``apgd-ce``, ``apgd-dlr``,
            ``apgd-t``, ``fab``, ``fab-t``, ``square``.
        verbose: let AutoAttack log its progress (logger ``"auto-attack"``, level DEBUG).

    Returns:
        Detached adversarial inputs, same shape and dtype as ``x``, inside the ball and [0, 1].

    Shape:
        x: (B, C, H, W); y: (B,); result: (B, C, H, W).
    """
    from pyautoattack import AutoAttack  # heavy import, only when AutoAttack is used

    if (version == "custom") != (attacks_to_run is not None):
        raise ValueError("attacks_to_run is required with version='custom' and only then")
    x0 = x.detach()
    if threat.eps == 0 or x0.shape[0] == 0:
        return x0.clone()
    device = x0.device
    cuda = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if (device.type == "cuda")
        else []
    )
    logger = logging.getLogger("auto-attack")
    level = logger.level
    with attack_mode(model, "eval"), torch.random.fork_rng(devices=cuda):
        adversary = AutoAttack(
            model,
            attacks=list(attacks_to_run) if attacks_to_run is not None else None,
            device=device,
            eps=threat.eps,
            norm=_NORMS[threat.norm],
            seed=seed,
            version=version,
        )
        adversary.verbose = verbose
        # pyautoattack logs "setting parameters for standard version" at INFO per call.
        logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
        try:
            x_adv, _ = adversary.run_standard_evaluation(
                x0.float(), y.to(device), batch_size=batch_size
            )
        finally:
            logger.setLevel(level)
    # AutoAttack projects itself; this only removes float rounding at the boundary.
    return _project(x_adv.to(device, x0.dtype), x0, threat).detach()
