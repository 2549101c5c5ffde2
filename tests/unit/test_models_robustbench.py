"""RobustBench checkpoints into afa's models: layouts, key mapping, prefixes, errors, download.

The state dicts here are built in RobustBench's own layout (their parameter names and
shapes, written out below from their architectures, small widths and depths), and every
logits test compares against a plain-``torch.nn.functional`` re-implementation of their
forward pass that reads those state dicts directly. So a wrong name mapping, a symmetric
instead of TF-style padding, a 1x1 instead of 3x3 shortcut or a shortcut on the wrong
tensor each changes the logits and fails a test.
"""

from __future__ import annotations

import argparse
import io
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from afa.errors import CheckpointError, ConfigError
from afa.models import Classifier, create_model
from afa.models import robustbench as rb
from afa.models.robustbench import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    PUBLISHED,
    PublishedModel,
    convert_state_dict,
    download_robustbench,
    gdrive_url,
    load_robustbench,
    parse_spec,
    strip_prefixes,
)

RAW = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

# ------------------------------------------------------------------ their layouts, by name


def _bn(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(prefix + p, (c,)) for p in ("weight", "bias", "running_mean", "running_var")] + [
        (prefix + "num_batches_tracked", ())
    ]


def dm_wrn_layout(depth: int, k: int, classes: int = 10) -> list[tuple[str, tuple[int, ...]]]:
    """RobustBench's DMWideResNet: init_conv, layer.<g>.block.<i>.*, batchnorm, logits."""
    n, w = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
    out = [("init_conv.weight", (16, 3, 3, 3))]
    for g in range(3):
        for i in range(n):
            cin, cout, p = w[g] if i == 0 else w[g + 1], w[g + 1], f"layer.{g}.block.{i}."
            out += _bn(p + "batchnorm_0.", cin) + [(p + "conv_0.weight", (cout, cin, 3, 3))]
            out += _bn(p + "batchnorm_1.", cout) + [(p + "conv_1.weight", (cout, cout, 3, 3))]
            if cin != cout:
                out.append((p + "shortcut.weight", (cout, cin, 1, 1)))
    return (
        out
        + _bn("batchnorm.", w[3])
        + [("logits.weight", (classes, w[3])), ("logits.bias", (classes,))]
    )


def dm_preact_layout(
    depth: int, width: int = 64, classes: int = 10
) -> list[tuple[str, tuple[int, ...]]]:
    """RobustBench's DMPreActResNet: conv_2d, layer_<s>.<i>.* (3x3 shortcut), batchnorm, logits."""
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]
    w = [width, width, 2 * width, 4 * width, 8 * width]
    out = [("conv_2d.weight", (width, 3, 3, 3))]
    for s, nb in enumerate(blocks):
        for i in range(nb):
            cin, cout, p = w[s] if i == 0 else w[s + 1], w[s + 1], f"layer_{s}.{i}."
            stride = 2 if s > 0 and i == 0 else 1
            out += _bn(p + "batchnorm_0.", cin) + [(p + "conv_2d_1.weight", (cout, cin, 3, 3))]
            out += _bn(p + "batchnorm_1.", cout) + [(p + "conv_2d_2.weight", (cout, cout, 3, 3))]
            if stride != 1 or cin != cout:
                out.append((p + "shortcut.weight", (cout, cin, 3, 3)))
    return (
        out
        + _bn("batchnorm.", w[4])
        + [("logits.weight", (classes, w[4])), ("logits.bias", (classes,))]
    )


