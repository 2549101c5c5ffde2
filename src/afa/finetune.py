"""``afa finetune``: a pre-trained encoder under the SLF / ALF / AFF protocols, one table.

The robust self-supervised benchmark (GodXuxilie/RobustSSL_Benchmark) judges a pre-training
method by three stage-2 protocols on its encoder: SLF (a linear head on the frozen encoder,
clean CE), ALF (the same head on PGD adversaries) and AFF (TRADES on the whole network).
:func:`finetune` runs each as a classifier-only run (``classifier.encoder``) beside the
pre-trained run, ``RUN-slf``, ``RUN-alf``, ``RUN-aff``, trained by the one training loop
(:func:`afa.training.plan.train_run`) with the protocol's defaults
(:data:`afa.runs.PROTOCOL_DEFAULTS`), evaluated by ``afa eval``'s
:func:`afa.evaluation.runs.evaluate_run`, and writes one table (``RUN/finetune.json`` and
``RUN/finetune.md``). Re-running skips the protocols already trained and evaluated with the
same request; an interrupted one resumes from its ``last.pt``.

It trains and evaluates, so it sits with the quickstart above both (the trainer must not
import the evaluation).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afa._io import atomic_write_text, jsonable, read_jsonl, write_json
from afa.config import to_dict
from afa.data import load_splits
from afa.errors import CheckpointError, ConfigError
from afa.evaluation.runs import evaluate_run
from afa.methods import METHODS
from afa.runs import (
    PROTOCOL_ALIASES,
    PROTOCOLS,
    RunConfig,
    RunDir,
    adversarial_epochs,
    canonical_protocol,
    load_checkpoint,
    load_run_config,
    parse_run_config,
)
from afa.training.plan import train_run

log = logging.getLogger("afa")

#: Protocols whose classifier stage leaves the encoder untouched (weights and BN statistics):
#: a run trained with one of them still holds its pre-trained encoder in ``last.pt``.
FROZEN_ENCODER = ("slf", "alf")


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` wrote.

    Attributes:
        rows: one row per protocol (``PROTOCOLS`` order), as in ``finetune.json``.
        json_path / md_path: ``RUN/finetune.json`` and ``RUN/finetune.md``.
        markdown: the table.
        skipped: the protocols that were already done (not trained or evaluated again).
    """

    rows: list[dict[str, Any]]
    json_path: Path
    md_path: Path
    markdown: str
    skipped: list[str]


def parse_protocols(text: str) -> list[str]:
    """``"slf,alf,aff"`` -> the canonical names, each once (aliases accepted).

    Raises:
        ConfigError: an empty item, an unknown name, or a protocol named twice.
    """
    names = [t.strip() for t in text.split(",")]
    if not names or any(not n for n in names):
        raise ConfigError(
            f"--protocols: expected a comma list of {', '.join(PROTOCOLS)}, got {text!r}"
        )
    known = (*PROTOCOLS, *PROTOCOL_ALIASES)
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(
            f"--protocols: unknown protocol {bad[0]!r}; expected {', '.join(PROTOCOLS)} "
            f"(or {', '.join(PROTOCOL_ALIASES)})"
        )
    out = [canonical_protocol(n) for n in names]
    if len(set(out)) != len(out):
        raise ConfigError(f"--protocols: each protocol once, got {text!r}")
    return out


def pretrained_encoder(run: Path) -> tuple[RunConfig, Path]:
    """The pre-training run's config and the checkpoint that holds its pre-trained encoder.

    That is ``RUN/last.pt`` when it ended the pre-training stage, or when the run's own
    classifier stage froze the encoder (``slf`` / ``alf``: weights and BN statistics are
    those pre-training left). A run whose classifier stage fine-tuned the encoder (``aff``)
    no longer holds it.

    Raises:
        ConfigError: not a run directory, a method that does not pre-train, or a run that is
            itself classifier-only.
        CheckpointError: no ``last.pt``, pre-training unfinished, or the encoder fine-tuned.
    """
    files = RunDir(run)
    if not files.config.is_file():
        raise ConfigError(f"{run}: not a run directory (no config.yaml)")
    cfg = load_run_config(files.config)
    pretraining = [n for n in METHODS if METHODS.get(n).pretraining]
    if not METHODS.get(cfg.method_name).pretraining:
        raise ConfigError(
            f"{run}: method {cfg.method_name!r} trains its classifier end to end; afa finetune "
            f"needs a pre-training run ({', '.join(pretraining)})"
        )
    assert cfg.classifier is not None  # parse_run_config gives every pre-training run one
    if cfg.classifier.encoder is not None:
        raise ConfigError(
            f"{run}: a classifier-only run (classifier.encoder: {cfg.classifier.encoder}); "
            "give the pre-training run it started from"
        )
    if not files.last.is_file():
        raise CheckpointError(f"{run}: no last.pt (train the run first)")
    ckpt = load_checkpoint(files.last)
    stage, epoch = str(ckpt["stage"]["name"]), int(ckpt["epoch"])
    if stage == "pretrain" and epoch < cfg.train.epochs:
        raise CheckpointError(
            f"{files.last}: pre-training stopped at epoch {epoch} of {cfg.train.epochs} "
            "(resume it with afa train --resume)"
        )
    if stage == "classifier" and cfg.classifier.protocol not in FROZEN_ENCODER:
        raise CheckpointError(
            f"{files.last}: the run's classifier stage fine-tuned the encoder "
            f"(classifier.protocol: {cfg.classifier.protocol}), so the pre-trained encoder "
            "is gone; train it again with classifier.protocol=slf"
        )
    return cfg, files.last


