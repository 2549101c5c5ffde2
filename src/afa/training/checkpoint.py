"""Writing complete, atomic, safe checkpoints, and the RNG states a resumed run needs.

The payload ``afa.training.fit`` writes, and reading it back (``load_checkpoint``,
``weights_only=True``), are described in :mod:`afa.runs.checkpoint`, where evaluation and
analysis read it without importing the trainer.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from afa._io import fsync_dir, naming, tmp_name
from afa.errors import CheckpointError
from afa.runs.checkpoint import FORMAT, PAYLOAD_KEYS, load_checkpoint


def save_checkpoint(
    path: str | Path, payload: Mapping[str, Any], *, copies: Sequence[str | Path] = ()
) -> None:
    """Write ``payload`` to ``path`` atomically, and optionally to ``copies`` too.

    The payload is serialised once to a temporary file in the same directory, flushed and
    fsynced, then renamed over ``path`` (``os.replace`` is atomic), so ``path`` always
    holds either the previous complete checkpoint or the new one, never a torn file. Each
    of ``copies`` (e.g. ``best.pt``) gets the same bytes (a hard link, else a copy) and is
    replaced the same way, BEFORE ``path``.

    Raises:
        Whatever ``torch.save`` or the file system raises; temporary files are removed
        and the existing files are left untouched.
    """
    path = Path(path)
    tmp = tmp_name(path)
    made = [tmp]
    try:
        with naming(path):  # a full disk names the checkpoint, not its temporary
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(dict(payload), f)
                f.flush()
                os.fsync(f.fileno())
        for copy in map(Path, copies):
            copy_tmp = tmp_name(copy)
            made.append(copy_tmp)
            with naming(copy):
                try:
                    os.link(
                        tmp, copy_tmp
                    )  # same bytes, no second write; files are never edited in place
                except OSError:
                    shutil.copyfile(tmp, copy_tmp)
                    _fsync_file(copy_tmp)
                os.replace(copy_tmp, copy)
            fsync_dir(copy.parent)
        with naming(path):
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        for t in made:
            if t.exists():
                t.unlink()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def method_extra_state(method: nn.Module) -> dict[str, Any]:
    """A Method's state dict without its classifier (``model.*``): heads and the like."""
    return {k: v for k, v in method.state_dict().items() if not k.startswith("model.")}


def load_method_extra_state(method: nn.Module, state: Mapping[str, Any]) -> None:
    """Inverse of ``method_extra_state`` (the classifier is loaded separately).

    Raises:
        CheckpointError: when the keys do not match the method's own modules.
    """
    own = method_extra_state(method)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"the checkpoint's method state does not fit {type(method).__name__}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    full = {**{f"model.{k}": v for k, v in method.model.state_dict().items()}, **state}
    method.load_state_dict(full)


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's legacy and torch's global RNGs (every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's global RNG states, as weights-only-loadable values.

    Args:
        device: a CUDA device whose generator is included (others are not touched, so no
            CUDA context is created on another GPU).
    """
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = None
    if device is not None and device.type == "cuda":
        cuda = torch.cuda.get_rng_state(device)
    return {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def set_rng_state(state: Mapping[str, Any], device: torch.device | None = None) -> None:
    """Restore states saved by ``rng_state`` (the CUDA one only when ``device`` is CUDA)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"]), py["gauss_next"]))
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            int(n["pos"]),
            int(n["has_gauss"]),
            float(n["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    if device is not None and device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


__all__ = [
    "FORMAT",
    "PAYLOAD_KEYS",
    "load_checkpoint",
    "load_method_extra_state",
    "method_extra_state",
    "rng_state",
    "save_checkpoint",
    "seed_all",
    "set_rng_state",
]
