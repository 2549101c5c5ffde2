"""Dual batch norm on every registered model: branch routing, running statistics of only the
branch used, restoring on exceptions, state dict round trips, SyncBN conversion."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from test_models import MEAN3, SMALL, STD3
from torch import nn

from afa.errors import ConfigError
from afa.models import MODELS, Classifier, create_model
from afa.models.base import Normalize
from afa.models.dual_bn import (
    DualBatchNorm,
    bn_branch,
    collapse_dual_bn,
    convert_dual_bn,
    dual_bn_layers,
    set_bn_branch,
)
from afa.models.registry import register_model


def _small(key: str, dual_bn: bool = True) -> tuple[Classifier, torch.Tensor]:
    name, options, channels, size = SMALL[key]
    torch.manual_seed(0)
    model = create_model(
        name,
        10,
        in_channels=channels,
        image_size=size,
        mean=MEAN3[:channels],
        std=STD3[:channels],
        dual_bn=dual_bn,
        **options,
    )
    x = torch.rand(4, channels, size, size, generator=torch.Generator().manual_seed(1))
    return model, x


def _bn_params(model: nn.Module, branch: str) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if f".{branch}." in f".{n}"}


@pytest.mark.parametrize("key", sorted(SMALL))
@pytest.mark.parametrize("branch", ["clean", "adv"])
def test_every_model_trains_on_either_branch_alone(key, branch):
    model, x = _small(key)
    single, _ = _small(key, dual_bn=False)
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in single.modules())
    assert model.dual_bn and not single.dual_bn and len(dual_bn_layers(model)) == n_bn > 0
    other = "adv" if branch == "clean" else "clean"
    model.train()
    with model.bn_branch(branch):
        logits = model(x)
    F.cross_entropy(logits, torch.arange(4) % 10).backward()
    assert torch.isfinite(logits).all()
    used, unused = _bn_params(model, branch), _bn_params(model, other)
    assert used and len(used) == len(unused)
    for name, p in model.named_parameters():
        if name in unused:
            assert p.grad is None, f"{name} (branch {other}) got a gradient"
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("key", ["cnn-cifar", "preact_resnet18-w8"])
def test_a_branch_updates_only_its_own_running_statistics(key):
    model, x = _small(key)
    model.train()
    before = copy.deepcopy(model.state_dict())
    with model.bn_branch("adv"):
        model(x)
    after = copy.deepcopy(model.state_dict())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    stats = {
        k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }
    assert changed == {k for k in stats if ".adv." in k}
    model(x)  # outside any block: the default clean branch
    changed = {k for k in after if not torch.equal(after[k], model.state_dict()[k])}
    assert changed == {k for k in stats if ".clean." in k}


def test_branches_differ_and_clean_equals_the_single_bn_model():
    model, x = _small("resnet18-w8")
    model.train()
    with model.bn_branch("adv"):
        model(x * 0.5)  # the adv branch sees other statistics
    model.eval()
    clean_out = model(x)
    with model.bn_branch("adv"):
        adv_out = model(x)
    assert not torch.allclose(clean_out, adv_out)
    for branch, out in (("clean", clean_out), ("adv", adv_out)):
        single = collapse_dual_bn(copy.deepcopy(model), branch)
        assert not single.dual_bn
        torch.testing.assert_close(single(x), out)


def test_exceptions_and_nesting_restore_the_branch():
    model, x = _small("cnn-digits")
    layers = dual_bn_layers(model)
    with pytest.raises(RuntimeError, match="boom"), model.bn_branch("adv"):
        assert all(m.branch == "adv" for m in layers)
        raise RuntimeError("boom")
    assert all(m.branch == "clean" for m in layers)
    with model.bn_branch("adv"):
        with model.bn_branch("clean"):
            assert all(m.branch == "clean" for m in layers)
        assert all(m.branch == "adv" for m in layers)
    assert all(m.branch == "clean" for m in layers)
    set_bn_branch(model, "adv")
    with model.bn_branch("clean"):
        pass
    assert all(m.branch == "adv" for m in layers)
    with pytest.raises(ValueError, match="'clean' or 'adv'"), model.bn_branch("pgd"):
        pass


def test_single_bn_model_ignores_the_branch():
    model, x = _small("cnn-digits", dual_bn=False)
    model.eval()
    with model.bn_branch("adv"):
        torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize("key", sorted(SMALL))
def test_state_dict_round_trip(key):
    model, x = _small(key)
    model.train()
    with model.bn_branch("adv"):
        model(x * 0.3)
    model(x)
    state = model.state_dict()
    assert any(".adv.running_mean" in k for k in state)
    assert any(".clean.running_mean" in k for k in state)
    torch.manual_seed(123)
    fresh, _ = _small(key)
    fresh.load_state_dict(state)
    model.eval(), fresh.eval()
    for branch in ("clean", "adv"):
        with model.bn_branch(branch), fresh.bn_branch(branch):
            torch.testing.assert_close(fresh(x), model(x), atol=0, rtol=0)
    single, _ = _small(key, dual_bn=False)
    with pytest.raises(RuntimeError, match="clean"):
        single.load_state_dict(state)


def test_convert_is_idempotent_and_handles_a_bare_bn():
    model, _ = _small("cnn-cifar")
    n = len(dual_bn_layers(model))
    convert_dual_bn(model)
    assert len(dual_bn_layers(model)) == n
    assert isinstance(convert_dual_bn(nn.BatchNorm1d(3)), DualBatchNorm)
    head = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    convert_dual_bn(head)
    with bn_branch(head, "adv"):
        head.train()(torch.randn(5, 4))
    assert head[1].clean.num_batches_tracked == 0 and head[1].adv.num_batches_tracked == 1


def test_sync_batchnorm_conversion_keeps_both_branches():
    model, _ = _small("cnn-cifar")
    keys = set(model.state_dict())
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    layers = dual_bn_layers(synced)
    assert layers and all(
        isinstance(m.clean, nn.SyncBatchNorm) and isinstance(m.adv, nn.SyncBatchNorm)
        for m in layers
    )
    assert set(synced.state_dict()) == keys


def test_dual_bn_needs_a_batch_norm_layer():
    class NoBN(Classifier):
        def __init__(self):
            super().__init__()
            self.normalize = Normalize([0.5], [0.5])
            self.body = nn.Flatten()
            self.num_features, self.num_classes = 4, 2
            self.head = nn.Linear(4, 2)

        def encode(self, x):
            return self.body(x)

    @register_model("_test-no-bn")
    def _no_bn(num_classes, *, in_channels, image_size, mean, std):
        return NoBN()

    try:
        with pytest.raises(ConfigError, match="no batch norm"):
            create_model(
                "_test-no-bn", 2, in_channels=1, image_size=2, mean=[0.5], std=[0.5], dual_bn=True
            )
    finally:
        MODELS.unregister("_test-no-bn")
