"""The view layout and the masks the loss options change."""

from __future__ import annotations

import pytest
import torch

from afa.losses import Views, pair_masks


def test_stack_layout_is_view_major():
    y = torch.tensor([3, 1, 3])
    v = Views.stack(y, clean_views=2, adv_views=1)
    assert v.labels.tolist() == [3, 1, 3] * 3
    assert v.sample.tolist() == [0, 1, 2] * 3
    assert v.is_adv.tolist() == [False] * 6 + [True] * 3
    assert len(v) == 9
    assert v.anchor_mask("adversarial").tolist() == [False] * 6 + [True] * 3
    assert v.anchor_mask("clean").tolist() == [True] * 6 + [False] * 3
    assert v.anchor_mask("all").all()
    with pytest.raises(ValueError):
        v.anchor_mask("none")  # type: ignore[arg-type]


def test_views_validate_shapes():
    with pytest.raises(ValueError):
        Views(
            torch.zeros(3, dtype=torch.long),
            torch.zeros(2, dtype=torch.long),
            torch.zeros(3, dtype=torch.bool),
        )
    with pytest.raises(ValueError):
        Views(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), torch.zeros(3))
    with pytest.raises(ValueError):
        Views.stack(torch.zeros(2, dtype=torch.long), -1, 1)


@pytest.mark.parametrize("cross", [True, False])
def test_pair_masks(cross):
    v = Views.stack(torch.tensor([0, 0, 1]), 1, 1)  # rows: c0 c0' c1 a0 a0' a1
    pos, neg = pair_masks(
        v.labels, v.is_adv, v.labels, v.is_adv, torch.arange(6), cross_view_positives=cross
    )
    assert not pos.diagonal().any() and not neg.diagonal().any()
    assert not (pos & neg).any()
    # row 3 (adversarial view of sample 0)
    if cross:
        assert pos[3].tolist() == [True, True, False, False, True, False]
    else:
        assert pos[3].tolist() == [False, False, False, False, True, False]
    assert neg[3].tolist() == [False, False, True, False, False, True]


def test_pair_masks_without_self():
    y = torch.tensor([0, 1])
    adv = torch.tensor([True, True])
    pos, _ = pair_masks(y, adv, y, adv, torch.tensor([-1, -1]))
    assert pos.diagonal().all()  # a reference row that is not the anchor counts as positive