def trades_layout(
    depth: int, k: int, *, sub_block1: bool = False, classes: int = 10
) -> list[tuple[str, tuple[int, ...]]]:
    """The TRADES code's WideResNet: conv1, block<g>.layer.<i>.* (convShortcut), bn1, fc."""
    n, w = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
    out = [("conv1.weight", (16, 3, 3, 3))]
    groups = [("block1", 0), ("block2", 1), ("block3", 2)] + (
        [("sub_block1", 0)] if sub_block1 else []
    )
    for name, g in groups:
        for i in range(n):
            cin, cout, p = w[g] if i == 0 else w[g + 1], w[g + 1], f"{name}.layer.{i}."
            out += _bn(p + "bn1.", cin) + [(p + "conv1.weight", (cout, cin, 3, 3))]
            out += _bn(p + "bn2.", cout) + [(p + "conv2.weight", (cout, cout, 3, 3))]
            if cin != cout:
                out.append((p + "convShortcut.weight", (cout, cin, 1, 1)))
    return out + _bn("bn1.", w[3]) + [("fc.weight", (classes, w[3])), ("fc.bias", (classes,))]


def materialise(layout, seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Random weights with BN statistics far from the identity (so BN matters)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in layout:
        if device == "meta":
            out[name] = torch.empty(shape, device="meta", dtype=torch.long if shape == () else None)
        elif name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            out[name] = 0.5 + torch.rand(shape, generator=g)
        elif name.endswith(("running_mean", "bias")):
            out[name] = 0.2 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # BN weight
            out[name] = 1 + 0.2 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            out[name] = torch.randn(shape, generator=g) * (2 / fan_in) ** 0.5
    return out


# ------------------------------------------------------------------ their forward, by hand


def _bnf(x, sd, p):
    return F.batch_norm(
        x,
        sd[p + "running_mean"],
        sd[p + "running_var"],
        sd[p + "weight"],
        sd[p + "bias"],
        training=False,
        eps=1e-5,
    )


def swish(x):
    return x * torch.sigmoid(x)


def _tf_pad(x, stride):
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


def _normalise(x, mean, std):
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def ref_dm_wrn(sd, x, depth, mean=CIFAR10_MEAN, std=CIFAR10_STD, act: Callable = swish):
    n = (depth - 4) // 6
    out = F.conv2d(_normalise(x, mean, std), sd["init_conv.weight"], padding=1)
    for g in range(3):
        for i in range(n):
            p, stride = f"layer.{g}.block.{i}.", 2 if g > 0 and i == 0 else 1
            a = act(_bnf(out, sd, p + "batchnorm_0."))
            h = F.conv2d(_tf_pad(a, stride), sd[p + "conv_0.weight"], stride=stride)
            h = F.conv2d(act(_bnf(h, sd, p + "batchnorm_1.")), sd[p + "conv_1.weight"], padding=1)
            if p + "shortcut.weight" in sd:
                out = h + F.conv2d(a, sd[p + "shortcut.weight"], stride=stride)
            else:
                out = h + out
    out = F.avg_pool2d(act(_bnf(out, sd, "batchnorm.")), 8).flatten(1)
    return F.linear(out, sd["logits.weight"], sd["logits.bias"])


def ref_dm_preact(sd, x, depth, mean=CIFAR10_MEAN, std=CIFAR10_STD, act: Callable = swish):
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]
    out = F.conv2d(_normalise(x, mean, std), sd["conv_2d.weight"], padding=1)
    for s, nb in enumerate(blocks):
        for i in range(nb):
            p, stride = f"layer_{s}.{i}.", 2 if s > 0 and i == 0 else 1
            a = act(_bnf(out, sd, p + "batchnorm_0."))
            if p + "shortcut.weight" in sd:  # a 3x3 convolution of the raw input
                short = F.conv2d(_tf_pad(out, stride), sd[p + "shortcut.weight"], stride=stride)
            else:
                short = out
            h = F.conv2d(_tf_pad(a, stride), sd[p + "conv_2d_1.weight"], stride=stride)
            h = F.conv2d(
                act(_bnf(h, sd, p + "batchnorm_1.")), sd[p + "conv_2d_2.weight"], padding=1
            )
            out = h + short
    out = F.avg_pool2d(act(_bnf(out, sd, "batchnorm.")), 4).flatten(1)
    return F.linear(out, sd["logits.weight"], sd["logits.bias"])


