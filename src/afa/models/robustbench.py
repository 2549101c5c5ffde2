"""Published robust CIFAR-10 (Linf) models of the RobustBench model zoo, loaded into afa's models.

RobustBench (Croce et al., "RobustBench: a standardized adversarial robustness benchmark",
NeurIPS 2021 Datasets and Benchmarks) distributes each model as a checkpoint on Google
Drive plus the PyTorch class that reads it. ``afa`` reads the same checkpoints, without
robustbench or its dependencies installed, into two families of its own architectures:

* ``layout="dm"``: DeepMind's WideResNet / PreAct ResNet (Gowal et al. 2020/2021, Rebuffi
  et al. 2021, Wang et al. 2023) -> :mod:`afa.models.dm_wide_resnet` (``dm-wrn``,
  ``dm-preact-resnet``); their parameter names are kept, ``logits.*`` becomes ``head.*``.
* ``layout="trades"``: the WideResNet of the TRADES code (Zhang et al. 2019; also
  Carmon et al. 2019, Rice et al. 2020, Wang et al. 2020) -> afa's ``wrn``, which is the
  same network (pre-activation blocks, 1x1 projections of the activated input, symmetric
  padding, ReLU) under other names: ``block<g>.layer.<i>.*`` -> ``blocks.<k>.*``,
  ``convShortcut`` -> ``shortcut``, ``bn1`` -> ``bn``, ``fc`` -> ``head``. Their
  ``sub_block1`` (built by the TRADES code, never used by its forward) is dropped.

The normalisation is part of the model entry, not of the checkpoint: DeepMind's networks and
Rice et al. normalise with CIFAR-10's mean and std inside the model, the TRADES-code networks
take raw [0, 1] inputs (mean 0, std 1).

Checkpoints are read with ``torch.load(weights_only=True)`` (no code runs on load); a
checkpoint is a bare state dict or a dict holding one under ``state_dict`` or
``model_state_dict``. The ``module.`` (DataParallel) and ``model.`` (a wrapper module)
prefixes are stripped at the *start* of a key only: RobustBench's ``rm_substr_from_state_dict``
cuts ``len(prefix)`` characters from every key that contains the prefix *anywhere*, which
would mangle a key such as ``encoder.model.weight``.
"""

from __future__ import annotations

import difflib
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from afa._io import atomic_open
from afa.errors import CheckpointError, ConfigError
from afa.models.base import Classifier
from afa.models.registry import create_model

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "PUBLISHED",
    "PublishedModel",
    "convert_state_dict",
    "download_robustbench",
    "gdrive_url",
    "load_published",
    "load_robustbench",
    "load_state_dict_strict",
    "parse_spec",
    "published_model",
    "read_checkpoint",
    "strip_prefixes",
]

#: CIFAR-10 training-set statistics, as RobustBench's DeepMind models normalise with.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
_RAW = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

#: Prefixes stripped at the start of a checkpoint key (DataParallel, wrapper modules).
PREFIXES = ("module.", "model.")


@dataclass(frozen=True)
class PublishedModel:
    """One RobustBench model: which afa architecture reads it, and how.

    Attributes:
        name: the RobustBench model ID (``Rebuffi2021Fixing_28_10_cutmix_ddpm``).
        model: the afa registry name (``dm-wrn``, ``dm-preact-resnet``, ``wrn``).
        options: that model's options (depth, widen factor, activation).
        layout: ``"dm"`` or ``"trades"`` (the key mapping, module docstring).
        gdrive_id: the Google Drive file id of RobustBench's model zoo.
        architecture: RobustBench's ``architecture`` label.
        mean, std: the normalisation inside the model (inputs stay in [0, 1]).
        dataset, threat: RobustBench's leaderboard (``cifar10``, ``Linf``).
        num_classes: number of logits.
    """

    name: str
    model: str
    options: Mapping[str, Any]
    layout: Literal["dm", "trades"]
    gdrive_id: str
    architecture: str
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD
    dataset: str = "cifar10"
    threat: str = "Linf"
    num_classes: int = field(default=10)


def _dm(name: str, gdrive_id: str, depth: int, width: int) -> PublishedModel:
    # RobustBench's "Swish" (x * sigmoid(x)) is SiLU; Wang et al. 2023 name it nn.SiLU.
    if width == 0:
        return PublishedModel(
            name, "dm-preact-resnet", {"depth": depth}, "dm", gdrive_id, f"PreActResNet-{depth}"
        )
    return PublishedModel(
        name,
        "dm-wrn",
        {"depth": depth, "widen_factor": width},
        "dm",
        gdrive_id,
        f"WideResNet-{depth}-{width}",
    )


