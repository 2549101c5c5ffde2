"""Every registered method keeps the method contract (as timm tests every model).

The traits the planner and the loop ask a method for are checked here too: the collapse
advice names only options the method has, and the selection metric follows from the
method's own clean/adversarial trait.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from afa.attacks import cross_entropy, perturb
from afa.attacks.threat import ThreatModel
from afa.config import to_dict
from afa.data import BatchLoader, ImageSet
from afa.methods import METHODS, LinearProbe, Method, method_config_class, register_method
from afa.methods.base import Batch, StepOutput, accuracy_metric
from afa.models import create_model
from afa.runs import ClassifierConfig, parse_run_config
from afa.training import RunSpec, fit, rng_state, seed_all, set_rng_state
from afa.training.checkpoint import load_method_extra_state, method_extra_state
from afa.training.plan import build_stages, classifier_method, loop_options

NAMES = METHODS.names()
THREAT = ThreatModel(eps=0.1, step_size=0.05, steps=2)


def tiny_model():
    return create_model("cnn", 3, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,), width=4)


@pytest.mark.parametrize("name", NAMES)
def test_collapse_advice_names_only_the_methods_own_options(name):
    cls = METHODS.get(name)
    fields = {f.name for f in dataclasses.fields(method_config_class(cls))}
    for remedy in cls.collapse_remedies:
        assert remedy.startswith("method."), remedy
        key = remedy.removeprefix("method.").split("=")[0]
        assert key in fields, f"{name}: the collapse advice names {remedy}, not an option"


COLLAPSED = {"feat_separation": 0.31, "feat_erank": 8.0, "feat_separation_init": 0.30}
HEALTHY = {"feat_separation": 0.65, "feat_erank": 8.0, "feat_separation_init": 0.30}


@pytest.mark.parametrize("name", ["supcon", "afa-trades"])
def test_collapse_warning_of_other_methods_names_no_afa_only_option(name):
    method = METHODS.get(name)(tiny_model(), THREAT)
    msg = method.collapse_message(COLLAPSED, epoch=5)
    assert msg is not None and "collapsed" in msg and "randomly initialised" in msg
    assert "eps_warmup_epochs" not in msg and "clean_anchor_weight" not in msg
    assert "When AFA collapses" not in msg  # that section is about afa's options
    assert method.collapse_message(COLLAPSED, epoch=3) is None  # grace epochs
    assert method.collapse_message(HEALTHY, epoch=5) is None


def test_collapse_advice_fits_the_method():
    model = tiny_model()
    afa = METHODS.get("afa")(model, THREAT).collapse_message(COLLAPSED, epoch=5)
    assert afa is not None and "When AFA collapses" in afa and "eps_warmup_epochs" in afa
    assert afa.count("pre-training may have collapsed") == 1
    pgd = METHODS.get("pgd-at")(model, THREAT).collapse_message(COLLAPSED, epoch=5)
    assert pgd is not None and "learning rate" in pgd and "remedies" not in pgd
    assert "AFA" not in pgd and "The training may have collapsed" in pgd
    # a stage-2 probe of a frozen encoder is not judged; every registered method trains one
    assert not LinearProbe(model, THREAT).trains_encoder()
    assert all(METHODS.get(n)(model, THREAT).trains_encoder() for n in NAMES)


def test_selection_metric_follows_the_methods_traits():
    model = tiny_model()
    by_name = {n: METHODS.get(n)(model, THREAT) for n in NAMES}
    assert by_name["standard"].selection_metric() == "val/clean_acc"
    for n in ("pgd-at", "trades", "mart", "afa-trades"):
        assert by_name[n].selection_metric() == "val/pgd_acc"
    for n in ("afa", "supcon"):
        assert by_name[n].selection_metric() is None  # pre-training: the head means nothing
    clean_probe = LinearProbe(model, THREAT)
    adv_probe = LinearProbe(model, THREAT, LinearProbe.Config(adversarial=True))
    assert clean_probe.selection_metric(after=[by_name["supcon"]]) == "val/clean_acc"
    assert clean_probe.selection_metric(after=[by_name["afa"]]) == "val/pgd_acc"
    assert adv_probe.selection_metric(after=[by_name["supcon"]]) == "val/pgd_acc"
    with pytest.raises(TypeError, match="end to end"):
        classifier_method(by_name["pgd-at"], ClassifierConfig(protocol="slf"))
    assert isinstance(classifier_method(by_name["afa"], ClassifierConfig()), LinearProbe)


# ----------------------------------------------------------------------------- the contract

CLASSES, SIDE, N = 4, 8, 16  # digits-like 1x8x8 images, every class 4 times
SMALL = ThreatModel(eps=0.1, step_size=0.05, steps=2)


def digits_batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, 1, SIDE, SIDE, generator=g)
    y = torch.arange(N) % CLASSES

    def jitter(t: torch.Tensor) -> torch.Tensor:  # draws from the global RNG, as crops do
        return (t + 0.05 * torch.randn_like(t)).clamp(0, 1)

    return Batch(x, y, jitter)


def build(cls: type[Method], seed: int = 0) -> Method:
    torch.manual_seed(seed)
    model = create_model(
        "cnn", CLASSES, in_channels=1, image_size=SIDE, mean=(0.5,), std=(0.25,), width=4
    )
    method = cls(model, SMALL)
    method.on_epoch_start(0, 1)
    return method


def check_step_contract(cls: type[Method]) -> None:
    """Forward + backward on a tiny batch with everything a method promises the loop."""
    method = build(cls)
    method.train()
    modes = {name: m.training for name, m in method.named_modules()}
    sentinel = {n: torch.full_like(p, 0.125) for n, p in method.named_parameters()}
    flags = {n: p.requires_grad for n, p in method.named_parameters()}
    for n, p in method.named_parameters():
        p.grad = sentinel[n].clone()
    out = method(digits_batch(0))
    # the attack(s) ran inside forward: parameter .grad, requires_grad and modes untouched
    for n, p in method.named_parameters():
        assert torch.equal(p.grad, sentinel[n]), f"{cls.name}: forward changed {n}.grad"
        assert p.requires_grad == flags[n], f"{cls.name}: forward changed {n}.requires_grad"
    assert {name: m.training for name, m in method.named_modules()} == modes
    assert out.loss.ndim == 0 and out.loss.requires_grad and torch.isfinite(out.loss)
    assert "loss" in out.metrics
    for key, value in out.metrics.items():
        assert isinstance(value, torch.Tensor) and value.ndim == 0, f"{cls.name}: {key}"
        assert not value.requires_grad and torch.isfinite(value), f"{cls.name}: {key}"
    method.zero_grad(set_to_none=True)
    out.loss.backward()
    trainable = method.trainable_parameters()
    assert trainable, f"{cls.name}: nothing to train"
    names = {id(p): n for n, p in method.named_parameters()}
    for p in trainable:
        assert p.grad is not None, f"{cls.name}: {names[id(p)]} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{cls.name}: {names[id(p)]} has a NaN gradient"


def _step(method: Method, optimizer: torch.optim.Optimizer, batch: Batch) -> None:
    out = method(batch)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()


def two_steps(cls: type[Method], *, interrupted: bool) -> dict[str, torch.Tensor]:
    """Two SGD steps, optionally through a weights-only checkpoint and a fresh build between."""
    method = build(cls)
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.05, momentum=0.9)
    seed_all(7)
    _step(method, optimizer, digits_batch(1))
    if interrupted:
        buffer = io.BytesIO()
        torch.save(
            {
                "model": method.model.state_dict(),
                "method": method_extra_state(method),
                "optimizer": optimizer.state_dict(),
                "rng": rng_state(),
            },
            buffer,
        )
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
        method = build(cls, seed=123)  # a new process: other initial weights and RNG
        method.model.load_state_dict(saved["model"])
        load_method_extra_state(method, saved["method"])
        optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.05, momentum=0.9)
        optimizer.load_state_dict(saved["optimizer"])
        set_rng_state(saved["rng"])
    _step(method, optimizer, digits_batch(2))
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def check_resume_contract(cls: type[Method]) -> None:
    full = two_steps(cls, interrupted=False)
    resumed = two_steps(cls, interrupted=True)
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), f"{cls.name}: {k} differs after resume"


@pytest.mark.parametrize("name", NAMES)
def test_every_method_keeps_the_step_contract(name):
    check_step_contract(METHODS.get(name))


@pytest.mark.parametrize("name", NAMES)
def test_every_method_resumes_exactly(name):
    check_resume_contract(METHODS.get(name))


def test_the_contract_can_fail():
    """A method whose attack leaks parameter gradients is caught."""

    class Leaky(METHODS.get("pgd-at")):  # type: ignore[misc, valid-type]
        def forward(self, batch):
            self.model(batch.x).sum().backward()  # what reference attacks do
            return super().forward(batch)

    with pytest.raises(AssertionError, match="forward changed"):
        check_step_contract(Leaky)


# ----------------------------------------------------------------------------- a new method


def test_a_method_defined_in_one_place_runs_through_the_contract_and_fit(tmp_path):
    """Registering a method is one class: the planner, the contract and the loop take it."""

    @dataclass(frozen=True)
    class Config:
        clean_weight: float = 0.5

    class CleanAndAdversarialCE(Method):
        """(1 - w) CE on PGD adversaries + w CE on clean inputs (a throwaway method)."""

        def forward(self, batch: Batch) -> StepOutput:
            x = batch.view()
            x_adv = perturb(self.model, x, batch.y, self.threat, cross_entropy)
            logits = self.model(torch.cat([x, x_adv]))
            clean, adv = logits.float().chunk(2)
            w = self.config.clean_weight
            loss = w * F.cross_entropy(clean, batch.y) + (1 - w) * F.cross_entropy(adv, batch.y)
            return StepOutput(
                loss,
                {
                    "loss": loss.detach(),
                    "acc": accuracy_metric(clean, batch.y),
                    "adv_acc": accuracy_metric(adv, batch.y),
                },
            )

    CleanAndAdversarialCE.Config = Config  # type: ignore[attr-defined]
    name = "throwaway-clean-adv-ce"
    register_method(name)(CleanAndAdversarialCE)
    try:
        assert name in METHODS and CleanAndAdversarialCE.name == name
        check_step_contract(CleanAndAdversarialCE)
        check_resume_contract(CleanAndAdversarialCE)
        cfg = parse_run_config(
            {
                "method": {"name": name, "clean_weight": 0.25},
                "model": {"name": "cnn", "options": {"width": 4}},
                "threat": {"eps": 0.1, "step_size": 0.05, "steps": 2},
                "train": {"epochs": 1, "batch_size": N, "log_every": 100},
            }
        )
        assert cfg.method == {"name": name, "clean_weight": 0.25}
        model = build(CleanAndAdversarialCE).model
        (stage,) = build_stages(cfg, model)
        assert stage.select_by == "val/pgd_acc" and stage.method.config.clean_weight == 0.25
        rng = np.random.default_rng(0)
        data = ImageSet(
            rng.integers(0, 256, (3 * N, 1, SIDE, SIDE), dtype=np.uint8),
            (np.arange(3 * N) % CLASSES).astype(np.int64),
        )
        val = (torch.from_numpy(data.images[:N]), torch.from_numpy(data.labels[:N]))
        state = fit(
            [stage],
            BatchLoader(data, N, shuffle=True, drop_last=True, seed=0),
            RunSpec(tmp_path / "run", to_dict(cfg)),
            options=loop_options(cfg.train),
            val=val,
            threat=cfg.threat,
            augment=lambda t: t,
            device=torch.device("cpu"),
        )
        assert state.completed and state.global_step == 3
        record = state.history[0]
        assert np.isfinite(record["train/loss"]) and 0 <= record["val/pgd_acc"] <= 1
        assert record["val/attack"] == "PGD-2 (CE, BN eval)"
    finally:
        METHODS.unregister(name)
    assert name not in METHODS
