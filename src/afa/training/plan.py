"""The stage planner and ``train_run``: a :class:`~afa.runs.RunConfig` becomes stages.

The planner is, with the CLI, the only code that sees the whole configuration:
:func:`build_stages` hands each builder its own piece (the model its ``ModelConfig``,
every method the one shared ``ThreatModel`` and its own options) and asks the method for
its traits (whether it pre-trains, the selection metric). After a pre-training method it
chooses the classifier stage's method itself, from the run's ``classifier`` section
(:func:`classifier_method`). The run schema, the run directory and loading a trained run
live in :mod:`afa.runs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from afa._lock import RunLockedError, writer_lock
from afa.config import to_dict
from afa.data import Splits, build_train_loader, load_splits, make_augment
from afa.errors import CheckpointError, ConfigError, DataError
from afa.methods import METHODS, PGDAT, TRADES, LinearProbe, Method
from afa.models import Classifier
from afa.runs import (
    ClassifierConfig,
    RunConfig,
    TrainConfig,
    build_model,
    load_checkpoint,
    load_weights,
    parse_run_config,
    resolve_device,
    write_config,
)
from afa.training.distributed import DistContext, stop_if_peer_lost
from afa.training.loop import LoopOptions, RunSpec, Stage, TrainState, config_difference, fit

log = logging.getLogger("afa")


def build_method(cfg: RunConfig, model: Classifier) -> Method:
    """The stage-1 (or only) method with its own options and the shared threat model.

    The options are the typed object the schema parsed (``cfg.method_options``).

    Raises:
        ConfigError: ``model.dual_bn`` with a method that sends every input through one BN
            branch (the other branch would stay untrained: dual BN would change nothing).
    """
    name = cfg.method_name
    method = METHODS.get(name)(model, cfg.threat, cfg.method_options)
    if model.dual_bn and not method.splits_bn():
        raise ConfigError(
            f"model.dual_bn: true, but method {name!r} sends every input through one BN "
            "branch (it has no clean and adversarial forwards to separate, or "
            "method.split_bn is false), so the other branch would stay untrained; set "
            "model.dual_bn: false, or use a method that splits them "
            "(docs/configuration.md#dual-batch-norm)"
        )
    return method


def classifier_method(pretrained: Method, classifier: ClassifierConfig) -> Method:
    """The classifier stage's method after ``pretrained``, by the run's ``classifier`` section.

    ``slf`` / ``alf``: a :class:`LinearProbe` of the frozen encoder (clean CE / PGD-CE
    adversaries); ``aff``: the whole network with TRADES (``classifier.beta``) or PGD-AT, by
    ``classifier.finetune_method`` (the robust self-supervised benchmark's protocols). It
    trains ``pretrained``'s classifier under the same threat model. The protocol's name is
    the canonical one: the schema replaced an earlier name when the config was parsed.

    Raises:
        TypeError: ``pretrained`` trains its classifier end to end (no classifier stage).
        ValueError: another protocol (a ``ClassifierConfig`` built in code).
    """
    if not pretrained.pretraining:
        raise TypeError(f"method {pretrained.name!r} trains its classifier end to end")
    model, threat, protocol = pretrained.model, pretrained.threat, classifier.protocol
    if protocol == "aff":
        if classifier.finetune_method == "trades":
            # Fine-tuning trains the branch model.bn_branch names (ACL, RobustSSL).
            return TRADES(model, threat, TRADES.Config(beta=classifier.beta, split_bn=False))
        return PGDAT(model, threat)
    if protocol in ("slf", "alf"):
        return LinearProbe(model, threat, LinearProbe.Config(adversarial=protocol == "alf"))
    raise ValueError(f"classifier protocol: expected slf, alf or aff, got {protocol!r}")


def build_stages(cfg: RunConfig, model: Classifier) -> list[Stage]:
    """One stage for end-to-end methods; pre-training + classifier for a method that
    pre-trains (``afa``, ``supcon``, ``acl``, ``dynacl``).

    The method says whether it pre-trains and which validation metric selects ``best.pt``
    in its stage; the classifier stage's method is the planner's choice
    (:func:`classifier_method`).
    """
    method = build_method(cfg, model)
    t = cfg.train
    first = Stage(
        name="pretrain" if method.pretraining else "train",
        method=method,
        epochs=t.epochs,
        optimizer=t.optimizer,
        schedule=t.schedule,
        grad_clip=t.grad_clip,
        select_by=method.selection_metric(),  # type: ignore[arg-type]
    )
    if not method.pretraining:
        return [first]
    c = cfg.classifier or ClassifierConfig()
    second = classifier_method(method, c)
    classifier = Stage(
        name="classifier",
        method=second,
        epochs=c.epochs,
        optimizer=c.optimizer,
        schedule=c.schedule,
        grad_clip=c.grad_clip,
        select_by=second.selection_metric(after=[method]),  # type: ignore[arg-type]
    )
    # A classifier-only run (``classifier.encoder``, ``afa finetune``) starts from a
    # pre-trained encoder: the pre-training stage ran in another run directory.
    return [classifier] if c.encoder is not None else [first, classifier]


#: What a pre-trained encoder's run must share with the classifier-only run it starts:
#: the data and the architecture (the BN branch and the rest may differ).
ENCODER_KEYS = ("data.name", "model.name", "model.options", "model.dual_bn")


def load_encoder(model: Classifier, cfg: RunConfig) -> Path:
    """Load ``cfg.classifier.encoder``'s weights into ``model``, with a zero head.

    The head starts at zero, as the robust self-supervised benchmark's SLF / ALF / AFF do
    (GodXuxilie/RobustSSL_Benchmark ``Finetuning_Methods/Vanilla_Finetuning/utils.py``
    ``get_model``, L532-L533 and L550-L551), so a run trained from a pre-trained run's
    frozen-encoder ``last.pt`` starts where its pre-training ended, whatever head that run's
    own classifier stage left.

    Returns:
        The checkpoint path read.

    Raises:
        CheckpointError: the checkpoint is missing, unsafe, or holds another dataset or
            architecture (the key named).
    """
    if cfg.classifier is None or cfg.classifier.encoder is None:
        raise ValueError("load_encoder: the run has no classifier.encoder")
    path = Path(cfg.classifier.encoder)
    ckpt = load_checkpoint(path)
    diff = config_difference(ckpt["config"], to_dict(cfg), ENCODER_KEYS)
    if diff is not None:
        key, old, new = diff
        raise CheckpointError(
            f"classifier.encoder: {path} was trained with {key} = {old!r}, this run has {new!r}"
        )
    load_weights(model, ckpt["model"], f"classifier.encoder: {path}")
    with torch.no_grad():
        for p in model.head.parameters():
            p.zero_()
    log.info("classifier-only run: encoder from %s (head set to zero)", path)
    return path


def loop_options(train: TrainConfig) -> LoopOptions:
    """The loop's own settings of ``train``; its epochs, optimizer, schedule and
    grad_clip go to the stages (``build_stages``), its batch size to the loader too."""
    return LoopOptions(
        seed=train.seed,
        precision=train.precision,
        channels_last=train.channels_last,
        compile=train.compile,
        sync_bn=train.sync_bn,
        ema=train.ema,
        eval_every=train.eval_every,
        val_examples=train.val_examples,
        val_batch_size=train.batch_size,
        log_every=train.log_every,
    )


def train_run(
    cfg: RunConfig,
    *,
    resume: bool = False,
    dist: DistContext | None = None,
    splits: Splits | None = None,
) -> TrainState:
    """Train the run described by ``cfg`` into ``cfg.run_dir`` (resuming from ``last.pt``)."""
    own_dist = dist is None
    dist = dist or DistContext.from_env(cfg.device)
    try:
        with stop_if_peer_lost(dist), _run_dir_writer(cfg.run_dir, dist):
            return _train(cfg, resume=resume, dist=dist, splits=splits)
    finally:
        if own_dist:
            dist.cleanup()


@contextlib.contextmanager
def _run_dir_writer(run_dir: Path, dist: DistContext) -> Iterator[None]:
    """One writer per run directory for the whole run: rank 0 holds the lock.

    Every rank learns whether rank 0 got it, so under torchrun a refused job ends on each
    rank with the same one line instead of ranks waiting for a rank 0 that has left.
    """
    with contextlib.ExitStack() as stack:
        refused = None
        if dist.is_main:
            try:
                stack.enter_context(writer_lock(run_dir))
            except RunLockedError as exc:
                refused = str(exc)
        refused = dist.all_gather_object(refused)[0]
        if refused is not None:
            raise RunLockedError(refused)
        yield


def fit_batch_size(batch_size: int, n_train: int, world_size: int, key: str) -> int:
    """The per-rank training batch: ``batch_size``, or all of a smaller training set.

    The loader drops the last short batch, so a batch larger than the training examples
    of a rank would give epochs of no step at all; a small dataset (a few hundred images
    in a folder at the default batch of 128 over several ranks) trains on batches of
    everything it has instead, with a note. The config keeps the value asked for.

    Raises:
        DataError: fewer training examples than ranks.
    """
    per_rank = n_train // world_size
    if n_train == 0:  # a test-only dataset: the loader says so, naming it
        return batch_size
    if per_rank < 1:
        raise DataError(
            f"{n_train} training example(s) cannot be shared over {world_size} processes; "
            "expected at least one per process"
        )
    if batch_size <= per_rank:
        return batch_size
    log.warning(
        "%s=%d is larger than the %d training examples%s: training on batches of %d "
        "(one step per epoch)",
        key,
        batch_size,
        per_rank,
        " of each rank" if world_size > 1 else "",
        per_rank,
    )
    return per_rank


def with_current_defaults(saved: Mapping[str, Any]) -> Mapping[str, Any]:
    """A checkpoint's run config read through today's schema: options added since it was
    written take their defaults (so they do not block a resume); as stored when today's
    schema refuses it (then the comparison names the key that differs)."""
    try:
        return to_dict(parse_run_config(dict(saved)))
    except ConfigError:
        return saved


def _train(cfg: RunConfig, *, resume: bool, dist: DistContext, splits: Splits | None) -> TrainState:
    device = dist.device if dist.enabled else resolve_device(cfg.device)
    torch.manual_seed(cfg.train.seed)
    splits = splits or load_splits(cfg.data)
    model = build_model(cfg, splits.info).to(device)
    stages = build_stages(cfg, model)
    c = cfg.classifier
    if c is not None and c.encoder is not None and not resume:
        load_encoder(model, cfg)
    if splits.info.augment == "contrastive":
        # The strong augmentation is for pre-training; the classifier stage (SLF / ALF / AFF)
        # trains on crop+flip, as ACL's and DynACL's fine-tuning does.
        for stage in (st for st in stages if st.name == "classifier"):
            stage.augment = make_augment(
                dataclasses.replace(splits.info, augment="crop-flip"), cfg.data.crop_padding
            )
    key = "classifier.batch_size" if c is not None and c.batch_size else "train.batch_size"
    loader = build_train_loader(
        splits,
        cfg.data,
        batch_size=fit_batch_size(
            c.batch_size if c is not None and c.batch_size else cfg.train.batch_size,
            len(splits.train),
            dist.world_size,
            key,
        ),
        seed=cfg.train.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    run = RunSpec(
        cfg.run_dir,
        config=to_dict(cfg),
        extra={"dataset_info": to_dict(splits.info)},
        # Only once fit has checked the directory (no run to overwrite, or a resume whose
        # config matches): a refused train must not replace the run's config.yaml.
        on_start=(lambda: write_config(cfg, cfg.run_dir)) if dist.is_main else None,
        read_saved=with_current_defaults,
    )
    val = None
    if len(splits.val):
        val = (torch.from_numpy(splits.val.images[:]), torch.from_numpy(splits.val.labels[:]))
    return fit(
        stages,
        loader,
        run,
        options=loop_options(cfg.train),
        val=val,
        threat=cfg.threat,
        augment=make_augment(splits.info, cfg.data.crop_padding, cfg.data.contrastive),
        device=device,
        dist=dist,
        resume=resume,
    )


__all__ = [
    "build_method",
    "build_stages",
    "classifier_method",
    "fit_batch_size",
    "load_encoder",
    "loop_options",
    "train_run",
]