def ref_trades(sd, x, depth, mean=RAW[0], std=RAW[1]):
    n = (depth - 4) // 6
    out = F.conv2d(_normalise(x, mean, std), sd["conv1.weight"], padding=1)
    for g in (1, 2, 3):
        for i in range(n):
            p, stride = f"block{g}.layer.{i}.", 2 if g > 1 and i == 0 else 1
            a = F.relu(_bnf(out, sd, p + "bn1."))
            h = F.conv2d(a, sd[p + "conv1.weight"], stride=stride, padding=1)
            h = F.conv2d(F.relu(_bnf(h, sd, p + "bn2.")), sd[p + "conv2.weight"], padding=1)
            if p + "convShortcut.weight" in sd:  # not equalInOut: the activated input
                out = h + F.conv2d(a, sd[p + "convShortcut.weight"], stride=stride)
            else:
                out = h + out
    out = F.avg_pool2d(F.relu(_bnf(out, sd, "bn1.")), 8).flatten(1)
    return F.linear(out, sd["fc.weight"], sd["fc.bias"])


# ------------------------------------------------------------------ entries of test size


def dm_entry(depth: int, k: int) -> PublishedModel:
    return PublishedModel(
        "TinyDM",
        "dm-wrn",
        {"depth": depth, "widen_factor": k},
        "dm",
        "id",
        f"WideResNet-{depth}-{k}",
    )


def preact_entry(depth: int, width: int) -> PublishedModel:
    return PublishedModel(
        "TinyPreAct", "dm-preact-resnet", {"depth": depth, "width": width}, "dm", "id", "x"
    )


def trades_entry(depth: int, k: int, normalised: bool = False) -> PublishedModel:
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if normalised else RAW
    options = {"depth": depth, "widen_factor": k, "activation": "relu"}
    return PublishedModel("TinyTRADES", "wrn", options, "trades", "id", "x", mean, std)


X = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))

CASES = {
    # name: (entry, their state dict, their forward)
    "dm-wrn-16-1": (dm_entry(16, 1), dm_wrn_layout(16, 1), lambda sd, x: ref_dm_wrn(sd, x, 16)),
    "dm-wrn-10-2": (dm_entry(10, 2), dm_wrn_layout(10, 2), lambda sd, x: ref_dm_wrn(sd, x, 10)),
    "dm-preact-18": (
        preact_entry(18, 4),
        dm_preact_layout(18, 4),
        lambda sd, x: ref_dm_preact(sd, x, 18),
    ),
    "dm-preact-34": (
        preact_entry(34, 2),
        dm_preact_layout(34, 2),
        lambda sd, x: ref_dm_preact(sd, x, 34),
    ),
    "trades-16-1": (trades_entry(16, 1), trades_layout(16, 1), lambda sd, x: ref_trades(sd, x, 16)),
    "trades-10-2-sub_block1": (
        trades_entry(10, 2),
        trades_layout(10, 2, sub_block1=True),
        lambda sd, x: ref_trades(sd, x, 10),
    ),
    "trades-10-1-normalised": (
        trades_entry(10, 1, normalised=True),
        trades_layout(10, 1),
        lambda sd, x: ref_trades(sd, x, 10, CIFAR10_MEAN, CIFAR10_STD),
    ),
}


