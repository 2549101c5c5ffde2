"""Checkpoints: atomic writes, weights-only loads, clear errors, RNG state round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

import afa.training.checkpoint as ckpt_module
from afa.errors import CheckpointError
from afa.runs import EMAConfig
from afa.training import (
    FORMAT,
    PAYLOAD_KEYS,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from afa.training.checkpoint import load_method_extra_state, method_extra_state


def _payload(value: float = 1.0) -> dict:
    payload = {k: None for k in PAYLOAD_KEYS}
    payload.update(
        format=FORMAT,
        model={"w": torch.full((3,), value)},
        stage={"index": 0, "name": "train"},
        epoch=1,
        rng=[rng_state()],
        config={"model": {"name": "tiny"}, "threat": {"eps": 8 / 255}},
        metrics={"train/loss": 0.5},
    )
    return payload


def test_round_trip_is_weights_only(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload(2.0), copies=[tmp_path / "best.pt"])
    for p in (path, tmp_path / "best.pt"):
        raw = torch.load(p, weights_only=True)  # plain torch, the strict unpickler
        assert torch.equal(raw["model"]["w"], torch.full((3,), 2.0))
        assert load_checkpoint(p)["config"]["threat"]["eps"] == 8 / 255
    assert sorted(x.name for x in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temp files


def test_a_failing_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload(1.0))
    before = path.read_bytes()
    real_save = torch.save

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # start writing, then die mid-way
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _payload(9.0), copies=[tmp_path / "best.pt"])
    monkeypatch.setattr(ckpt_module.torch, "save", real_save)
    assert path.read_bytes() == before
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [x.name for x in tmp_path.iterdir()] == ["last.pt"]  # no temp file, no best.pt


def test_missing_corrupt_and_foreign_files_raise_checkpoint_errors(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=f"{missing}: checkpoint not found"):
        load_checkpoint(missing)

    good = tmp_path / "good.pt"
    save_checkpoint(good, _payload())
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # truncated
    with pytest.raises(CheckpointError, match=f"{corrupt}: not a readable checkpoint"):
        load_checkpoint(corrupt)

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": FORMAT, "model": nn.Linear(2, 2)}, unsafe)  # a pickled module
    with pytest.raises(CheckpointError, match=f"{unsafe}: not a readable checkpoint"):
        load_checkpoint(unsafe)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match=f"{foreign}: not an afa checkpoint"):
        load_checkpoint(foreign)

    incomplete = tmp_path / "incomplete.pt"
    payload = _payload()
    del payload["optimizer"]
    torch.save(payload, incomplete)
    with pytest.raises(CheckpointError, match="missing key 'optimizer'"):
        load_checkpoint(incomplete)


def test_rng_state_round_trip_replays_every_generator(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leave a cached gaussian in numpy's state
    state = rng_state()
    path = tmp_path / "rng.pt"
    torch.save(state, path)
    expected = (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(torch.load(path, weights_only=True))
    replay = (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3))
    assert replay[:3] == expected[:3] and torch.equal(replay[3], expected[3])


class _WithHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Linear(2, 2)
        self.projection = nn.Linear(2, 4)


def test_method_extra_state_excludes_the_classifier():
    a, b = _WithHead(), _WithHead()
    extra = method_extra_state(a)
    assert set(extra) == {"projection.weight", "projection.bias"}
    model_before = b.model.weight.clone()
    load_method_extra_state(b, extra)
    assert torch.equal(b.projection.weight, a.projection.weight)
    assert torch.equal(b.model.weight, model_before)  # the classifier is loaded elsewhere
    with pytest.raises(CheckpointError, match="missing"):
        load_method_extra_state(b, {})


def test_one_rule_says_which_weights_are_evaluated():
    # eval_state_dict (used by tests only) gave way to the rule the loop, afa eval and
    # afa analyze share: the EMA's weights when it is on and used for evaluation, unless
    # the caller chooses explicitly
    on, unused, off = EMAConfig(decay=0.9), EMAConfig(decay=0.9, use_for_eval=False), EMAConfig()
    assert on.evaluated() and not unused.evaluated() and not off.evaluated()
    assert not on.evaluated(False) and unused.evaluated(True)
    assert not off.evaluated(True)  # no EMA weights exist
