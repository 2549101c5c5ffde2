"""Evaluation PGD counts the worst case: an example is broken as soon as any iterate of any
restart is misclassified (``perturb_worst_case``), checked against hand-written loops.

The models are one-pixel functions built so that the point ``perturb`` keeps (the restart
with the highest loss, its final iterate) is classified correctly while another restart,
or an earlier step, is misclassified.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from afa.attacks import ThreatModel, cross_entropy, cw_margin, perturb, perturb_worst_case
from afa.evaluation import EvalSettings, evaluate


class TwoBasins(nn.Module):
    """Three classes over one pixel t in [0, 1], label 0 everywhere.

    The cross-entropy grows from t = 0.5 towards both ends, so PGD from a random start
    runs to the end on its side: at t = 0 the logits are (1, 0.9, 0.9), classified
    correctly with CE 1.03 (the higher loss); at t = 1 they are (1, 1.1, 0),
    misclassified with CE 0.90. A restart that went left has the higher loss.
    """

    def forward(self, x: Tensor) -> Tensor:
        t = x.flatten(1)[:, 0]
        left, right = 2 * F.relu(0.5 - t), 2 * F.relu(t - 0.5)
        base = torch.tensor([3.0, 0.0, 0.0])
        to_left = torch.tensor([-2.0, 0.9, 0.9])
        to_right = torch.tensor([-2.0, 1.1, 0.0])
        return base + left[:, None] * to_left + right[:, None] * to_right


class Overshoot(nn.Module):
    """Two classes over one pixel, label 0; class 1 wins only on the narrow band
    |t - 0.35| < 0.075 (margin ``0.3 - 4 |t - 0.35|``). From t = 0 with steps of 0.3,
    PGD goes 0 -> 0.3 (misclassified) -> 0.6 (correct again: it stepped over the band)."""

    def forward(self, x: Tensor) -> Tensor:
        t = x.flatten(1)[:, 0]
        margin = 0.3 - 4 * (t - 0.35).abs()
        return torch.stack([torch.zeros_like(margin), margin], dim=1)


def _oracle_broken(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, step: float, steps: int, restarts: int
) -> Tensor:
    """Per example, one at a time: is any iterate (start, steps, end) of any restart
    misclassified? Random starts drawn as documented: U[-eps, eps] from a generator
    seeded 0, in each restart only for the examples not yet broken."""
    gen = torch.Generator().manual_seed(0)
    broken = [False] * len(x)
    for _ in range(restarts):
        live = [i for i in range(len(x)) if not broken[i]]
        if not live:
            break
        noise = (2 * torch.rand((len(live),) + x.shape[1:], generator=gen) - 1) * eps
        for j, i in enumerate(live):
            lo, hi = x[i] - eps, x[i] + eps
            a = torch.minimum(torch.maximum(x[i] + noise[j], lo), hi).clamp(0, 1)
            for s in range(steps + 1):
                a = a.detach().requires_grad_(True)
                logits = model(a[None])
                if int(logits.argmax()) != int(y[i]):
                    broken[i] = True
                    break
                if s == steps:
                    break
                (g,) = torch.autograd.grad(F.cross_entropy(logits, y[i : i + 1]), a)
                a = torch.minimum(torch.maximum(a + step * g.sign(), lo), hi).clamp(0, 1)
    return torch.tensor(broken)


def _threat(**kw) -> ThreatModel:
    base = {"norm": "linf", "eps": 0.5, "step_size": 0.25, "steps": 4}
    return ThreatModel(**{**base, **kw})


@pytest.mark.parametrize("restarts", [1, 3, 10])
def test_restarts_break_an_example_when_any_restart_misclassifies(restarts):
    model = TwoBasins()
    x = torch.full((40, 1, 1, 1), 0.5)
    y = torch.zeros(40, dtype=torch.long)
    threat = _threat(restarts=restarts)
    oracle = _oracle_broken(model, x, y, 0.5, 0.25, 4, restarts)
    adv = perturb_worst_case(
        model, x, y, threat, cross_entropy, generator=torch.Generator().manual_seed(0)
    )
    assert (adv - x).abs().max() <= 0.5 + 1e-7 and adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(model(adv).argmax(1) != y, oracle)
    if restarts > 1:  # the case the max-loss point gets wrong: it exists here
        kept = perturb(
            model, x, y, threat, cross_entropy, generator=torch.Generator().manual_seed(0)
        )
        overstated = (model(kept).argmax(1) == y) & oracle
        assert overstated.any()


@pytest.mark.parametrize(("name", "objective"), [("pgd", cross_entropy), ("cw", cw_margin)])
def test_evaluate_counts_the_worst_case_over_restarts(name, objective):
    """What eval.json reports: robust accuracy equals the oracle's count, and is lower than
    counting the max-loss point alone."""
    model = TwoBasins()
    x = torch.full((40, 1, 1, 1), 0.5)
    y = torch.zeros(40, dtype=torch.long)
    threat = _threat(restarts=3)
    result = evaluate(
        model, x, y, threat, attacks=[name], settings=EvalSettings(steps=4, seed=0), sanity=False
    )
    oracle = _oracle_broken(model, x, y, 0.5, 0.25, 4, 3)
    assert result.n_correct(result.columns[1]) == int((~oracle).sum())
    kept = perturb(model, x, y, threat, objective, generator=torch.Generator().manual_seed(0))
    assert result.robust_acc < float((model(kept).argmax(1) == y).float().mean())


def test_a_misclassified_step_counts_even_if_a_later_step_leaves_it():
    model = Overshoot()
    x, y = torch.zeros(1, 1, 1, 1), torch.zeros(1, dtype=torch.long)
    threat = ThreatModel(norm="linf", eps=1.0, step_size=0.3, steps=2, random_start=False)
    final = perturb(model, x, y, threat, cross_entropy)
    assert float(final) == pytest.approx(0.6) and int(model(final).argmax()) == 0
    adv = perturb_worst_case(model, x, y, threat, cross_entropy)
    assert float(adv) == pytest.approx(0.3) and int(model(adv).argmax()) == 1
    result = evaluate(
        model, x, y, threat, attacks=["pgd"], settings=EvalSettings(steps=2), sanity=False
    )
    assert result.robust_acc == 0.0


def test_unbroken_examples_get_the_highest_loss_restart_and_state_is_restored():
    """No iterate misclassified: as perturb, the final point with the highest loss; the
    model's mode and parameters' requires_grad are as they were."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3)).train()
    x = torch.rand(6, 1, 2, 2)
    y = model.eval()(x).argmax(1)
    model.train()
    threat = ThreatModel(norm="l2", eps=1e-3, step_size=5e-4, steps=3, restarts=2)
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    adv = perturb_worst_case(model, x, y, threat, cross_entropy, generator=gen_a)
    kept = perturb(model, x, y, threat.with_(bn_mode="eval"), cross_entropy, generator=gen_b)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert torch.allclose(adv, kept, atol=1e-6)


def test_train_mode_batch_norm_is_refused():
    with pytest.raises(ValueError, match="bn_mode"):
        perturb_worst_case(
            TwoBasins(),
            torch.rand(2, 1, 1, 1),
            torch.zeros(2, dtype=torch.long),
            _threat(bn_mode="train"),
            cross_entropy,
        )