def _trades(
    name: str, gdrive_id: str, depth: int, width: int, *, normalised: bool = False
) -> PublishedModel:
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if normalised else _RAW
    return PublishedModel(
        name,
        "wrn",
        {"depth": depth, "widen_factor": width, "activation": "relu"},
        "trades",
        gdrive_id,
        f"WideResNet-{depth}-{width}",
        mean,
        std,
    )


# Architectures and Drive ids as RobustBench's robustbench/model_zoo/cifar10.py lists them
# (the Linf leaderboard).
PUBLISHED: dict[str, PublishedModel] = {
    m.name: m
    for m in (
        _trades("Standard", "1t98aEuzeTL8P7Kpd5DIrCoCL21BNZUhC", 28, 10),
        _trades("Carmon2019Unlabeled", "15tUx-gkZMYx7BfEOw1GY5OKC-jECIsPQ", 28, 10),
        _trades("Sehwag2020Hydra", "1pi8GHwAVkxVH41hEnf0IAJb_7y-Q8a2Y", 28, 10),
        _trades("Wang2020Improving", "1T939mU4kXYt5bbvM55aT4fLBvRhyzjiQ", 28, 10),
        _trades("Zhang2019Theoretically", "1hPz9QQwyM7QSuWu-ANG_uXR-29xtL8t_", 34, 10),
        _trades("Jia2022LAS-AT_34_10", "1-3l7xKhIPyes3O4QSz0HU6L-hfOoS0xD", 34, 10),
        _trades(
            "Rice2020Overfitting", "1vC_Twazji7lBjeMQvAD9uEQxi9Nx2oG-", 34, 20, normalised=True
        ),
        _dm("Gowal2020Uncovering_28_10_extra", "1MBAWGxiZxKt-GfqEqtLcXcd3tAxPhvV2", 28, 10),
        _dm("Gowal2020Uncovering_34_20", "1YWvZO1u9_yNLFNC3JYd_TVkvrRSMER1O", 34, 20),
        _dm("Gowal2020Uncovering_70_16", "1DVwKclibqzniE2Ss5_g6BY77ChG8QKzl", 70, 16),
        _dm("Gowal2020Uncovering_70_16_extra", "1GxryYj_Or-VCDca0wgiFLz4ssXSZXQoJ", 70, 16),
        _dm("Gowal2021Improving_R18_ddpm_100m", "1-0EuCJashqSXEkkd1DOzFA4tH8KL2kim", 18, 0),
        _dm("Gowal2021Improving_28_10_ddpm_100m", "12L8YE6VBgUDKyW6GMSNefSYj2gg4LEKx", 28, 10),
        _dm("Gowal2021Improving_70_16_ddpm_100m", "10qBoDG_NomJBrRFeTsSwEcJF1GA-sjC4", 70, 16),
        _dm("Rebuffi2021Fixing_R18_ddpm", "1--dxE66AsgBSUsuK2sXCTrsYUV9B5f95", 18, 0),
        _dm("Rebuffi2021Fixing_28_10_cutmix_ddpm", "1-0EChXbc6pOvx26O17av263bCeqIAz6s", 28, 10),
        _dm("Rebuffi2021Fixing_70_16_cutmix_ddpm", "1-8CWRT-OFWyrz4T4s0I2mbFjPg8K_MUi", 70, 16),
        _dm("Rebuffi2021Fixing_70_16_cutmix_extra", "1qKDTp6IJ1BUXZaRtbYuo_t0tuDl_4mLg", 70, 16),
        _dm("Rebuffi2021Fixing_106_16_cutmix_ddpm", "1-4qnkveIkeWoGdF72kpEFHETiY3y4_tF", 106, 16),
        _dm("Wang2023Better_WRN-28-10", "1-6MYKJdECDVGaWjj6GgqvaT95BGKhUvI", 28, 10),
        _dm("Wang2023Better_WRN-70-16", "1-RF7ZSS-PAh6bfQcuqx4lh9bc9BUGnap", 70, 16),
    )
}