def protocol_config(
    cfg: RunConfig, run: Path, encoder: Path, protocol: str, overrides: Sequence[str] = ()
) -> RunConfig:
    """The classifier-only run of ``protocol`` beside ``run`` (``RUN-<protocol>``).

    Everything but the classifier section is the pre-training run's (so its budget counts
    the pre-training epochs); the classifier section is the protocol with its defaults.
    ``overrides`` (``key=value``, e.g. ``classifier.epochs=5``) apply on top.
    """
    raw = to_dict(cfg)
    raw["classifier"] = {"protocol": protocol, "encoder": str(encoder)}
    raw["out_dir"] = str(run.parent)
    raw["name"] = f"{run.name}-{protocol}"
    return parse_run_config(raw, list(overrides))


def finetune(
    run: str | Path,
    protocols: Sequence[str] = PROTOCOLS,
    *,
    overrides: Sequence[str] = (),
    attacks: Sequence[str] | None = None,
    n_examples: int | None = None,
    sanity: bool = True,
) -> FinetuneResult:
    """Train and evaluate ``run``'s pre-trained encoder under each protocol; one table.

    Args:
        run: a pre-training run directory (method ``afa``, ``supcon``, ``acl``, ``dynacl``).
        protocols: ``slf``, ``alf``, ``aff`` (aliases accepted).
        overrides: ``key=value`` for every protocol's run (``classifier.epochs=1``,
            ``device=cpu``); they are part of each run's config, so resuming with other
            values is refused by the loop.
        attacks / n_examples: the evaluation's (default: the run's ``eval`` section).
        sanity: run the evaluation's gradient-masking checks.

    Returns:
        A :class:`FinetuneResult`; each row: ``protocol``, ``run_dir``, ``bn_branch``,
        ``clean_acc``, ``attacks`` (label -> accuracy), ``robust_acc`` (worst case per
        example), ``n_examples``, ``adversarial_epochs`` (pre-training + stage 2),
        ``classifier_epochs``, ``train_time_s``, ``eval_time_s``, ``request``.
    """
    run = Path(run)
    names = [canonical_protocol(p) for p in protocols]
    parse_protocols(",".join(names))  # unknown or repeated names fail before any training
    cfg, encoder = pretrained_encoder(run)
    configs = {p: protocol_config(cfg, run, encoder, p, overrides) for p in names}
    json_path, md_path = run / "finetune.json", run / "finetune.md"
    previous = _previous_rows(json_path)
    request = {
        "overrides": list(overrides),
        "attacks": list(attacks) if attacks is not None else None,
        "n_examples": n_examples,
        "sanity": sanity,
    }
    splits, skipped = None, []
    for p, pcfg in configs.items():
        old = previous.get(p)
        if (
            old is not None
            and old.get("request") == request
            and RunDir(pcfg.run_dir).eval_json.is_file()
        ):
            log.info("finetune: %s already trained and evaluated (%s), skipped", p, pcfg.run_dir)
            skipped.append(p)
            continue
        splits = splits or load_splits(pcfg.data)
        batch = pcfg.classifier.batch_size if pcfg.classifier else None
        if batch is not None and batch > len(splits.train):
            # The loop drops a short last batch: a batch above the training set trains nothing.
            raise ConfigError(
                f"classifier.batch_size: {batch} (the {p} default) exceeds the "
                f"{len(splits.train)} training examples; set classifier.batch_size=N after RUN"
            )
        resume = RunDir(pcfg.run_dir).last.is_file()
        log.info("finetune: %s -> %s%s", p, pcfg.run_dir, " (resuming)" if resume else "")
        state = train_run(pcfg, resume=resume, splits=splits)
        if not state.completed:
            raise CheckpointError(f"{pcfg.run_dir}: training stopped before its last epoch")
        result, _ = evaluate_run(
            pcfg.run_dir,
            attacks=attacks,
            n_examples=n_examples,
            device=pcfg.device,
            sanity=sanity,
            splits=splits,
        )
        previous[p] = _row(p, pcfg, result, request)
        # After every protocol, so an interruption keeps the ones done.
        _write(run, encoder, previous, json_path, md_path)
    markdown = _write(run, encoder, previous, json_path, md_path)
    rows = [previous[p] for p in PROTOCOLS if p in previous]
    return FinetuneResult(rows, json_path, md_path, markdown, skipped)


