"""The alignment protocol (``afa.analysis.measure_alignment``) on a small trained digits model.

The numbers it reports are those of the library's pieces recomputed by hand (the AFA loss by
``AFALoss`` on the model's features, the geometry by ``cosine_geometry``), the adversaries
do what they claim (the AFA adversary raises the AFA loss, PGD lowers accuracy), and the
measurement leaves the model's mode and the global random stream as it found them.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor

from afa.analysis import alignment_markdown, cosine_geometry, measure_alignment
from afa.attacks import ThreatModel
from afa.data import load_splits, to_float
from afa.losses import AFALoss, Views
from afa.models.base import Classifier
from afa.recipes import resolve_recipe
from afa.runs import load_run_config, load_trained
from afa.training.plan import train_run

THREAT = ThreatModel(norm="linf", eps=0.2, step_size=0.1, steps=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Classifier, object]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_run_config(
            resolve_recipe("digits-standard"),
            [
                f"out_dir={tmp_path_factory.mktemp('runs')}",
                "train.epochs=4",
                "model.options.width=8",
                "device=cpu",
            ],
        )
        train_run(cfg)
        model = load_trained(cfg.run_dir)[0]
    finally:
        torch.set_num_threads(n)
    return model, load_splits(cfg.data)


def test_the_report_is_the_library_recomputed(trained):
    model, splits = trained
    x, y = torch.as_tensor(splits.test.images[:120]), torch.as_tensor(splits.test.labels[:120])
    rep = measure_alignment(
        model,
        splits.train.images[:400],
        splits.train.labels[:400],
        x,
        y,
        THREAT,
        batch_size=64,
    )
    clean = rep.inputs["clean"]
    with torch.no_grad():
        f = model.eval().features(to_float(x, "cpu"))
    out = AFALoss(temperature=0.1, denominator="negatives")(
        torch.cat([f, f]), Views.stack(y.long(), 1, 1)
    )
    assert clean.afa_loss == pytest.approx(float(out.afa), rel=1e-5)
    assert clean.loss_over_chance == pytest.approx(float(out.afa / out.chance), rel=1e-5)
    geom = cosine_geometry(f, y.long())
    assert clean.cos_gap == pytest.approx(geom["gap"], abs=1e-5)
    assert clean.accuracy == pytest.approx(
        float((model(to_float(x, "cpu")).argmax(1) == y).float().mean())
    )
    # each adversary does what it is named for
    assert rep.inputs["afa"].loss_over_chance > clean.loss_over_chance
    assert rep.inputs["pgd"].accuracy < clean.accuracy
    assert rep.inputs["pgd"].label == "PGD-3 (CE, BN eval)"
    assert rep.inputs["afa"].label == "PGD-3 (AFA, BN eval)"
    assert 0.5 < rep.probe["accuracy"] <= 1.0 and "400 training images" in rep.probe["fitted_on"]
    assert rep.n == 120 and rep.n_train == 400
    assert rep.collapse["separation"] == clean.separation
    assert rep.collapse["collapsed"] is False and rep.collapse["separation_init"] < clean.separation
    d = rep.to_dict()
    assert json.loads(json.dumps(d)) == d  # JSON-ready, numbers as numbers
    md = alignment_markdown([("digits", d)])
    assert md.count("\n| digits |") == 1 and "PGD-3 (AFA, BN eval)" in md


def test_measurement_leaves_mode_and_random_stream_alone(trained):
    model, splits = trained
    model.train()
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_alignment(
        model,
        splits.train.images[:100],
        splits.train.labels[:100],
        splits.test.images[:40],
        splits.test.labels[:40],
        THREAT.with_(steps=1),
        probe=False,
    )
    assert model.training
    assert torch.equal(torch.rand(4), expected)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    model.eval()


class Constant(Classifier):
    def __init__(self, inner: Classifier) -> None:
        super().__init__()
        self.inner, self.normalize, self.head = inner, inner.normalize, inner.head
        self.num_features, self.num_classes = inner.num_features, inner.num_classes

    def encode(self, x: Tensor) -> Tensor:
        return self.inner.encode(x) * 0 + 1.0


def test_a_collapsed_encoder_is_reported_collapsed(trained):
    model, splits = trained
    rep = measure_alignment(
        Constant(model),
        splits.train.images[:100],
        splits.train.labels[:100],
        splits.test.images[:60],
        splits.test.labels[:60],
        THREAT.with_(steps=1),
        probe=False,
    )
    assert rep.collapse["collapsed"] and len(rep.collapse["reasons"]) == 2
    assert rep.inputs["clean"].loss_over_chance == pytest.approx(1.0)  # every cosine equal
    assert rep.inputs["clean"].cos_gap == pytest.approx(0.0, abs=1e-9)
