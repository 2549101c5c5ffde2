"""The AFA loss against loop oracles, PML's SupConLoss, and its properties."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from afa.losses import AFALoss, Views, afa_loss, contrastive_terms

# ----------------------------------------------------------------------------- oracle


def oracle(
    z,
    labels,
    is_adv,
    *,
    temperature=0.1,
    denominator="negatives",
    anchors="adversarial",
    cross_view_positives=True,
    ref=None,
    self_index=None,
    per_anchor=False,
):
    """Explicit loops over anchors, positives and negatives, in float64 autograd scalars."""
    z = F.normalize(z.double(), dim=1)
    labels = labels.tolist()
    is_adv = is_adv.tolist()
    if ref is None:
        rz, rl, ra = z, labels, is_adv
        self_index = list(range(len(labels)))
    else:
        rz = F.normalize(ref[0].double(), dim=1)
        rl, ra = ref[1].tolist(), ref[2].tolist()
        self_index = self_index.tolist() if self_index is not None else [-1] * len(labels)
    losses = {}
    for i in range(len(labels)):
        if anchors == "adversarial" and not is_adv[i]:
            continue
        if anchors == "clean" and is_adv[i]:
            continue
        pos, neg = [], []
        for j in range(len(rl)):
            if j == self_index[i]:
                continue
            if rl[j] == labels[i]:
                if cross_view_positives or ra[j] == is_adv[i]:
                    pos.append(j)
            else:
                neg.append(j)
        if not pos:
            continue

        def s(j, i=i):
            return torch.dot(z[i], rz[j]) / temperature

        terms = []
        for p in pos:
            if denominator == "negatives":
                den = torch.exp(s(p)) + sum(
                    (torch.exp(s(n)) for n in neg), torch.zeros((), dtype=torch.float64)
                )
            else:
                den = sum(torch.exp(s(a)) for a in pos + neg)
            terms.append(-torch.log(torch.exp(s(p)) / den))
        losses[i] = sum(terms) / len(terms)
    if per_anchor:
        return losses
    if not losses:
        return torch.zeros((), dtype=torch.float64)
    return sum(losses.values()) / len(losses)


def make(b=5, classes=3, vc=1, va=1, d=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (b,), generator=g)
    views = Views.stack(y, vc, va)
    z = torch.randn(len(views), d, generator=g, dtype=dtype)
    return z, views


OPTIONS = list(
    itertools.product(["negatives", "supcon"], ["adversarial", "all", "clean"], [True, False])
)


@pytest.mark.parametrize("denominator,anchors,cross", OPTIONS)
@pytest.mark.parametrize("vc,va", [(1, 1), (0, 2), (2, 1), (1, 2)])
def test_matches_oracle_value_and_gradient(denominator, anchors, cross, vc, va):
    z, views = make(b=5, classes=3, vc=vc, va=va, seed=vc * 10 + va)
    kw = dict(temperature=0.2, denominator=denominator, anchors=anchors, cross_view_positives=cross)
    z1 = z.clone().requires_grad_(True)
    out = afa_loss(z1, views.labels, views.is_adv, **kw)
    z2 = z.clone().requires_grad_(True)
    ref = oracle(z2, views.labels, views.is_adv, **kw)
    assert out.loss.dtype == torch.float64
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)
    expected = oracle(z, views.labels, views.is_adv, per_anchor=True, **kw)
    assert out.num_valid.item() == len(expected)
    assert set(torch.nonzero(out.valid).flatten().tolist()) == set(expected)
    for i, v in expected.items():
        torch.testing.assert_close(out.per_anchor[i], v)
    if isinstance(ref, torch.Tensor) and ref.requires_grad:
        out.loss.backward()
        ref.backward()
        torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("denominator", ["negatives", "supcon"])
def test_reference_set_with_self_index_matches_oracle(denominator):
    z, views = make(b=6, classes=2, vc=1, va=1, seed=3)
    ref_z = torch.randn_like(z)
    # every row of z stands for the same row of the reference (the attack's layout) ...
    self_index = torch.arange(len(views))
    # ... except two rows that are not in the reference at all
    self_index[1] = -1
    self_index[8] = -1
    kw = dict(temperature=0.1, denominator=denominator, anchors="adversarial")
    out = afa_loss(
        z,
        views.labels,
        views.is_adv,
        ref_z=ref_z,
        ref_labels=views.labels,
        ref_is_adv=views.is_adv,
        self_index=self_index,
        **kw,
    )
    ref = oracle(
        z,
        views.labels,
        views.is_adv,
        ref=(ref_z, views.labels, views.is_adv),
        self_index=self_index,
        **kw,
    )
    torch.testing.assert_close(out.loss, ref)


def test_reference_set_defaults_to_clean_and_no_self():
    z, views = make(b=4, classes=2, vc=0, va=1, seed=1)
    ref_z = torch.randn(7, z.shape[1], dtype=z.dtype)
    ref_labels = torch.tensor([0, 1, 0, 1, 1, 0, 0])
    out = afa_loss(z, views.labels, views.is_adv, ref_z=ref_z, ref_labels=ref_labels)
    ref = oracle(
        z,
        views.labels,
        views.is_adv,
        ref=(ref_z, ref_labels, torch.zeros(7, dtype=torch.bool)),
    )
    torch.testing.assert_close(out.loss, ref)


@pytest.mark.parametrize("anchors", ["adversarial", "all"])
@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_module_clean_anchor_term(anchors, weight):
    z, views = make(b=6, classes=3, vc=2, va=1, seed=4)
    crit = AFALoss(temperature=0.3, anchors=anchors, clean_anchor_weight=weight)
    out = crit(z, views)
    main = oracle(z, views.labels, views.is_adv, temperature=0.3, anchors=anchors)
    clean = oracle(z, views.labels, views.is_adv, temperature=0.3, anchors="clean")
    torch.testing.assert_close(out.afa, main)
    torch.testing.assert_close(out.loss, main + weight * clean)
    torch.testing.assert_close(out.clean, clean if weight else torch.zeros_like(clean))


@pytest.mark.parametrize("denominator", ["negatives", "supcon"])
@pytest.mark.parametrize("anchors", ["adversarial", "all"])
def test_chance_level_is_the_loss_at_equal_similarities(denominator, anchors):
    _, views = make(b=7, classes=3, vc=1, va=2, seed=5)
    z = torch.ones(len(views), 8)  # every similarity equal
    out = afa_loss(z, views.labels, views.is_adv, denominator=denominator, anchors=anchors)
    torch.testing.assert_close(out.loss, out.chance)
    # and by hand for one configuration: log(1 + |N|) with the negatives denominator
    if denominator == "negatives" and anchors == "all":
        y = views.labels
        expected = torch.stack([torch.log1p((y != y[i]).sum().float()) for i in range(len(y))])
        torch.testing.assert_close(out.chance, expected.mean())


def test_negatives_denominator_differs_from_supcon():
    z, views = make(b=8, classes=2, vc=1, va=1, seed=6)
    a = afa_loss(z, views.labels, views.is_adv, denominator="negatives").loss
    b = afa_loss(z, views.labels, views.is_adv, denominator="supcon").loss
    assert b > a  # the SupCon denominator adds the other positives


# ----------------------------------------------------------------------------- PML


@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("views_per_sample", [1, 2])
def test_supcon_all_anchors_matches_pytorch_metric_learning(temperature, views_per_sample):
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    g = torch.Generator().manual_seed(7)
    y = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4])  # labels 2 and 4 have no positive with one view
    views = Views.stack(y, views_per_sample, 0)
    z = torch.randn(len(views), 6, generator=g, dtype=torch.float64)
    ours = afa_loss(
        z, views.labels, views.is_adv, denominator="supcon", anchors="all", temperature=temperature
    )
    # PML: cosine similarity / temperature, denominator over positives and negatives (not
    # the anchor), mean over anchors with a non-zero loss (AvgNonZeroReducer): anchors
    # without positives get 0 and are left out, as in ours.
    theirs = pml.SupConLoss(temperature=temperature)(z, views.labels)
    torch.testing.assert_close(ours.loss, theirs.to(ours.loss.dtype), rtol=1e-6, atol=1e-8)
    if views_per_sample == 1:
        assert ours.num_valid.item() == 6


# ----------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 8),
    classes=st.integers(1, 4),
    vc=st.integers(0, 2),
    va=st.integers(1, 2),
    seed=st.integers(0, 10_000),
    denominator=st.sampled_from(["negatives", "supcon"]),
    anchors=st.sampled_from(["adversarial", "all"]),
    cross=st.booleans(),
)
def test_permutation_invariant_and_finite(b, classes, vc, va, seed, denominator, anchors, cross):
    z, views = make(b=b, classes=classes, vc=vc, va=va, seed=seed, dtype=torch.float32)
    kw = dict(denominator=denominator, anchors=anchors, cross_view_positives=cross)
    z = z.requires_grad_(True)
    out = afa_loss(z, views.labels, views.is_adv, **kw)
    perm = torch.randperm(len(views), generator=torch.Generator().manual_seed(seed))
    out_p = afa_loss(z[perm], views.labels[perm], views.is_adv[perm], **kw)
    torch.testing.assert_close(out.loss, out_p.loss, rtol=1e-5, atol=1e-6)
    assert out.num_valid == out_p.num_valid
    torch.testing.assert_close(out.per_anchor[perm], out_p.per_anchor, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(out.loss, z)
    assert torch.isfinite(out.loss) and torch.isfinite(grad).all()
    assert out.loss >= 0
    if out.num_valid == 0:
        assert out.loss.item() == 0.0 and (grad == 0).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0))
def test_invariant_to_feature_scale(seed, scale):
    z, views = make(b=6, classes=3, seed=seed)
    a = afa_loss(z, views.labels, views.is_adv).loss
    b = afa_loss(z * scale, views.labels, views.is_adv).loss
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("denominator", ["negatives", "supcon"])
@pytest.mark.parametrize("anchors", ["adversarial", "all"])
def test_gradcheck(denominator, anchors):
    z, views = make(b=4, classes=2, vc=1, va=1, d=3, seed=8)
    z.requires_grad_(True)

    def f(z):
        return afa_loss(
            z, views.labels, views.is_adv, temperature=0.5, denominator=denominator, anchors=anchors
        ).loss

    assert torch.autograd.gradcheck(f, (z,))


def test_gradcheck_reference_set():
    z, views = make(b=4, classes=2, vc=0, va=1, d=3, seed=9)
    ref = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    ref_labels = torch.tensor([0, 1, 0, 1, 0, 1])
    z.requires_grad_(True)

    def f(z, ref):
        return afa_loss(z, views.labels, views.is_adv, ref_z=ref, ref_labels=ref_labels).loss

    assert torch.autograd.gradcheck(f, (z, ref))


# ----------------------------------------------------------------------------- degenerate


@pytest.mark.parametrize("denominator", ["negatives", "supcon"])
@pytest.mark.parametrize(
    "y,vc,va",
    [
        ([0], 0, 1),  # one sample, one view: no positive anywhere
        ([0, 1, 2, 3], 0, 1),  # all labels distinct, one view
        ([0], 1, 1),  # one sample, two views: one class, no negatives
        ([1, 1, 1, 1], 1, 1),  # one class
        ([0, 0, 1, 2], 0, 1),  # some anchors without positives
    ],
)
def test_degenerate_batches_are_finite(denominator, y, vc, va):
    y = torch.tensor(y)
    views = Views.stack(y, vc, va)
    z = torch.randn(len(views), 5, requires_grad=True)
    out = afa_loss(z, views.labels, views.is_adv, denominator=denominator)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()
    expected = oracle(
        z.detach(), views.labels, views.is_adv, denominator=denominator, per_anchor=True
    )
    assert out.num_valid.item() == len(expected)
    if not expected:
        assert out.loss.item() == 0.0
        assert (z.grad == 0).all()
    torch.testing.assert_close(
        out.loss.double(),
        oracle(z.detach(), views.labels, views.is_adv, denominator=denominator),
        rtol=1e-5,
        atol=1e-6,
    )


def test_one_class_negatives_denominator_is_zero():
    """No negatives: every positive's term is -log(e^s / e^s) = 0."""
    views = Views.stack(torch.zeros(4, dtype=torch.long), 1, 1)
    z = torch.randn(8, 3, requires_grad=True)
    out = afa_loss(z, views.labels, views.is_adv)
    assert out.loss.item() == 0.0 and out.num_valid.item() == 4