def _save(tmp_path, obj, name="ckpt.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_their_checkpoint_gives_their_logits(tmp_path, case):
    entry, layout, forward = CASES[case]
    sd = materialise(layout, seed=1)
    model = load_robustbench(_save(tmp_path, sd), entry)
    assert isinstance(model, Classifier) and not model.training
    with torch.no_grad():
        expected = forward(sd, X)
        logits = model(X)
        feats = model.features(X)
    assert expected.abs().max() > 0.1  # not a degenerate comparison
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    assert feats.shape == (3, model.num_features)
    torch.testing.assert_close(model.head(feats), logits)


def test_tf_padding_is_what_makes_the_dm_logits_agree(tmp_path, monkeypatch):
    """Symmetric padding on the stride-2 convolutions changes the logits: the equality
    above is evidence of the asymmetric padding, not of a lucky input."""
    entry, layout, forward = CASES["dm-wrn-10-2"]
    sd = materialise(layout, seed=1)
    from afa.models import dm_wide_resnet

    monkeypatch.setattr(dm_wide_resnet, "pad_same", lambda x, stride: F.pad(x, (1, 1, 1, 1)))
    model = load_robustbench(_save(tmp_path, sd), entry)
    with torch.no_grad():
        assert (model(X) - forward(sd, X)).abs().max() > 1e-3


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 7},
        lambda sd: {"model_state_dict": {"model." + k: v for k, v in sd.items()}},
        lambda sd: {"module.model." + k: v for k, v in sd.items()},
    ],
    ids=["bare", "state_dict+module", "model_state_dict+model", "module.model"],
)
def test_checkpoint_wrappers_and_prefixes(tmp_path, wrap):
    entry, layout, forward = CASES["dm-wrn-16-1"]
    sd = materialise(layout, seed=2)
    model = load_robustbench(_save(tmp_path, wrap(sd)), entry)
    with torch.no_grad():
        torch.testing.assert_close(model(X), forward(sd, X), rtol=1e-4, atol=1e-5)


def test_prefixes_are_stripped_only_at_the_start():
    one = torch.zeros(1)
    out = strip_prefixes(
        {
            "module.a": one,
            "model.b": one,
            "module.model.c": one,
            "encoder.model.weight": one,  # RobustBench would cut it to "er.model.weight"
            "xmodule.d": one,
            "layer.module.e": one,
        }
    )
    assert list(out) == ["a", "b", "c", "encoder.model.weight", "xmodule.d", "layer.module.e"]


def test_a_mid_key_model_is_kept_and_reported(tmp_path):
    entry, layout, _ = CASES["dm-wrn-16-1"]
    sd = materialise(layout) | {"init_conv.model.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): init_conv\.model\.weight"):
        load_robustbench(_save(tmp_path, sd), entry)


key = st.text(alphabet="abmodule._0", min_size=1, max_size=20)


@given(key)
def test_prefix_stripping_properties(k):
    stripped = strip_prefixes({k: torch.zeros(())})
    (s,) = stripped
    assert not s.startswith(("module.", "model."))
    assert k.endswith(s)
    for p in ("module.", "model."):
        assert list(strip_prefixes({p + k: torch.zeros(())})) == [s]
    if not k.startswith(("module.", "model.")):
        assert s == k


def test_two_keys_that_become_one_is_an_error():
    with pytest.raises(CheckpointError, match="'a'"):
        strip_prefixes({"module.a": torch.zeros(1), "a": torch.zeros(1)})


def test_trades_key_mapping_by_name():
    entry = trades_entry(16, 1)
    sd = convert_state_dict(materialise(trades_layout(16, 1, sub_block1=True)), entry)
    assert "blocks.0.bn1.weight" in sd and "blocks.1.conv2.weight" in sd
    assert "blocks.2.shortcut.weight" in sd and "blocks.4.shortcut.weight" in sd  # block2/3 .0
    assert "blocks.3.shortcut.weight" not in sd
    assert {"conv1.weight", "bn.running_var", "head.weight", "head.bias"} <= set(sd)
    old = ("sub_block1.", "block1.", "block2.", "block3.", "fc.", "bn1.")
    assert not any(k.startswith(old) for k in sd)