def published_model(name: str) -> PublishedModel:
    """The entry of a RobustBench model ID.

    Raises:
        ConfigError: an ID not in :data:`PUBLISHED`, with the closest one.
    """
    if name in PUBLISHED:
        return PUBLISHED[name]
    close = difflib.get_close_matches(name, list(PUBLISHED), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"unknown RobustBench model {name!r}{hint}; afa reads these CIFAR-10 Linf models: "
        f"{', '.join(sorted(PUBLISHED))}"
    )


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """``robustbench:NAME@PATH`` -> ``(NAME, PATH)``; ``robustbench:NAME`` -> ``(NAME, None)``.

    Raises:
        ConfigError: the spec does not start with ``robustbench:`` or names no model.
    """
    head, sep, rest = spec.partition(":")
    if head != "robustbench" or not sep:
        raise ConfigError(f"{spec!r}: expected robustbench:NAME or robustbench:NAME@CHECKPOINT")
    name, at, path = rest.partition("@")
    if not name or (at and not path):
        raise ConfigError(f"{spec!r}: expected robustbench:NAME or robustbench:NAME@CHECKPOINT")
    return name, Path(path).expanduser() if at else None


def strip_prefixes(
    state: Mapping[str, Tensor], prefixes: Sequence[str] = PREFIXES
) -> dict[str, Tensor]:
    """Remove wrapper prefixes (``module.``, ``model.``) from the start of every key.

    Repeated wrappers (``module.model.conv.weight``) are all removed; a prefix elsewhere in a
    key (``encoder.model.weight``) is part of the name and kept.

    Raises:
        CheckpointError: two keys become the same name.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = key
        while any(new.startswith(p) for p in prefixes):
            new = new[len(next(p for p in prefixes if new.startswith(p))) :]
        if new in out:
            raise CheckpointError(f"checkpoint keys {key!r} and another both become {new!r}")
        out[new] = value
    return out


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict of a RobustBench checkpoint file, prefixes stripped.

    Raises:
        CheckpointError: a missing file, one ``weights_only`` loading refuses, or no state
            dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have no common base class
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not loadable with torch.load(weights_only=True) ({first}); if you trust "
            "the file, re-save its state dict alone: torch.save(torch.load(f)['state_dict'], g)"
        ) from None
    state: Any = obj
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                state = obj[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(
            f"{path}: no state dict (expected a dict of tensors, or one under 'state_dict' or "
            f"'model_state_dict'; got {type(obj).__name__}"
            + (f" with keys {sorted(map(str, obj))[:5]}" if isinstance(obj, Mapping) else "")
            + ")"
        )
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if len(tensors) != len(state):
        odd = sorted(str(k) for k in state if k not in tensors)[:5]
        raise CheckpointError(f"{path}: state dict entries that are not tensors: {odd}")
    return strip_prefixes(tensors)


_TRADES_BLOCK = re.compile(r"^block([123])\.layer\.(\d+)\.(bn1|conv1|bn2|conv2|convShortcut)\.")
_TRADES_TOP = {"conv1.": "conv1.", "bn1.": "bn.", "fc.": "head."}
_DM_TOP = {"logits.": "head."}


def convert_state_dict(
    state: Mapping[str, Tensor], entry: PublishedModel, *, where: str = "checkpoint"
) -> dict[str, Tensor]:
    """Rename a RobustBench state dict (prefixes already stripped) into afa's names.

    Normalisation statistics stored in the checkpoint (``mu``/``sigma``, ``mean``/``std``)
    are checked against the entry's and dropped: in afa they belong to the architecture.
    Unknown keys pass through unchanged, so :func:`load_state_dict_strict` reports them.

    Raises:
        CheckpointError: stored statistics that differ from the entry's.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in ("mu", "sigma", "mean", "std"):
            expected = torch.tensor(entry.mean if key in ("mu", "mean") else entry.std)
            if value.numel() != expected.numel() or not torch.allclose(
                value.float().flatten(), expected, atol=1e-4
            ):
                raise CheckpointError(
                    f"{where}: stored {key!r} = {value.flatten().tolist()} differs from "
                    f"{entry.name}'s {expected.tolist()}"
                )
            continue
        new = key
        if entry.layout == "trades":
            if key.startswith("sub_block1."):
                continue  # built by the TRADES code but never used in its forward pass
            n = (int(entry.options["depth"]) - 4) // 6
            m = _TRADES_BLOCK.match(key)
            if m:
                group, index, part = int(m[1]), int(m[2]), m[3]
                part = "shortcut" if part == "convShortcut" else part
                new = f"blocks.{(group - 1) * n + index}.{part}.{key[m.end() :]}"
            else:
                new = _rename_top(key, _TRADES_TOP)
        else:
            new = _rename_top(key, _DM_TOP)
        out[new] = value
    return out