def _previous_rows(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        log.warning("finetune: %s is not JSON; every protocol runs again", path)
        return {}
    return {row["protocol"]: row for row in data.get("rows", []) if "protocol" in row}


def _row(protocol: str, cfg: RunConfig, result: Any, request: dict[str, Any]) -> dict[str, Any]:
    records = read_jsonl(RunDir(cfg.run_dir).metrics)
    train_time = sum(float(r.get("time_s", 0.0)) + float(r.get("val/time_s", 0.0)) for r in records)
    assert cfg.classifier is not None
    return {
        "protocol": protocol,
        "run_dir": str(cfg.run_dir),
        "bn_branch": cfg.model.bn_branch if cfg.model.dual_bn else None,
        "n_examples": result.n_examples,
        "clean_acc": result.clean_acc,
        "attacks": {label: result.acc(label) for label in result.columns[1:]},
        "robust_acc": result.robust_acc,
        "adversarial_epochs": adversarial_epochs(cfg),
        "classifier_epochs": cfg.classifier.epochs,
        "train_time_s": train_time,
        "eval_time_s": result.time_s,
        "request": request,
    }


def format_finetune_table(rows: Sequence[dict[str, Any]]) -> str:
    """The markdown table of :func:`finetune`'s rows (accuracies in percent)."""
    labels: list[str] = []
    for row in rows:
        labels += [a for a in row["attacks"] if a not in labels]
    head = [
        "protocol", "BN branch", "n", "clean", *labels, "worst case",
        "adv. epochs", "train s", "eval s",
    ]  # fmt: skip
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|",
    ]
    for row in rows:
        attacks = [f"{100 * row['attacks'][a]:.2f}" if a in row["attacks"] else "–" for a in labels]
        cells = [
            row["protocol"].upper(),
            row["bn_branch"] or "–",
            str(row["n_examples"]),
            f"{100 * row['clean_acc']:.2f}",
            *attacks,
            f"{100 * row['robust_acc']:.2f}",
            str(row["adversarial_epochs"]),
            f"{row['train_time_s']:.1f}",
            f"{row['eval_time_s']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write(
    run: Path, encoder: Path, rows: dict[str, dict[str, Any]], json_path: Path, md_path: Path
) -> str:
    ordered = [rows[p] for p in PROTOCOLS if p in rows]
    pretrain = [r for r in read_jsonl(RunDir(run).metrics) if r.get("stage") == "pretrain"]
    record = {
        "run": str(run),
        "encoder": str(encoder),
        # Stage 1's cost, shared by every row (each row's train_time_s is its stage 2).
        "pretrain_time_s": sum(
            float(r.get("time_s", 0.0)) + float(r.get("val/time_s", 0.0)) for r in pretrain
        ),
        "rows": ordered,
    }
    write_json(json_path, jsonable(record))
    markdown = format_finetune_table(ordered)
    atomic_write_text(
        md_path,
        f"# {run.name}: stage-2 protocols\n\nEncoder: `{encoder}`. Accuracies in percent on "
        "the run's test split; worst case per example over the attacks; adversarial epochs "
        "count pre-training and stage 2; train time is stage 2's (pre-training: "
        f"{record['pretrain_time_s']:.1f} s).\n\n" + markdown,
    )
    return markdown


__all__ = [
    "FROZEN_ENCODER",
    "FinetuneResult",
    "finetune",
    "format_finetune_table",
    "parse_protocols",
    "pretrained_encoder",
    "protocol_config",
]