def test_missing_unexpected_and_shape_errors_name_the_keys(tmp_path):
    entry, layout, _ = CASES["dm-wrn-16-1"]
    sd = materialise(layout)
    del sd["logits.bias"]
    with pytest.raises(CheckpointError, match=r"missing \(1\): head\.bias"):
        load_robustbench(_save(tmp_path, sd), entry)
    sd = materialise(layout) | {"extra.weight": torch.zeros(2)}
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): extra\.weight"):
        load_robustbench(_save(tmp_path, sd), entry)
    wider = materialise(dm_wrn_layout(16, 2))
    with pytest.raises(CheckpointError, match=r"shape \(\d+\): layer\.0\.block\.0\.conv_0\.weight"):
        load_robustbench(_save(tmp_path, wider), entry)
    # A TRADES checkpoint for a DM entry: every key is wrong; a few are listed, with the count.
    with pytest.raises(CheckpointError, match=r"missing \(\d+\): .* and \d+ more"):
        load_robustbench(_save(tmp_path, materialise(trades_layout(16, 1))), entry)


def test_missing_batch_norm_counters_are_tolerated(tmp_path):
    """Checkpoints of PyTorch < 0.4.1 have no num_batches_tracked (unused in eval)."""
    entry, layout, forward = CASES["trades-16-1"]
    sd = {k: v for k, v in materialise(layout).items() if "num_batches_tracked" not in k}
    model = load_robustbench(_save(tmp_path, sd), entry)
    with torch.no_grad():
        torch.testing.assert_close(model(X), forward(sd, X), rtol=1e-4, atol=1e-5)


def test_stored_normalisation_is_checked_and_dropped(tmp_path):
    entry, layout, forward = CASES["trades-10-1-normalised"]
    sd = materialise(layout)
    mu = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    sigma = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    model = load_robustbench(_save(tmp_path, sd | {"mu": mu, "sigma": sigma}), entry)
    with torch.no_grad():
        torch.testing.assert_close(model(X), forward(sd, X), rtol=1e-4, atol=1e-5)
    assert "normalize.mean" not in model.state_dict()  # non-persistent: set by the loader
    with pytest.raises(CheckpointError, match="'sigma'"):
        load_robustbench(_save(tmp_path, sd | {"mu": mu, "sigma": sigma * 2}), entry)


def test_unreadable_checkpoints(tmp_path):
    entry = CASES["dm-wrn-16-1"][0]
    with pytest.raises(CheckpointError, match="not found"):
        load_robustbench(tmp_path / "absent.pt", entry)
    unsafe = _save(tmp_path, {"state_dict": {}, "args": argparse.Namespace(lr=0.1)})
    with pytest.raises(CheckpointError, match=r"weights_only=True"):
        load_robustbench(unsafe, entry)
    junk = _save(tmp_path, {"conv.weight": torch.zeros(1), "epoch": 3})
    with pytest.raises(CheckpointError, match=r"not tensors: \['epoch'\]"):
        load_robustbench(junk, entry)
    with pytest.raises(CheckpointError, match="no state dict"):
        load_robustbench(_save(tmp_path, [torch.zeros(1)]), entry)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="text.pt"):
        load_robustbench(tmp_path / "text.pt", entry)


def test_unknown_model_id_names_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'Carmon2019Unlabeled'"):
        load_robustbench("x.pt", "Carmon2019Unlabelled")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_published_entry_maps_exactly_onto_its_model(name):
    """Full-size zoo entries on the meta device (no memory): their layout, renamed, is
    exactly the afa model's state dict, name for name and shape for shape."""
    entry = PUBLISHED[name]
    o = entry.options
    if entry.model == "dm-wrn":
        layout = dm_wrn_layout(o["depth"], o["widen_factor"])
        assert entry.architecture == f"WideResNet-{o['depth']}-{o['widen_factor']}"
    elif entry.model == "dm-preact-resnet":
        layout = dm_preact_layout(o["depth"])
        assert entry.architecture == f"PreActResNet-{o['depth']}"
    else:
        sub = name in {
            "Carmon2019Unlabeled",
            "Sehwag2020Hydra",
            "Wang2020Improving",
            "Zhang2019Theoretically",
        }
        layout = trades_layout(o["depth"], o["widen_factor"], sub_block1=sub)
    mapped = convert_state_dict(materialise(layout, device="meta"), entry)
    with torch.device("meta"):
        model = create_model(entry.model, 10, mean=entry.mean, std=entry.std, **o)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }
    normalised = entry.mean == CIFAR10_MEAN and entry.std == CIFAR10_STD
    assert normalised == (entry.layout == "dm" or name == "Rice2020Overfitting")


