"""``analyze`` + ``write_analysis`` on a tiny stand-in classifier: every key, figure and file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from afa.analysis import FIGURES, analyze, write_analysis
from afa.attacks import ThreatModel
from afa.models.base import Classifier, Normalize

THREAT = ThreatModel(norm="linf", eps=8 / 255, step_size=2 / 255, steps=3)


class TinyNet(Classifier):
    """conv-BN-ReLU, global average pool, 8 features, a linear head."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.normalize = Normalize([0.5], [0.25])
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.num_features = 8
        self.num_classes = num_classes
        self.head = nn.Linear(8, num_classes)

    def encode(self, x: Tensor) -> Tensor:
        return self.body(x)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 8x8 images whose brightness depends on the class (3 classes)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(60 + 70 * y[:, None, None, None], 20, (n, 1, 8, 8))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


@pytest.fixture(scope="module")
def run() -> tuple[TinyNet, dict]:
    torch.manual_seed(0)
    model = TinyNet()
    train_x, train_y = _data(90, 0)
    test_x, test_y = _data(30, 1)
    # A few steps of training so that both aligned and misaligned samples exist.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xt, yt = torch.from_numpy(train_x).float() / 255, torch.from_numpy(train_y)
    for _ in range(15):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.train()
    result = analyze(
        model,
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        test_x,
        test_y,
        THREAT,
        k=5,
        n_test=24,
        n_train=60,
        batch_size=16,
        seed=0,
        tsne_samples=20,
        class_names=["dark", "mid", "bright"],
    )
    return model, result


def test_every_key_and_value_range(run):
    model, r = run
    for key in (
        "threat_model",
        "n_train",
        "n_test",
        "k",
        "seed",
        "num_classes",
        "accuracy",
        "alignment",
        "nearest_centroid_accuracy",
        "knn_accuracy",
        "restates_accuracy",
        "notes",
        "distances",
        "margin_vs_robustness",
        "geometry",
        "lipschitz",
        "separation",
        "tsne",
        "samples",
        "versions",
        "time_s",
    ):
        assert key in r, key
    assert r["n_train"] == 60 and r["n_test"] == 24 and r["num_classes"] == 3
    assert r["threat_model"]["eps"] == pytest.approx(8 / 255)
    for rule in ("centroid", "knn"):
        for split in ("clean", "adversarial"):
            s = r["alignment"][rule][split]
            assert s["n"] == 24
            assert 0 <= s["aligned_fraction"] <= 1
            assert s["n_aligned"] + s["n_misaligned"] == 24
            assert set(s["per_class"]) == {"0", "1", "2"}
            assert sum(c["n"] for c in s["per_class"].values()) == 24
            # accuracy decomposes over aligned and misaligned samples
            correct = (s["acc_aligned"] or 0) * s["n_aligned"] + (s["acc_misaligned"] or 0) * s[
                "n_misaligned"
            ]
            assert correct == pytest.approx(s["accuracy"] * 24)
    assert r["accuracy"]["clean"] == r["alignment"]["centroid"]["clean"]["accuracy"]
    assert set(r["restates_accuracy"]) == {"clean", "adversarial"} and len(r["notes"]) == 2
    for split in ("clean", "adversarial"):
        g = r["geometry"][split]
        assert -1 <= g["between"] <= 1 and -1 <= g["within"] <= 1
        assert len(r["samples"][split]["d_own"]) == 24
        assert 0 <= r["distances"][split]["d_own"]["mean"] <= 2
    assert (
        r["lipschitz"]["n"] == 24
        and r["lipschitz"]["mean"] > 0
        and r["lipschitz"]["output"] == "logits"
    )
    sep = r["separation"]
    assert sep["n_train"] == 60 and sep["n_test"] == 24 and sep["two_r"] > 0
    assert sep["eps"] == pytest.approx(8 / 255)
    assert len(r["tsne"]["clean"]) == 20 and len(r["tsne"]["adversarial"]) == 20
    assert len(r["tsne"]["labels"]) == 20
    assert r["margin_vs_robustness"]["clean_margin"].keys() == {"auc", "point_biserial"}


def test_model_mode_and_parameters_untouched(run):
    model, _ = run
    assert model.training  # restored
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_json_ready_and_written_with_figures(run, tmp_path):
    _, r = run
    json.dumps(r, allow_nan=False)  # numbers as numbers, nothing exotic
    paths = write_analysis(tmp_path, dict(r))
    data = json.loads((tmp_path / "analysis.json").read_text())
    assert data["figures"] == {
        name: FIGURES[name] for name in ("tsne", "distances", "aligned_accuracy")
    }
    for name in ("tsne", "distances", "aligned_accuracy"):
        png = paths[name].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert data["alignment"] == r["alignment"]
    assert not list(tmp_path.glob("*.tmp"))


def test_write_without_figures(run, tmp_path):
    _, r = run
    paths = write_analysis(tmp_path, dict(r), figures=False)
    assert set(paths) == {"json", "markdown"} and not list(tmp_path.glob("*.png"))
    assert json.loads(paths["json"].read_text())["figures"] == {}
    # the alignment protocol's section: in the JSON and as the table of analysis.md
    fa = json.loads(paths["json"].read_text())["feature_alignment"]
    assert set(fa["inputs"]) == {"clean", "pgd", "afa"} and fa["n"] == r["n_test"]
    assert fa["inputs"]["pgd"]["label"] == r["attack"]
    md = paths["markdown"].read_text()
    assert md.count(f"\n| {tmp_path.name} |") == 1 and "loss/chance" in md


def test_same_seed_same_numbers():
    torch.manual_seed(1)
    model = TinyNet()
    x, y = _data(30, 2)
    kw = dict(k=3, n_test=12, n_train=18, batch_size=8, seed=5, tsne_samples=0, separation=False)
    a = analyze(model, x, y, x, y, THREAT, **kw)
    b = analyze(model, x, y, x, y, THREAT, **kw)
    for key in ("alignment", "lipschitz", "geometry", "samples", "accuracy"):
        assert a[key] == b[key], key
    assert a["tsne"] is None and a["separation"] is None
