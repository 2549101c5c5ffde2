"""Exact L∞ separation against scipy's brute force, with planted closest pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from afa.analysis.separation import input_separation, min_linf_to_other_label


def _oracle(q, ql, r, rl):
    d = cdist(
        q.reshape(len(q), -1).astype(np.float64),
        r.reshape(len(r), -1).astype(np.float64),
        "chebyshev",
    )
    d[ql[:, None] == rl[None, :]] = np.inf
    return d


def _check(q, ql, r, rl, scale, **kw):
    d = _oracle(q, ql, r, rl)
    best = d.min(axis=1)
    # "pruned" twice: as shipped, and never falling back to the dense scan
    variants = [("brute", {}), ("pruned", {}), ("pruned", {"dense_fraction": 1.0})]
    for method, extra in variants if q.ndim == 4 else variants[:1]:
        dist, idx = min_linf_to_other_label(q, ql, r, rl, method=method, **extra, **kw)
        np.testing.assert_allclose(dist.numpy() * scale, best, rtol=1e-6, atol=0)
        for i in range(len(q)):
            if np.isfinite(best[i]):
                assert idx[i] == np.flatnonzero(d[i] == best[i])[0], (method, i)  # smallest index
            else:
                assert idx[i] == -1


def test_planted_pair_uint8_images_both_methods():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (120, 3, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 4, 120)
    # Plant the closest differently labelled pair: 17 and 80 differ by at most 3 levels.
    labels[17], labels[80] = 0, 1
    train[80] = np.clip(train[17].astype(int) + rng.integers(-3, 4, (3, 8, 8)), 0, 255)
    train[80, 0, 0, 0] = min(255, int(train[17, 0, 0, 0]) + 3)
    _check(
        train,
        labels,
        train,
        labels,
        255,
        query_block=7,
        ref_block=11,
        pair_chunk=13,
        seed_candidates=2,
    )
    out = input_separation(train, labels, eps=8 / 255, num_classes=4, query_block=16, ref_block=32)
    assert out["train_train"]["min_distance"] == pytest.approx(3 / 255)
    assert sorted(out["train_train"]["closest_pair"]) == [17, 80]
    assert out["two_r"] == pytest.approx(3 / 255) and out["r"] == pytest.approx(1.5 / 255)
    assert out["separated_at_eps"] is False  # 2r = 3/255 < 2 eps = 16/255
    assert out["ratio_two_r_to_two_eps"] == pytest.approx(3 / 16)
    assert out["test_train"] is None


def test_float_images_and_flat_vectors():
    rng = np.random.default_rng(1)
    q = rng.random((40, 2, 4, 6), dtype=np.float32)
    r = rng.random((55, 2, 4, 6), dtype=np.float32)
    ql, rl = rng.integers(0, 3, 40), rng.integers(0, 3, 55)
    r[5] = q[3] + 0.001
    ql[3], rl[5] = 0, 2
    _check(q, ql, r, rl, 1.0, query_block=8, ref_block=9, pair_chunk=5)
    _check(q.reshape(40, -1), ql, r.reshape(55, -1), rl, 1.0, query_block=8, ref_block=9)


def test_train_train_excludes_self_and_same_label_pairs():
    x = np.array([[0.0, 0.0], [0.0, 0.1], [1.0, 1.0]], dtype=np.float32)
    y = np.array([0, 0, 1])
    d, i = min_linf_to_other_label(x, y, x, y)
    # the nearest point overall is the same-labelled neighbour at 0.1: never counted
    assert d.tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert i.tolist() == [2, 2, 0]  # point 2 is at distance 1 from both: the smaller index


def test_no_other_label_gives_inf_and_minus_one():
    x = np.zeros((3, 4), dtype=np.float32)
    d, i = min_linf_to_other_label(x, np.zeros(3, dtype=int), x, np.zeros(3, dtype=int))
    assert torch.isinf(d).all() and (i == -1).all()
    out = input_separation(x, np.zeros(3, dtype=int), eps=0.1)
    assert out["two_r"] is None and out["separated_at_eps"] is None


def test_per_class_and_test_train():
    train = np.array([[0.0], [0.2], [1.0], [1.5]], dtype=np.float32)
    train_y = np.array([0, 1, 2, 2])
    test = np.array([[0.05], [0.9]], dtype=np.float32)
    test_y = np.array([1, 0])
    out = input_separation(train, train_y, test, test_y, eps=0.05)
    tt = out["train_train"]
    assert tt["min_distance"] == pytest.approx(0.2)
    assert tt["per_class"]["0"]["min_distance"] == pytest.approx(0.2)
    assert tt["per_class"]["2"]["min_distance"] == pytest.approx(0.8)
    assert tt["per_class"]["2"]["r"] == pytest.approx(0.4)
    te = out["test_train"]
    assert te["min_distance"] == pytest.approx(0.05)  # test 0 (class 1) to train 0 (class 0)
    assert te["closest_pair"] == [0, 0]
    assert te["per_class"]["0"]["min_distance"] == pytest.approx(0.1)  # 0.9 to 1.0 (class 2)
    assert out["two_r"] == pytest.approx(0.05)  # the smaller of the two sides
    assert out["separated_at_eps"] is False  # 2r = 0.05 < 2 eps = 0.1
    assert out["n_train"] == 4 and out["n_test"] == 2


def test_tensor_inputs_and_dtype_mismatch():
    x = torch.rand(10, 1, 4, 4)
    y = torch.arange(10) % 2
    d, _ = min_linf_to_other_label(x, y, x, y)
    assert d.shape == (10,)
    with pytest.raises(ValueError, match="dtype"):
        min_linf_to_other_label(x, y, (x * 255).to(torch.uint8), y)
    with pytest.raises(ValueError, match="even"):
        min_linf_to_other_label(
            torch.rand(3, 1, 3, 3), y[:3], torch.rand(3, 1, 3, 3), y[:3], method="pruned"
        )


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 30),
    m=st.integers(1, 30),
    classes=st.integers(1, 4),
    levels=st.integers(1, 256),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_pruned_equals_brute_equals_scipy(n, m, classes, levels, seed):
    # Few grey levels make many ties and equal bounds: the hard case for pruning.
    rng = np.random.default_rng(seed)
    q = rng.integers(0, levels, (n, 1, 4, 4)).astype(np.uint8)
    r = rng.integers(0, levels, (m, 1, 4, 4)).astype(np.uint8)
    ql, rl = rng.integers(0, classes, n), rng.integers(0, classes, m)
    _check(q, ql, r, rl, 255, query_block=5, ref_block=4, pair_chunk=3, seed_candidates=1)


def test_smooth_images_are_pruned_not_scanned_densely(monkeypatch):
    # Piecewise-constant images (plus small noise): the 2x2 pooled bound is nearly tight, so
    # the pruned search never needs the dense scan, and still returns the exact answer.
    import afa.analysis.separation as sep

    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 240, (150, 3, 2, 2))
    x = (coarse.repeat(4, axis=2).repeat(4, axis=3) + rng.integers(0, 16, (150, 3, 8, 8))).astype(
        np.uint8
    )
    y = rng.integers(0, 5, 150)

    def no_dense(*args, **kwargs):
        raise AssertionError("the dense scan ran")

    monkeypatch.setattr(sep, "_dense_min", no_dense)
    d = _oracle(x, y, x, y)
    dist, idx = min_linf_to_other_label(x, y, x, y, method="pruned", query_block=32)
    np.testing.assert_allclose(dist.numpy() * 255, d.min(axis=1))
    assert all(d[i, idx[i]] == d[i].min() for i in range(150))