def test_published_parameter_counts():
    def count(name):
        e = PUBLISHED[name]
        with torch.device("meta"):
            m = create_model(e.model, 10, mean=e.mean, std=e.std, **e.options)
        return sum(p.numel() for p in m.parameters())

    # WRN-28-10 has 36.5M parameters in either layout; the DM PreAct-18's three 3x3
    # shortcuts add 9 * (64*128 + 128*256 + 256*512) - that many 1x1 ones to ResNet-18's 11.17M.
    assert (
        count("Rebuffi2021Fixing_28_10_cutmix_ddpm") == 36_479_194 == count("Carmon2019Unlabeled")
    )
    assert count("Rebuffi2021Fixing_R18_ddpm") == 11_172_170 + 8 * (
        64 * 128 + 128 * 256 + 256 * 512
    )
    assert count("Zhang2019Theoretically") == 46_160_474


# ------------------------------------------------------------------ specs and download


def test_parse_spec():
    assert parse_spec("robustbench:Carmon2019Unlabeled") == ("Carmon2019Unlabeled", None)
    name, path = parse_spec("robustbench:Carmon2019Unlabeled@/tmp/a@b.pt")
    assert name == "Carmon2019Unlabeled" and str(path) == "/tmp/a@b.pt"
    for bad in ("Carmon2019Unlabeled", "robustbench:", "robustbench:X@", "rb:X"):
        with pytest.raises(ConfigError, match="robustbench:NAME"):
            parse_spec(bad)


def test_gdrive_url_scheme():
    url = gdrive_url("1-0EChXbc6pOvx26O17av263bCeqIAz6s")
    assert url == (
        "https://docs.google.com/uc?export=download&confirm=t&id=1-0EChXbc6pOvx26O17av263bCeqIAz6s"
    )


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    name = "Rebuffi2021Fixing_28_10_cutmix_ddpm"
    with pytest.raises(CheckpointError) as err:
        download_robustbench(name, tmp_path)
    msg = str(err.value)
    assert PUBLISHED[name].gdrive_id in msg and "no network" in msg
    assert str(tmp_path / "cifar10" / "Linf" / f"{name}.pt") in msg
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_download_refuses_a_web_page_and_writes_a_checkpoint(tmp_path, monkeypatch):
    name = "Carmon2019Unlabeled"
    seen = []

    def page(request, timeout):
        seen.append(request.full_url)
        return _Response(b"  <!DOCTYPE html><html>quota exceeded</html>")

    monkeypatch.setattr(urllib.request, "urlopen", page)
    with pytest.raises(CheckpointError, match="web page"):
        download_robustbench(name, tmp_path)
    assert seen == [gdrive_url(PUBLISHED[name].gdrive_id)]
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # no torn file, no temporary

    buf = io.BytesIO()
    torch.save({"fc.bias": torch.arange(3.0)}, buf)
    monkeypatch.setattr(urllib.request, "urlopen", lambda r, timeout: _Response(buf.getvalue()))
    path = download_robustbench(name, tmp_path)
    assert path == tmp_path / "cifar10" / "Linf" / f"{name}.pt"
    assert torch.equal(rb.read_checkpoint(path)["fc.bias"], torch.arange(3.0))

    # Present: no network needed.
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    assert download_robustbench(name, tmp_path) == path
