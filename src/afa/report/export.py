"""``afa export RUN``: a run's eval.json as RobustBench's ``model_info`` JSON.

RobustBench (Croce et al. 2021) describes each leaderboard entry by one JSON file,
``model_info/<dataset>/<threat>/<ModelID>.json``, with most values as strings (``"eps":
"8/255"``, accuracies in percent as ``"87.33"``). This module fills what the run knows
(dataset, architecture, radius, clean and AutoAttack accuracy, whether its evaluation passed
the sanity checks, synthetic data from its config) and leaves the paper's facts (``link``,
``name``, ``authors``, ``venue``, ``reported``) as empty strings, returning their names so
the caller can say so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from afa._io import write_json
from afa.attacks import format_radius
from afa.config import load_yaml
from afa.errors import DataError
from afa.runs import checkpoint_moved_on

__all__ = ["MODEL_INFO_FIELDS", "architecture_label", "export_run", "model_info"]

log = logging.getLogger("afa")

#: RobustBench's model_info keys, in their order (``external`` only when it differs).
MODEL_INFO_FIELDS = (
    "link",
    "name",
    "authors",
    "additional_data",
    "number_forward_passes",
    "dataset",
    "venue",
    "architecture",
    "eps",
    "clean_acc",
    "reported",
    "autoattack_acc",
    "external",
    "footnote",
    "unreliable",
)

#: Size of the official test set RobustBench evaluates on.
TEST_SET_SIZE = {"cifar10": 10_000, "cifar100": 10_000}

_FIXED = {
    "cnn": "CNN",
    "resnet18": "ResNet-18",
    "preact_resnet18": "PreActResNet-18",
    "wrn-28-10": "WideResNet-28-10",
    "wrn-34-10": "WideResNet-34-10",
    "wrn-70-16": "WideResNet-70-16",
}


def architecture_label(model: str, options: dict[str, Any] | None = None) -> str:
    """RobustBench's way of naming an afa architecture: ``WideResNet-28-10``, ``ResNet-18``.

    A base width other than the standard one is appended (``ResNet-18 (width 32)``).
    """
    options = dict(options or {})
    if model in ("wrn", "dm-wrn"):
        label = f"WideResNet-{options.get('depth', 28)}-{options.get('widen_factor', 10)}"
    elif model == "dm-preact-resnet":
        label = f"PreActResNet-{options.get('depth', 18)}"
    else:
        label = _FIXED.get(model, model)
    if "width" in options and model != "cnn":
        label += f" (width {options['width']})"
    return label


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _autoattack_label(record: dict[str, Any]) -> str | None:
    """The standard AutoAttack column, found by its settings, not its label."""
    for label, info in record.get("attacks", {}).items():
        if isinstance(info, dict) and info.get("version") == "standard":
            if not info.get("attacks_to_run") and info.get("name", "autoattack") == "autoattack":
                return label
    return None


def model_info(
    record: dict[str, Any], config: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[str], list[str]]:
    """RobustBench's model_info for one eval.json record (and the run's config, if any).

    ``autoattack_acc`` is the accuracy after the standard AutoAttack column: afa runs each
    attack only on the points the earlier ones left robust, so it is the worst case over
    AutoAttack and the attacks before it (the footnote names them). ``external`` is the
    worst case over every attack when a later attack lowered it further.

    Returns:
        ``(info, empty, notes)``: the JSON content, the fields left empty (unknown to the
        run), and warnings about how the evaluation departs from RobustBench's protocol.
    """
    config = config or {}
    notes: list[str] = []
    dataset = record.get("dataset") or config.get("data", {}).get("name") or ""
    tested = record.get("test_data")
    if isinstance(tested, dict) and tested.get("own") is False:
        # Scored on another test set (afa eval --test-data): that is the benchmark's dataset,
        # e.g. the official CIFAR-10 test set of a model trained on a JPEG copy.
        notes.append(
            f"evaluated on the test set {tested.get('label')}, not the test split of the "
            f"training data ({dataset or 'unknown'})"
        )
        dataset = str(tested.get("dataset") or "")
    threat = record.get("threat_model", {})
    norm, eps = threat.get("norm", "linf"), threat.get("eps")
    published = record.get("robustbench") or {}
    if published.get("architecture"):
        architecture = published["architecture"]
    elif config.get("model"):
        architecture = architecture_label(config["model"]["name"], config["model"].get("options"))
    else:
        architecture = architecture_label(str(record.get("model") or ""))

    attacks = list(record.get("attacks", {}))
    aa = _autoattack_label(record)
    n = record.get("n_examples")
    full = TEST_SET_SIZE.get(str(dataset))
    where = f"the first {n} of {full}" if full and n != full else f"{n}"
    footnote = [f"Evaluated with afa on {where} {dataset} test images"]
    if attacks:
        footnote[0] += f" by {', '.join(attacks)} in this order, each on the points still robust"
    footnote[0] += "."
    info: dict[str, Any] = {
        "link": "",
        "name": "",
        "authors": "",
        "additional_data": "",
        "number_forward_passes": 1,
        "dataset": dataset,
        "venue": "",
        "architecture": architecture,
        "eps": format_radius(float(eps)) if eps is not None else "",
        "clean_acc": _pct(record["clean_acc"]) if record.get("clean_acc") is not None else "",
        "reported": "",
        "autoattack_acc": _pct(record["attacks"][aa]["robust_acc"]) if aa else "",
    }
    robust = record.get("robust_acc")
    if aa and robust is not None and robust < record["attacks"][aa]["robust_acc"]:
        info["external"] = _pct(robust)
    if config:
        # afa trains on the dataset plus, optionally, generated images; RobustBench counts
        # synthetic data as not additional and names it in the footnote.
        info["additional_data"] = False
        generated = config.get("data", {}).get("generated") or []
        if generated:
            footnote.append(
                f"It uses additional synthetic images in training ({len(generated)} file(s))."
            )
    sanity = record.get("sanity") or {}
    if sanity:
        failed = sorted(k for k, v in sanity.items() if not v.get("passed", True))
        info["unreliable"] = bool(failed)
        if failed:
            footnote.append(f"afa's gradient-masking checks failed: {', '.join(failed)}.")
    else:
        info["unreliable"] = ""
    info["footnote"] = " ".join(footnote)
    info = {k: info[k] for k in MODEL_INFO_FIELDS if k in info}
    empty = [k for k, v in info.items() if v == ""]

    if not aa:
        notes.append(
            "no standard AutoAttack in eval.json: autoattack_acc is empty "
            "(run `afa eval RUN --attacks pgd,cw,autoattack`)"
        )
    if full and n != full:
        notes.append(f"evaluated on {n} of the {full} test images; RobustBench uses all of them")
    if (
        dataset in TEST_SET_SIZE
        and norm == "linf"
        and eps is not None
        and abs(eps - 8 / 255) > 1e-9
    ):
        notes.append(
            f"eps = {format_radius(float(eps))}; the {dataset} Linf leaderboard uses 8/255"
        )
    if record.get("threat_overrides"):
        notes.append(f"the evaluation changed the threat model: {record['threat_overrides']}")
    return info, empty, notes


def export_run(
    run: str | Path, out: str | Path | None = None, *, name: str | None = None
) -> tuple[Path, dict[str, Any], list[str], list[str]]:
    """Write ``RUN/eval.json`` as RobustBench model_info JSON.

    Args:
        run: the run directory (or the directory of an ``afa eval robustbench:...``).
        out: the file to write (default ``RUN/model_info/<dataset>/<Linf|L2>/<name>.json``,
            RobustBench's own tree).
        name: the model ID in the default file name (default: the run directory's name).

    When the run's checkpoint is no longer the one eval.json recorded (its sha256 differs:
    the run trained on, or was re-trained), a warning is logged and the footnote says so.

    Returns:
        ``(path written, info, empty fields, notes)``.

    Raises:
        DataError: no eval.json, or one that is not valid JSON or lacks ``clean_acc``.
        ConfigError: a config.yaml that is not valid YAML.
    """
    run = Path(run)
    path = run / "eval.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; run `afa eval {run}` first")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable as JSON ({exc})") from None
    if not isinstance(record, dict) or "clean_acc" not in record:
        raise DataError(f"{path}: not an afa eval.json (no 'clean_acc')")
    config: dict[str, Any] = {}
    if (run / "config.yaml").is_file():
        config = load_yaml(run / "config.yaml")
    info, empty, notes = model_info(record, config)
    moved = checkpoint_moved_on(run, record.get("checkpoint_identity"), "eval.json")
    if moved:
        # The export names the run, whose weights are no longer those measured: say so in
        # the file itself (the footnote travels with it) and on the command line.
        log.warning("warning: %s", moved)
        info["footnote"] = f"{info['footnote']} Stale: {moved}."
    if out is None:
        norm = record.get("threat_model", {}).get("norm", "linf")
        threat = "Linf" if norm == "linf" else "L2"
        out = (
            run
            / "model_info"
            / (info["dataset"] or "unknown")
            / threat
            / f"{name or run.resolve().name}.json"
        )
    written = write_json(Path(out), info)
    return written, info, empty, notes
