"""Alignment metrics and feature geometry against hand-computed answers and loop oracles."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from afa.analysis.alignment import (
    centroid_alignment,
    class_centroids,
    knn_alignment,
    margin_vs_robustness,
    restatement,
    summarize,
)
from afa.analysis.geometry import cosine_geometry


def _two_clusters():
    """Class 0 around (1, 0), class 1 around (0, 1); one class-0 test point planted at class 1."""
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 2.0], [0.6, 0.8]])
    train_y = torch.tensor([0, 0, 1, 1])
    test = torch.tensor(
        [
            [3.0, 0.0],  # class 0, aligned
            [1.0, 0.1],  # class 0, aligned
            [2.0, 0.5],  # class 0, aligned
            [0.0, 1.0],  # class 0, planted at class 1: misaligned
            [0.1, 1.0],  # class 1, aligned
            [0.0, 5.0],  # class 1, aligned
        ]
    )
    test_y = torch.tensor([0, 0, 0, 0, 1, 1])
    return train, train_y, test, test_y


def test_centroids_are_normalised_means_of_normalised_features():
    train, train_y, _, _ = _two_clusters()
    mu = class_centroids(train, train_y, 2)
    # class 0: mean of (1, 0) and (0.8, 0.6) = (0.9, 0.3); class 1: mean of (0, 1), (0.6, 0.8)
    expect = F.normalize(torch.tensor([[0.9, 0.3], [0.3, 0.9]]), dim=1)
    torch.testing.assert_close(mu, expect)
    assert torch.allclose(mu.norm(dim=1), torch.ones(2))


def test_centroids_reject_a_class_without_features():
    with pytest.raises(ValueError, match=r"classes \[2\]"):
        class_centroids(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), 3)


def test_two_clusters_exact_fractions_and_accuracies():
    train, train_y, test, test_y = _two_clusters()
    mu = class_centroids(train, train_y, 2)
    ca = centroid_alignment(test, test_y, mu)
    assert ca.aligned.tolist() == [True, True, True, False, True, True]
    # The classifier is right on samples 0, 1, 4 and wrong on 2 (aligned), 3 (planted), 5.
    correct = torch.tensor([True, True, False, False, True, False])
    s = summarize(ca.aligned, correct, test_y, 2)
    assert s["aligned_fraction"] == 5 / 6
    assert s["accuracy"] == 3 / 6
    assert s["acc_aligned"] == 3 / 5
    assert s["acc_misaligned"] == 0.0
    assert s["aligned_but_wrong"] == 2
    assert s["misaligned_but_correct"] == 0
    assert s["agreement"] == 4 / 6
    assert s["per_class"]["0"] == {
        "n": 4,
        "aligned_fraction": 0.75,
        "accuracy": 0.5,
        "n_aligned": 3,
        "n_misaligned": 1,
        "acc_aligned": 2 / 3,
        "acc_misaligned": 0.0,
        "aligned_but_wrong": 1,
        "misaligned_but_correct": 0,
        "agreement": 0.75,
    }
    assert s["per_class"]["1"]["aligned_fraction"] == 1.0
    assert s["per_class"]["1"]["acc_misaligned"] is None  # no misaligned sample: undefined


def test_distances_and_margin_are_exact():
    train, train_y, test, test_y = _two_clusters()
    mu = class_centroids(train, train_y, 2)
    ca = centroid_alignment(test, test_y, mu)
    c = 0.9 / math.sqrt(0.9)  # cos((1, 0), mu_0) = 0.9 / ||(0.9, 0.3)||
    s = 0.3 / math.sqrt(0.9)
    # sample 0 = direction (1, 0): d_own = 1 - cos(mu_0), d_other = 1 - cos(mu_1)
    assert ca.d_own[0].item() == pytest.approx(1 - c, abs=1e-6)
    assert ca.d_other[0].item() == pytest.approx(1 - s, abs=1e-6)
    assert ca.margin[0].item() == pytest.approx(c - s, abs=1e-6)
    # planted sample 3 = direction (0, 1), own class 0: the margin is negative
    assert ca.margin[3].item() == pytest.approx(s - c, abs=1e-6)
    torch.testing.assert_close(ca.margin, ca.d_other - ca.d_own)
    assert ca.prediction.tolist() == [0, 0, 0, 1, 1, 1]
    assert ((ca.margin > 0) == ca.aligned).all()


def test_a_tie_between_centroids_is_misaligned():
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ca = centroid_alignment(torch.tensor([[1.0, 1.0]]), torch.tensor([0]), mu)
    assert not ca.aligned.item()
    assert ca.margin.item() == 0.0


def test_centroid_alignment_matches_a_loop_oracle():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(50, 6, generator=g), torch.randint(0, 4, (50,), generator=g)
    mu = F.normalize(torch.randn(4, 6, generator=g), dim=1)
    ca = centroid_alignment(z, y, mu)
    for i in range(50):
        cos = [F.cosine_similarity(z[i], mu[c], dim=0).item() for c in range(4)]
        own, other = cos[y[i]], max(cos[c] for c in range(4) if c != y[i])
        assert ca.aligned[i].item() == (own > other)
        assert ca.d_own[i].item() == pytest.approx(1 - own, abs=1e-5)
        assert ca.d_other[i].item() == pytest.approx(1 - other, abs=1e-5)


def test_knn_hand_case_votes_and_ties():
    # Reference points on the unit circle at angles 0, 10, 20 (class 0) and 90, 100 (class 1).
    ang = torch.tensor([0.0, 10.0, 20.0, 90.0, 100.0]) * math.pi / 180
    ref = torch.stack([ang.cos(), ang.sin()], dim=1)
    ref_y = torch.tensor([0, 0, 0, 1, 1])
    q_ang = torch.tensor([5.0, 60.0, 56.0]) * math.pi / 180
    q = torch.stack([q_ang.cos(), q_ang.sin()], dim=1)
    # k = 3: query at 5 deg -> neighbours 0, 10, 20 (class 0 x3); at 60 deg -> 90, 100, 20 -> class 1 wins 2:1
    aligned, pred = knn_alignment(q, torch.tensor([0, 0, 1]), ref, ref_y, k=3, num_classes=2)
    assert aligned.tolist() == [True, False, True]
    assert pred.tolist() == [0, 1, 1]
    # k = 2 at 56 deg: neighbours 90 (34 deg away) and 20 (36 deg away): a 1:1 tie.
    aligned, pred = knn_alignment(q[2:], torch.tensor([0]), ref, ref_y, k=2, num_classes=2)
    assert aligned.tolist() == [False]  # a tie involving the own class is misaligned
    assert pred.tolist() == [1]  # ties go to the class of the nearest neighbour (90 deg)
    aligned, _ = knn_alignment(q[2:], torch.tensor([1]), ref, ref_y, k=2, num_classes=2)
    assert aligned.tolist() == [False]


def test_knn_chunking_does_not_change_the_answer():
    g = torch.Generator().manual_seed(1)
    ref, ref_y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    q, qy = torch.randn(23, 5, generator=g), torch.randint(0, 3, (23,), generator=g)
    a1, p1 = knn_alignment(q, qy, ref, ref_y, k=5, num_classes=3, chunk=4)
    a2, p2 = knn_alignment(q, qy, ref, ref_y, k=5, num_classes=3, chunk=1000)
    assert torch.equal(a1, a2) and torch.equal(p1, p2)


def test_restatement_flag_and_words():
    restating = {"agreement": 0.99, "aligned_fraction": 0.905, "accuracy": 0.91}
    flag, note = restatement(restating, "clean")
    assert flag
    assert "restates accuracy" in note and "99.0%" in note
    informative = {"agreement": 0.80, "aligned_fraction": 0.70, "accuracy": 0.85}
    flag, note = restatement(informative, "adversarial")
    assert not flag
    assert "not flagged" in note and "80.0%" in note
    # high agreement but a large gap is not a restatement
    assert not restatement(
        {"agreement": 0.96, "aligned_fraction": 0.50, "accuracy": 0.54}, "clean"
    )[0]


def test_margin_vs_robustness_auc_and_point_biserial():
    robust = torch.tensor([False, False, True, True])
    perfect = margin_vs_robustness(torch.tensor([-1.0, -0.5, 0.2, 0.9]), robust)
    assert perfect["auc"] == 1.0
    assert perfect["point_biserial"] > 0.9
    assert margin_vs_robustness(torch.tensor([0.9, 0.2, -0.5, -1.0]), robust)["auc"] == 0.0
    flat = margin_vs_robustness(torch.zeros(4), robust)
    assert flat["auc"] == 0.5 and flat["point_biserial"] is None
    assert margin_vs_robustness(torch.randn(4), torch.ones(4, dtype=torch.bool)) == {
        "auc": None,
        "point_biserial": None,
    }
    # one discordant pair out of four: AUC 3/4
    assert margin_vs_robustness(torch.tensor([0.0, 2.0, 1.0, 3.0]), robust)["auc"] == 0.75


def test_geometry_orthogonal_and_identical_vectors():
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    z = torch.stack([e1, e1, 3 * e1, e2, e2])
    y = torch.tensor([0, 0, 0, 1, 1])
    g = cosine_geometry(z, y)
    assert g["within"] == pytest.approx(1.0)
    assert g["between"] == pytest.approx(0.0)
    assert g["gap"] == pytest.approx(1.0)
    assert g["n_within_pairs"] == 3 * 2 + 2 * 1
    assert g["n_between_pairs"] == 2 * 3 * 2
    collapsed = cosine_geometry(torch.ones(4, 3), torch.tensor([0, 0, 1, 1]))
    assert collapsed["within"] == pytest.approx(1.0) and collapsed["gap"] == pytest.approx(0.0)


def test_geometry_matches_a_pairwise_loop():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(17, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (17,), generator=g)
    within, between = [], []
    for i, j in itertools.permutations(range(17), 2):
        c = F.cosine_similarity(z[i], z[j], dim=0).item()
        (within if y[i] == y[j] else between).append(c)
    out = cosine_geometry(z, y)
    assert out["within"] == pytest.approx(sum(within) / len(within), abs=1e-9)
    assert out["between"] == pytest.approx(sum(between) / len(between), abs=1e-9)
    assert out["n_within_pairs"] == len(within) and out["n_between_pairs"] == len(between)


def test_geometry_single_class_has_no_between_pairs():
    out = cosine_geometry(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))
    assert out["between"] is None and out["gap"] is None and out["within"] is not None