def _rename_top(key: str, table: Mapping[str, str]) -> str:
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def load_state_dict_strict(
    model: torch.nn.Module, state: Mapping[str, Tensor], *, where: str = "checkpoint"
) -> None:
    """``model.load_state_dict(state)`` with an error that names what does not fit.

    BatchNorm's ``num_batches_tracked`` counters (absent from checkpoints of PyTorch < 0.4.1,
    unused in eval mode) are taken from the model when missing.

    Raises:
        CheckpointError: missing or unexpected keys, or shapes that differ (a few of each,
            and how many).
    """
    own = model.state_dict()
    state = dict(state)
    for key in own:
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{what} ({len(keys)}): {', '.join(keys[:3])}{more}")
    if problems:
        raise CheckpointError(
            f"{where} does not fit {type(model).__name__}: " + "; ".join(problems)
        )
    model.load_state_dict(state)


def load_robustbench(
    path: str | Path, arch: str | PublishedModel, *, device: torch.device | str = "cpu"
) -> Classifier:
    """Read a RobustBench checkpoint file into the matching afa model.

    Args:
        path: the checkpoint (as RobustBench downloads it, ``<model_dir>/cifar10/Linf/NAME.pt``).
        arch: a RobustBench model ID of :data:`PUBLISHED`, or a :class:`PublishedModel` for
            a checkpoint in one of the two layouts that the zoo does not list.
        device: where the model goes.

    Returns:
        The model in eval mode, normalising internally (inputs in [0, 1]).

    Raises:
        ConfigError: an unknown model ID.
        CheckpointError: an unreadable checkpoint or weights that do not fit (naming keys).

    Example:
        >>> model = load_robustbench("Rebuffi2021Fixing_28_10_cutmix_ddpm.pt",
        ...                          "Rebuffi2021Fixing_28_10_cutmix_ddpm")  # doctest: +SKIP
    """
    entry = arch if isinstance(arch, PublishedModel) else published_model(arch)
    state = convert_state_dict(read_checkpoint(path), entry, where=str(path))
    model = create_model(
        entry.model, entry.num_classes, mean=entry.mean, std=entry.std, **dict(entry.options)
    )
    load_state_dict_strict(model, state, where=f"{path} ({entry.name})")
    return model.to(device).eval()


def load_published(
    spec: str, *, model_dir: str | Path = "models", device: torch.device | str = "cpu"
) -> tuple[Classifier, PublishedModel, Path]:
    """The model a ``robustbench:NAME[@CHECKPOINT]`` spec names (what ``afa eval`` takes).

    Without ``@CHECKPOINT`` the file is ``<model_dir>/cifar10/Linf/NAME.pt``, downloaded
    when absent (:func:`download_robustbench`).

    Returns:
        (the model in eval mode, its entry, the checkpoint path).
    """
    name, path = parse_spec(spec)
    entry = published_model(name)
    if path is None:
        path = download_robustbench(name, model_dir)
    return load_robustbench(path, entry, device=device), entry, path


def gdrive_url(gdrive_id: str) -> str:
    """The download address of a Google Drive file, as RobustBench's ``download_gdrive``
    requests it (``confirm=t`` skips the large-file warning page)."""
    return f"https://docs.google.com/uc?export=download&confirm=t&id={gdrive_id}"


def download_robustbench(
    name: str, model_dir: str | Path = "models", *, timeout: float = 60
) -> Path:
    """The checkpoint of a RobustBench model, downloaded from Google Drive when not present.

    The file goes where RobustBench puts it, ``<model_dir>/cifar10/Linf/<name>.pt``, written
    atomically (a failed download leaves nothing behind).

    Raises:
        ConfigError: an unknown model ID.
        CheckpointError: no network, a refused download, or an HTML page instead of a
            checkpoint (Drive's quota or warning pages); the message says where to put a
            file downloaded by hand.
    """
    entry = published_model(name)
    target = Path(model_dir) / entry.dataset / entry.threat / f"{entry.name}.pt"
    if target.is_file():
        return target
    url = gdrive_url(entry.gdrive_id)
    by_hand = (
        f"download https://drive.google.com/file/d/{entry.gdrive_id} in a browser and put it "
        f"at {target} (or pass it as robustbench:{entry.name}@FILE)"
    )
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "afa"})
        with (
            urllib.request.urlopen(request, timeout=timeout) as resp,
            atomic_open(target, "wb") as out,
        ):
            first = resp.read(1 << 16)
            if first.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
                raise CheckpointError(f"{url} returned a web page, not a checkpoint; {by_hand}")
            out.write(first)
            while chunk := resp.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:  # offline, refused, timed out, disk full
        raise CheckpointError(
            f"downloading {entry.name} from {url} failed ({exc}); {by_hand}"
        ) from None
    return target