def test_empty_anchor_set():
    views = Views.stack(torch.tensor([0, 1]), 2, 0)  # no adversarial rows
    z = torch.randn(4, 3, requires_grad=True)
    out = afa_loss(z, views.labels, views.is_adv, anchors="adversarial")
    out.loss.backward()
    assert out.loss.item() == 0.0 and out.num_valid.item() == 0 and (z.grad == 0).all()


def test_small_temperature_is_stable():
    z, views = make(b=8, classes=3, seed=10, dtype=torch.float32)
    out = afa_loss(z, views.labels, views.is_adv, temperature=0.005)
    ref = oracle(z, views.labels, views.is_adv, temperature=0.005)
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- precision


@pytest.mark.parametrize("denominator", ["negatives", "supcon"])
def test_bf16_autocast_gives_float32_close_to_fp32(denominator):
    g = torch.Generator().manual_seed(11)
    y = torch.randint(0, 4, (16,), generator=g)
    views = Views.stack(y, 1, 1)
    x = torch.randn(len(views), 32, generator=g)
    w = torch.randn(32, 16, generator=g)
    fp32 = afa_loss(x @ w, views.labels, views.is_adv, denominator=denominator).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = x @ w  # bf16 under autocast
        assert z.dtype == torch.bfloat16
        out = afa_loss(z, views.labels, views.is_adv, denominator=denominator)
    assert out.loss.dtype == torch.float32
    # the same bf16 features computed in float32 give exactly the same loss
    exact = afa_loss(z.float(), views.labels, views.is_adv, denominator=denominator).loss
    torch.testing.assert_close(out.loss, exact)
    torch.testing.assert_close(out.loss, fp32, rtol=2e-2, atol=2e-2)


def test_contrastive_terms_rejects_bad_options():
    z = torch.randn(3, 2)
    y = torch.tensor([0, 0, 1])
    adv = torch.zeros(3, dtype=torch.bool)
    idx = torch.arange(3)
    with pytest.raises(ValueError):
        contrastive_terms(z, y, adv, z, y, adv, idx, temperature=0.0)
    with pytest.raises(ValueError):
        contrastive_terms(z, y, adv, z, y, adv, idx, denominator="simclr")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AFALoss(anchors="clean")  # type: ignore[arg-type]


def test_loss_decreases_when_features_align():
    """Sanity: aligned features (per-class one-hot) give a much lower loss than chance."""
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    views = Views.stack(y, 1, 1)
    z = F.one_hot(views.labels, 3).float()
    out = afa_loss(z, views.labels, views.is_adv, temperature=0.1)
    assert out.loss < 0.01 * out.chance
    assert math.isclose(out.chance.item(), math.log(1 + 8), rel_tol=1e-6)
