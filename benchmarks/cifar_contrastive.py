"""The CIFAR-10 measurement of the adversarial contrastive ingredients (AFA, ACL, DynACL, afa-trades).

Every row is a shipped recipe (``src/afa/configs/cifar10-*.yaml``) plus ``key=value``
overrides, trained on the CIFAR-10 JPEG copy of the whole training set read through the
``imagefolder`` dataset: 5,000 images held out of train as the test split and 1,000 as the
validation split (stratified, fixed seeds), so every table says "CIFAR-10 (JPEG copy),
test = 5,000 held out of train". Suites (``--suite``):

* ``budget`` (step 1): clean SupCon + a clean linear probe on the CNN at width
  16, 32 and 64 and ResNet-18 at width 16: linear-probe accuracy, loss over chance and cos_gap
  per epoch, steps, batch and time, to find a budget at which contrastive learning learns;
* ``ingredients`` (steps 2-3): standard training (the clean reference), PGD-AT,
  TRADES, the AFA baseline, each ingredient alone (the clean contrastive term, dual BN,
  the contrastive augmentation, LR warm-up), all four together, afa-trades with and
  without the clean term and dual BN;
* ``acl``: AFA, afa-trades, ACL, DynACL, PGD-AT, TRADES (and standard).

Pre-training rows come in three stage-2 protocols: SLF (clean linear head on the frozen
encoder), ALF (adversarial linear head), AFF (TRADES fine-tuning of the whole network).
Every row has at most ``--epochs`` (E) adversarial epochs: end-to-end methods train E
epochs; a pre-training row pre-trains E - k epochs (k = ``--stage2-epochs``) and its
stage 2 trains k epochs, adversarial for ALF and AFF (E in all), clean for SLF (E - k
adversarial epochs: SLF is measured with fewer, which can only disadvantage it). The three
protocols of one row share their pre-training: the first trains it and keeps
``pretrain.pt`` (its ``last.pt`` at the end of pre-training), the others start from a copy
of it and resume into their own stage 2, which is what an uninterrupted run would do
(resume = uninterrupted is tested in the loop; the test here checks it too).

Evaluation: the best checkpoint, clean accuracy and APGD-CE + APGD-T (AutoAttack's two
gradient attacks, worst case per example) on the first ``--n`` (1,000) test images, the
test split taken class by class in turn (the carved split is in class order); with
``--final`` AutoAttack standard into ``eval-autoattack.json``. Collapse indicators per
epoch (``train/cos_gap``, ``train/loss_over_chance``, the collapse warning) come from the
run's ``metrics.jsonl``.

Cached and resumable: each run has its own directory under ``--runs/<suite>``; a run whose
``last.pt`` exists is resumed, one whose evaluation file exists (same attacks and n) is not
run again. After each run its row goes into the ``--out`` JSON (atomic write; rows of
earlier invocations are kept, keyed by run and evaluation) and the markdown table beside it
is regenerated. ``--dry-run`` prints every run's command and the time estimate without
training; ``--tiny`` (tests) trains 1 epoch per stage at width 4 on a small slice.

    python benchmarks/cifar_contrastive.py --suite budget --dry-run
    nohup python benchmarks/cifar_contrastive.py --suite ingredients --epochs 20 \\
        > runs/cifar-contrastive/ingredients.log 2>&1 &

See benchmarks/README.md for the suites' estimated times.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import functools
import json
import logging
import math
import os
import platform
import sys
import time
import traceback
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

# ablation.py puts src/ on sys.path and holds the helpers of recipe + overrides rows
from ablation import (  # noqa: E402
    SRC,
    Variant,
    check_budget,
    contrastive_summary,
    mean_std,
    robust_label,
    shell_command,
    slug,
)

from afa._io import atomic_write_text, read_jsonl, write_json  # noqa: E402
from afa.config import to_dict  # noqa: E402
from afa.data import load_splits  # noqa: E402
from afa.evaluation.runs import evaluate_run  # noqa: E402
from afa.runs import (  # noqa: E402
    ClassifierConfig,
    RunConfig,
    RunDir,
    adversarial_epochs,
    load_checkpoint,
    load_run_config,
)
from afa.training import plan as training_plan  # noqa: E402
from afa.training.checkpoint import save_checkpoint  # noqa: E402

log = logging.getLogger("cifar_contrastive")

DEFAULT_DATA = "/work/shared/data/cifar10-jpeg-train.tar.gz"
N_TRAIN_ALL, N_TEST, N_VAL = 50_000, 5_000, 1_000
HEADER = "CIFAR-10 (JPEG copy), test = 5,000 held out of train"
APGD = ("apgd-ce", "apgd-t")
CONTRASTIVE = ("afa", "afa-trades", "supcon", "acl", "dynacl")


# ------------------------------------------------------------------------------ budget


@dataclass(frozen=True)
class Budget:
    """What every row of a suite shares: the adversarial epochs and how they are spent.

    Attributes:
        epochs: E, adversarial epochs of every row (clean epochs for the ``budget`` suite).
        stage2: k, epochs of the SLF / ALF / AFF stage; ALF and AFF pre-train E - k.
        warmup: epochs of LR warm-up where a row warms up.
        batch_size: examples per step (per process), every row.
        model, width: the architecture of the ``ingredients`` and ``acl`` rows.
        steps: PGD steps of the training attacks (step 2/255, eps 8/255).
    """

    epochs: int
    stage2: int
    warmup: int
    batch_size: int = 256
    model: str = "cnn"
    width: int = 32
    steps: int = 5

    @property
    def model_tag(self) -> str:
        return f"{self.model.replace('resnet', 'r')}w{self.width}"


def protocol_values() -> dict[str, str]:
    """SLF / ALF / AFF -> the ``classifier.protocol`` value this afa accepts.

    ``slf`` / ``alf`` / ``aff`` once those names exist, else ``linear`` / ``linear-adv`` /
    ``finetune`` (the same three protocols under their earlier names).
    """
    known = typing.get_args(typing.get_type_hints(ClassifierConfig)["protocol"])
    new = {"SLF": "slf", "ALF": "alf", "AFF": "aff"}
    old = {"SLF": "linear", "ALF": "linear-adv", "AFF": "finetune"}
    return {k: new[k] if new[k] in known else old[k] for k in new}


def protocol_of(cfg: RunConfig) -> str | None:
    """SLF / ALF / AFF of a pre-training run, None for an end-to-end one."""
    if cfg.classifier is None:
        return None
    names = {v: k for k, v in protocol_values().items()}
    return names.get(cfg.classifier.protocol, cfg.classifier.protocol)


def stage2(protocol: str, b: Budget) -> tuple[str, ...]:
    """The overrides of one stage-2 protocol at budget ``b`` (pre-training epochs included).

    The classifier optimiser is RobustSSL's AFF one (SGD, momentum 0.9, weight decay 2e-4)
    with lr 0.1 for all three protocols: their SLF/ALF lr 0.01 is for 25 epochs at batch
    512, and at a few epochs 0.01 leaves a fresh head untrained (ablation.py, digits);
    x0.1 at 40% and 80% as DynACL's linear evaluation.
    """
    value = protocol_values()[protocol]
    out = (
        f"train.epochs={b.epochs - b.stage2}",
        f"classifier.protocol={value}",
        f"classifier.epochs={b.stage2}",
        "classifier.optimizer={name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 2.0e-4}",
        "classifier.schedule={name: piecewise, milestones: [0.4, 0.8], gamma: 0.1}",
    )
    if protocol == "AFF":
        out += ("classifier.finetune_method=trades", "classifier.beta=6.0")
    return out


def with_protocols(
    name: str, recipe: str, overrides: Sequence[str], b: Budget, note: str = ""
) -> list[Variant]:
    """A pre-training row under SLF, ALF and AFF (rows ``<name> SLF`` etc.)."""
    return [
        Variant(f"{name} {p}", recipe, (*overrides, *stage2(p, b)), note=note)
        for p in ("SLF", "ALF", "AFF")
    ]


def lars_lr(b: Budget) -> str:
    """ACL / DynACL's LARS lr 5.0 at batch 512, scaled linearly to the budget's batch
    (the SimCLR rule, Chen et al. 2020, whose LARS set-up they inherit)."""
    return f"train.optimizer.lr={5.0 * b.batch_size / 512:g}"


def model_overrides(model: str, width: int) -> tuple[str, ...]:
    return (f"model.name={model}", f"model.options={{width: {width}}}")


@dataclass(frozen=True)
class Suite:
    """The rows of one suite, the overrides every row shares, and what is measured."""

    name: str
    variants: tuple[Variant, ...]
    common: tuple[str, ...]
    attacks: tuple[str, ...]
    description: str


def common_overrides(b: Budget, *, with_model: bool) -> tuple[str, ...]:
    """Threat model, batch, validation and (for ``ingredients`` / ``acl``) the model."""
    out = (
        "threat.eps=8/255",
        "threat.step_size=2/255",
        f"threat.steps={b.steps}",
        f"train.batch_size={b.batch_size}",
        # every validation image: the carved split is in class order, so a cap would
        # validate on the first classes only
        "train.val_examples=null",
        "train.eval_every=1",
    )
    return out + (model_overrides(b.model, b.width) if with_model else ())


def budget_suite(b: Budget) -> Suite:
    """Clean SupCon (Khosla et al. 2020) + a clean linear probe, four architectures."""
    rows = []
    for model, width in (("cnn", 16), ("cnn", 32), ("cnn", 64), ("resnet18", 16)):
        rows.append(
            Variant(
                f"supcon {model} w{width}",
                "cifar10-afa.yaml",
                (
                    "method={name: supcon}",
                    *model_overrides(model, width),
                    f"train.schedule.warmup_epochs={b.warmup}",
                    *stage2("SLF", b),
                ),
                note=f"clean: {b.epochs} pre-training + {b.stage2} linear-probe epochs",
            )
        )
    return Suite(
        "budget",
        tuple(rows),
        common_overrides(b, with_model=False) + ("eval.attacks=[]",),
        (),
        f"clean SupCon (tau 0.1, MLP head 128, SGD lr 0.1 cosine, warm-up {b.warmup}), "
        f"{b.epochs} epochs, batch {b.batch_size}, then a clean linear probe of {b.stage2} "
        "epochs on the frozen encoder; test clean accuracy of the probe",
    )


#: The AFA baseline: every ingredient explicitly off, so a change of the recipe's defaults
#: (which follow this measurement) does not change the baseline's row.
AFA_BASELINE = (
    "method.clean_views=1",
    "method.clean_term=none",
    "model.dual_bn=false",
    "data.augment=crop-flip",
    "train.schedule.warmup_epochs=0",
)


def afa_ingredients(b: Budget) -> dict[str, tuple[str, ...]]:
    """Each ingredient of AFA's recipe as the overrides that switch it on over ``AFA_BASELINE``."""
    return {
        # ACL's (1/2, 1/2) clean + adversarial terms (Jiang et al. 2020): two clean views
        "clean term": ("method.clean_views=2", "method.clean_term=acl"),
        # ACL / DynACL's dual BN; evaluated and fine-tuned on the adversarial branch
        "dual BN": ("model.dual_bn=true", "model.bn_branch=adv"),
        # SimCLR / ACL's strong augmentation for pre-training (stage 2 uses crop+flip)
        "contrastive aug": ("data.augment=contrastive",),
        "warm-up": (f"train.schedule.warmup_epochs={b.warmup}",),
    }


def baselines() -> list[Variant]:
    """Standard training (the clean reference), PGD-AT and TRADES, end to end."""
    return [
        Variant("standard", "cifar10-standard.yaml", note="clean reference: 0 adversarial"),
        Variant("pgd-at", "cifar10-pgd-at.yaml"),
        Variant("trades", "cifar10-trades.yaml"),
    ]


def epochs(b: Budget) -> tuple[str, ...]:
    return (f"train.epochs={b.epochs}",)


def afa_rows(b: Budget) -> tuple[list[Variant], list[Variant]]:
    """The AFA baseline and all four ingredients together (under SLF / ALF / AFF), and
    each ingredient alone."""
    afa = "cifar10-afa.yaml"
    ing = afa_ingredients(b)
    main = with_protocols("afa baseline", afa, AFA_BASELINE, b)
    main += with_protocols(
        "afa +all four",
        afa,
        (*AFA_BASELINE, *(o for over in ing.values() for o in over)),
        b,
        note="every ingredient together",
    )
    alone = [
        v
        for name, over in ing.items()
        for v in with_protocols(f"afa +{name}", afa, (*AFA_BASELINE, *over), b)
    ]
    return main, alone


def afa_trades_rows(b: Budget) -> list[Variant]:
    at = "cifar10-afa-trades.yaml"
    dual = afa_ingredients(b)["dual BN"]
    rows = {
        "afa-trades": (),
        "afa-trades +clean term": ("method.clean_term=acl",),
        "afa-trades +dual BN": dual,
        "afa-trades +clean term +dual BN": ("method.clean_term=acl", *dual),
    }
    return [Variant(n, at, (*epochs(b), *o)) for n, o in rows.items()]


def ingredients_suite(b: Budget) -> Suite:
    main, alone = afa_rows(b)
    rows = [Variant(v.name, v.recipe, epochs(b), v.note) for v in baselines()]
    rows += main + alone + afa_trades_rows(b)
    return Suite(
        "ingredients",
        tuple(rows),
        common_overrides(b, with_model=True),
        APGD,
        description(b),
    )


def acl_suite(b: Budget) -> Suite:
    """The contrastive family's table: AFA and afa-trades against ACL and DynACL (and PGD-AT, TRADES)."""
    # DynACL's K = 50 of 1000 epochs (weight schedule and augmentation annealing), scaled
    k = max(1, round(b.epochs * 50 / 1000))
    warm = (f"train.schedule.warmup_epochs={b.warmup}", lars_lr(b))
    # the rows AFA and afa-trades share with the ingredients suite (same names, so the
    # same run directories: a row measured by one suite is not trained again)
    rows = [Variant(v.name, v.recipe, epochs(b), v.note) for v in baselines()]
    rows += afa_rows(b)[0] + afa_trades_rows(b)
    rows += with_protocols("acl", "cifar10-acl.yaml", warm, b, note="LARS lr scaled to batch")
    rows += with_protocols(
        "dynacl",
        "cifar10-dynacl.yaml",
        (*warm, f"method.dynacl_k={k}", f"data.contrastive.anneal_every={k}"),
        b,
        note=f"LARS lr scaled to batch; DynACL K scaled to {k} (50 of 1000 epochs)",
    )
    return Suite("acl", tuple(rows), common_overrides(b, with_model=True), APGD, description(b))


#: The AFA adversary of afa-trades, each way of crafting it as the overrides that pin it
#: (the recipe's default may follow this measurement; the rows must not move with it).
AFA_ADVERSARIES = {
    # a separate AFA adversary of the threat model's steps (PGD-k, random start)
    "separate": (
        "method.shared_adversary=false",
        "method.afa_steps=null",
        "method.afa_step_size=null",
        "method.afa_init=random",
    ),
    # the TRADES adversary is the AFA anchor: no second attack
    "shared": ("method.shared_adversary=true",),
    # one AFA step (2/255) from the TRADES adversary: the anchor refines TRADES' iterate
    "AFA-1 from TRADES": (
        "method.shared_adversary=false",
        "method.afa_steps=1",
        "method.afa_step_size=null",
        "method.afa_init=trades",
    ),
    # one AFA step of 8/255 from a random start (FGSM with a random start, on the AFA loss)
    "AFA-1 random": (
        "method.shared_adversary=false",
        "method.afa_steps=1",
        "method.afa_step_size=8/255",
        "method.afa_init=random",
    ),
}
AFA_WEIGHTS = (0.5, 2.0, 4.0)


def afa_trades_cost_suite(b: Budget) -> Suite:
    """afa-trades with each AFA adversary (and its weight lambda) beside TRADES, at equal
    epochs: which cheaper adversary keeps today's accuracy."""
    at = "cifar10-afa-trades.yaml"
    pinned = ("method.clean_term=none", "model.dual_bn=false", "method.afa_weight=1.0")
    rows = [Variant("trades", "cifar10-trades.yaml", epochs(b))]
    for name, over in AFA_ADVERSARIES.items():
        rows.append(Variant(f"afa-trades {name}", at, (*epochs(b), *pinned, *over)))
        for w in AFA_WEIGHTS:
            rows.append(
                Variant(
                    f"afa-trades {name} lambda {w:g}",
                    at,
                    (*epochs(b), *pinned, *over, f"method.afa_weight={w}"),
                )
            )
    return Suite(
        "afa-trades-cost", tuple(rows), common_overrides(b, with_model=True), APGD, description(b)
    )


def description(b: Budget) -> str:
    return (
        f"{b.model} width {b.width}, Linf 8/255, PGD-{b.steps} (step 2/255) training, "
        f"{b.epochs} adversarial epochs per row (pre-training rows: {b.epochs - b.stage2} "
        f"pre-training epochs shared by SLF / ALF / AFF, then {b.stage2} stage-2 epochs, "
        f"clean for SLF, so SLF has {b.epochs - b.stage2} adversarial epochs), batch "
        f"{b.batch_size}, each recipe's optimiser and schedule (warm-up {b.warmup} epochs "
        "where a row warms up)"
    )


SUITES = {
    "budget": budget_suite,
    "ingredients": ingredients_suite,
    "acl": acl_suite,
    "afa-trades-cost": afa_trades_cost_suite,
}


# ------------------------------------------------------------------------------ runs


@dataclass
class Run:
    """One (variant, seed): its overrides (in the order applied) and resolved config."""

    variant: Variant
    seed: int
    overrides: list[str]
    cfg: RunConfig

    @property
    def files(self) -> RunDir:
        return RunDir(self.cfg.run_dir)

    @property
    def label(self) -> str:
        return f"{self.variant.name} (seed {self.seed})"

    def pretrain_key(self) -> str | None:
        """What its pre-training depends on (everything but stage 2 and the run's name)."""
        if self.cfg.classifier is None:
            return None
        d = to_dict(self.cfg)
        for k in ("classifier", "name", "out_dir", "device", "eval"):
            d.pop(k, None)
        return json.dumps(d, sort_keys=True, default=str)


def plan_runs(
    suite: Suite,
    b: Budget,
    seeds: Sequence[int],
    runs_dir: Path,
    *,
    data: Sequence[str],
    tail: Sequence[str],
    device: str,
    tiny: bool = False,
) -> list[Run]:
    """Every (variant, seed) of ``suite``: recipe -> data -> common -> variant -> ``tail``.

    ``tiny`` adds the smoke mode's per-method options (a small head, a 1-step attack).
    """
    runs = []
    tag = "" if suite.name == "budget" else f"-{b.model_tag}"
    for v in suite.variants:
        for seed in seeds:
            head = [*data, *suite.common, *v.overrides]
            method = load_run_config(v.recipe_path, head).method_name
            extra = list(tail)
            if tiny:
                if method in CONTRASTIVE:
                    extra.append("method.head_dim=8")
                if method in ("acl", "dynacl"):
                    extra.append("method.attack_steps=1")
            overrides = [
                *head,
                *extra,
                f"train.seed={seed}",
                f"out_dir={runs_dir}",
                f"name={slug(v.name)}{tag}-e{b.epochs}-s{seed}",
                f"device={device}",
            ]
            runs.append(Run(v, seed, overrides, load_run_config(v.recipe_path, overrides)))
    return runs


def training_done(run: Run) -> bool:
    """``last.pt`` holds the last epoch of the last stage."""
    if not run.files.last.is_file():
        return False
    ckpt = load_checkpoint(run.files.last)
    stages = 2 if run.cfg.classifier is not None else 1
    last_epochs = run.cfg.classifier.epochs if run.cfg.classifier else run.cfg.train.epochs
    return int(ckpt["stage"]["index"]) == stages - 1 and int(ckpt["epoch"]) == last_epochs


def past_pretraining(run: Run) -> bool:
    """``last.pt`` is at the end of pre-training or later."""
    if not run.files.last.is_file():
        return False
    ckpt = load_checkpoint(run.files.last)
    return int(ckpt["global_epoch"]) >= run.cfg.train.epochs


def at_end_of_pretraining(run: Run) -> bool:
    """``last.pt`` is the last pre-training epoch (stage 2 not started)."""
    if not run.files.last.is_file():
        return False
    return int(load_checkpoint(run.files.last)["global_epoch"]) == run.cfg.train.epochs


def train(run: Run, stop_after: int | None = None) -> None:
    """``afa train`` of the run, resumed from ``last.pt`` when it exists.

    ``stop_after`` stops at that global epoch (``fit``'s option; ``train_run`` does not
    forward it, so it is bound here for this call only).
    """
    resume = run.files.last.is_file()
    log.info("%s: %s", run.label, "resuming" if resume else "training")
    if stop_after is None:
        training_plan.train_run(run.cfg, resume=resume)
        return
    bound = functools.partial(training_plan.fit, stop_after=stop_after)
    with mock.patch.object(training_plan, "fit", bound):
        training_plan.train_run(run.cfg, resume=resume)


def keep_pretraining(run: Run) -> None:
    """Copy ``last.pt`` (at the end of pre-training) to ``pretrain.pt`` for other protocols."""
    save_checkpoint(run.files.path / "pretrain.pt", load_checkpoint(run.files.last))


def fork(run: Run, donor: Path) -> None:
    """Start ``run`` from another protocol's ``pretrain.pt`` (same pre-training config).

    The checkpoint's config becomes this run's (they differ only in ``classifier``, which
    pre-training never reads), so resuming continues into this run's own stage 2; the
    donor's pre-training epochs are copied into ``metrics.jsonl``.
    """
    ckpt = load_checkpoint(donor / "pretrain.pt")
    ckpt["config"] = to_dict(run.cfg)
    kept = int(ckpt["global_epoch"])
    rows = [r for r in read_jsonl(donor / "metrics.jsonl") if int(r["global_epoch"]) <= kept]
    run.files.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.files.metrics, "".join(json.dumps(r) + "\n" for r in rows))
    write_json(run.files.path / "pretraining.json", {"pretraining_from": str(donor)})
    save_checkpoint(run.files.last, ckpt)
    log.info("%s: pre-training (%d epochs) taken from %s", run.label, kept, donor)


def eval_file(final: bool) -> str:
    return "eval-autoattack.json" if final else "eval.json"


def eval_matches(path: Path, attacks: Sequence[str], n: int) -> bool:
    """An evaluation file of these attacks on ``n`` examples (or all, when fewer)."""
    if not path.is_file():
        return False
    rec = json.loads(path.read_text())
    names = [a.get("name") for a in rec.get("attacks", {}).values()]
    return names == list(attacks) and rec.get("n_examples") == n


def run_one(
    run: Run,
    *,
    attacks: Sequence[str],
    n: int,
    final: bool,
    sanity: bool,
    donors: dict[str, list[Run]],
    share: bool,
) -> dict[str, Any]:
    """Train (or resume, or skip) and evaluate one run; its row."""
    out = run.files.path / eval_file(final)
    if not eval_matches(out, attacks, n):
        if not training_done(run):
            key = run.pretrain_key()
            if share and key is not None and len(donors.get(key, [])) > 1:
                if not run.files.last.is_file():
                    donor = next(
                        (
                            d.files.path
                            for d in donors[key]
                            if d is not run and (d.files.path / "pretrain.pt").is_file()
                        ),
                        None,
                    )
                    if donor is not None:
                        fork(run, donor)
                if not past_pretraining(run):
                    train(run, stop_after=run.cfg.train.epochs)
                if not (run.files.path / "pretrain.pt").is_file() and at_end_of_pretraining(run):
                    keep_pretraining(run)  # also after an interruption right before it
            train(run)
        log.info("%s: evaluating %s on %d test images", run.label, list(attacks) or "clean", n)
        evaluate_run(
            run.files.path,
            which="best",
            n_examples=n,
            attacks=list(attacks),
            device=run.cfg.device,
            sanity=sanity,
            out=out,
        )
    else:
        log.info("%s: %s exists, skipped", run.label, out.name)
    return build_row(run, json.loads(out.read_text()), out.name)


def build_row(run: Run, rec: dict[str, Any], eval_name: str) -> dict[str, Any]:
    """The results row of a finished run, from its directory alone."""
    cfg = run.cfg
    history = read_jsonl(run.files.metrics)
    stage1 = [r for r in history if r.get("stage_index") == 1]
    forked = run.files.path / "pretraining.json"
    protocol = protocol_of(cfg)
    return {
        "run": cfg.run_dir.name,
        "variant": run.variant.name,
        "seed": run.seed,
        "eval_file": eval_name,
        "recipe": run.variant.recipe,
        "overrides": list(run.variant.overrides),
        "note": run.variant.note,
        "command": shell_command(run.variant, run.overrides),
        "method": cfg.method_name,
        "protocol": protocol,
        "model": cfg.model.name,
        "width": cfg.model.options.get("width"),
        "adv_epochs": adversarial_epochs(cfg),
        "train_epochs": cfg.train.epochs,
        "stage2_epochs": cfg.classifier.epochs if cfg.classifier else 0,
        "batch_size": cfg.train.batch_size,
        "steps": int(history[-1]["global_step"]) if history else None,
        "clean_acc": rec["clean_acc"],
        "robust_acc": rec["robust_acc"] if rec["attacks"] else None,
        "attacks": [a["name"] for a in rec["attacks"].values()],
        "per_attack": {k: a["robust_acc"] for k, a in rec["attacks"].items()},
        "n_eval": rec["n_examples"],
        # per example (evaluation order), for the paired comparisons; absent in old records
        "clean_examples": rec.get("per_example", {}).get("clean"),
        "robust_examples": rec.get("per_example", {}).get("robust"),
        "sanity_failed": sorted(k for k, c in rec.get("sanity", {}).items() if not c["passed"]),
        "eval_s": rec["time_s"],
        # epoch times of the loop (training only): what a resumed run costs in all
        "train_s": sum(float(r.get("time_s", 0.0)) for r in history),
        "probe_val_clean_by_epoch": [
            round(float(r["val/clean_acc"]), 4) for r in stage1 if "val/clean_acc" in r
        ],
        "pretraining_from": json.loads(forked.read_text())["pretraining_from"]
        if forked.is_file()
        else None,
        **contrastive_summary(history),
    }


# ------------------------------------------------------------------------------ estimate

#: Seconds per 50,000-image epoch, width-32 CNN, PGD-5, 2 CPU cores, as given when the
#: measurement was planned: standard 38, PGD-5 AT 190, AFA 280, AFA+TRADES 550. SupCon
#: and TRADES from those by the step-time ratios measured here (bench_training_step.py,
#: cnn w32, CIFAR-shaped, batch 256, PGD-5, 1 thread, load 1.1-1.4: supcon 3.1 x standard,
#: trades 1.29 x PGD-AT; the same run measured afa 1.50 and afa-trades 2.55 x PGD-AT, and
#: every absolute time 2.3x the figures above). ACL / DynACL, not measured: two views
#: through the attack and two clean views, about 2 x PGD-AT. ``--cost-scale`` multiplies
#: all of them (2.3 for one thread on this machine).
EPOCH_S = {
    "standard": 38.0,
    "pgd-at": 190.0,
    "afa": 280.0,
    "afa-trades": 550.0,
    "supcon": 118.0,
    "trades": 245.0,
    "mart": 217.0,
    "acl": 380.0,
    "dynacl": 380.0,
}
#: Stage 2 per 50,000-image epoch: a clean probe is one forward without weight gradients
#: (about a third of a clean step), the others are PGD-AT and TRADES epochs.
STAGE2_S = {"SLF": 13.0, "ALF": 190.0, "AFF": 228.0}
#: One attack step on one image, width-32 CNN (2/3 of a training step of 38 s / 50,000).
ATTACK_STEP_S = 0.5e-3


def afa_trades_epoch_s(method: dict[str, Any], steps: int) -> float:
    """``EPOCH_S`` of afa-trades with its AFA adversary: TRADES plus the separate adversary's
    share (``EPOCH_S["afa-trades"]`` is two PGD-k attacks) in proportion to its forward and
    backward passes, (afa_steps + 1) / (steps + 1); the shared adversary adds one forward.
    Measured at PGD-5, width 16 (docs/results.md): one AFA step 1.35 x TRADES, this 1.42."""
    trades = EPOCH_S["trades"]
    if method.get("shared_adversary"):
        return trades * 1.04
    afa_steps = method.get("afa_steps")
    share = 1.0 if afa_steps is None else min(1.0, (int(afa_steps) + 1) / (steps + 1))
    return trades + (EPOCH_S["afa-trades"] - trades) * share


@functools.cache
def model_scale(name: str, width: int) -> float:
    """Forward FLOPs of the model on one 32x32 image relative to the width-32 CNN."""
    from torch.utils.flop_counter import FlopCounterMode

    from afa.models.registry import create_model

    def flops(n: str, w: int) -> int:
        m = create_model(
            n, 10, in_channels=3, image_size=32, mean=[0.5] * 3, std=[0.5] * 3, width=w
        )
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            m.eval()(torch.zeros(1, 3, 32, 32))
        return counter.get_total_flops()

    return flops(name, width) / flops("cnn", 32)


def estimate_s(
    run: Run, attacks: Sequence[str], n: int, shared: bool, cost_scale: float = 1.0
) -> float:
    """Estimated seconds of one run (training and evaluation), ``EPOCH_S`` x ``cost_scale``."""
    cfg = run.cfg
    images: float = N_TRAIN_ALL - N_TEST - N_VAL
    if (size := cfg.data.train_size) is not None:
        images = size * images if isinstance(size, float) and size <= 1 else float(size)
    scale = model_scale(cfg.model.name, int(cfg.model.options.get("width", 32))) * images / 5e4
    per = EPOCH_S.get(cfg.method_name, 280.0)
    if cfg.method_name == "afa-trades":
        per = afa_trades_epoch_s(cfg.method, int(cfg.threat.steps))
    if cfg.method.get("clean_term", "none") != "none":
        per += EPOCH_S["standard"]  # one more clean view through the network
    if cfg.data.augment == "contrastive":
        per *= 1.1
    total = 0.0 if shared else per * cfg.train.epochs
    if cfg.classifier is not None:
        total += STAGE2_S.get(protocol_of(cfg) or "", 190.0) * cfg.classifier.epochs
    total *= scale
    # APGD-CE 100 iterations on every image, APGD-T 9 x 100 on the ~40% still robust;
    # AutoAttack standard adds FAB-T and Square (5,000 queries): about 3x that
    if attacks:
        steps = n * 100 + 0.4 * n * 900 * ("apgd-t" in attacks or "autoattack" in attacks)
        total += (
            steps
            * ATTACK_STEP_S
            * model_scale(cfg.model.name, int(cfg.model.options.get("width", 32)))
            * (3 if "autoattack" in attacks else 1)
        )
    return total * cost_scale


def dry_run(
    runs: Sequence[Run],
    every: Sequence[Run],
    attacks: Sequence[str],
    n: int,
    final: bool,
    share: bool,
    cost_scale: float = 1.0,
) -> float:
    """Print every run's command and its estimated time; the total.

    A run's pre-training counts as shared when an earlier run of ``runs`` trains it or a run
    of the suite (``every``) already keeps it in ``pretrain.pt``.
    """
    seen = {
        key
        for r in every
        if (key := r.pretrain_key()) is not None and (r.files.path / "pretrain.pt").is_file()
    }
    total = 0.0
    for run in runs:
        key = run.pretrain_key()
        shared = share and key is not None and key in seen
        if key is not None:
            seen.add(key)
        done = eval_matches(run.files.path / eval_file(final), attacks, n)
        est = 0.0 if done else estimate_s(run, attacks, n, shared, cost_scale)
        total += est
        state = "done" if done else ("resume" if run.files.last.is_file() else "new")
        extra = ", pre-training shared" if shared else ""
        print(
            f"# {run.label}: {adversarial_epochs(run.cfg)} adv epochs, ~{est / 3600:.1f} h "
            f"({state}{extra})"
        )
        print(shell_command(run.variant, run.overrides))
    print(f"# total ~{total / 3600:.1f} h (EPOCH_S per-epoch costs x {cost_scale:g})")
    return total


# ------------------------------------------------------------------------------ tables


def fmt(x: float | None, scale: float = 100.0, d: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{scale * x:.{d}f}"


def pm(values: Sequence[float | None]) -> str:
    vals = [100 * v for v in values if v is not None]
    if not vals:
        return "–"
    m, s = mean_std(vals)
    return f"{m:.1f} ± {s:.1f}" if len(vals) > 1 else f"{m:.1f}"


def binomial_ci95(values: Sequence[float | None], n: int) -> str:
    """Half-width (points) of the normal-approximation 95% interval of the mean accuracy on
    ``n`` test images: the test-set sampling error alone, not the spread over seeds."""
    vals = [v for v in values if v is not None]
    if not vals or n <= 0:
        return "–"
    p = sum(vals) / len(vals)
    return f"±{100 * 1.96 * math.sqrt(p * (1 - p) / n):.1f}"


def series(values: Sequence[float] | None) -> str:
    return " ".join(f"{v:.2f}" for v in values or []) or "–"


def grouped(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    """Rows by (variant, evaluation file, adversarial epochs), seeds together, in order."""
    out: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["variant"], r["eval_file"], r["adv_epochs"]), []).append(r)
    return out


def budget_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| model | epochs (pre-training + probe) | steps | batch | probe clean % (test) "
        "| loss / chance by epoch | cos_gap by epoch | collapse warning | train min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} w{r['width']} | {r['train_epochs']} + {r['stage2_epochs']} "
            f"| {r['steps']} | {r['batch_size']} | {fmt(r['clean_acc'])} "
            f"| {series(r.get('loss_over_chance_by_epoch'))} "
            f"| {series(r.get('cos_gap_by_epoch'))} "
            f"| {'yes' if r.get('collapse_warning') else 'no'} | {r['train_s'] / 60:.0f} |"
        )
    return "\n".join(lines)


def robust_table(rows: Sequence[dict[str, Any]], label: str) -> str:
    """Mean ± std over seeds; the clean and robust gap to standard training in points."""
    groups = grouped(rows)
    std = [r for (v, _, _), rs in groups.items() if v == "standard" for r in rs]
    std_clean = mean_std([100 * r["clean_acc"] for r in std])[0] if std else None
    lines = [
        f"| row | adv epochs | clean % | {label} % | robust 95% (test sampling) "
        "| clean gap to standard (pts) | seeds | final loss / chance | final cos_gap "
        "| collapse warning | sanity failed | train h |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (variant, _, adv), rs in groups.items():
        clean = mean_std([100 * r["clean_acc"] for r in rs])[0]
        gap = "–" if std_clean is None or variant == "standard" else f"{std_clean - clean:.1f}"
        loc = " / ".join(fmt(r.get("loss_over_chance"), 1, 3) for r in rs if "cos_gap" in r)
        gaps = " / ".join(fmt(r.get("cos_gap"), 1, 3) for r in rs if "cos_gap" in r)
        warn = " / ".join("yes" if r["collapse_warning"] else "no" for r in rs if "cos_gap" in r)
        bad = ", ".join(sorted({s for r in rs for s in r["sanity_failed"]}))
        lines.append(
            f"| {variant} | {adv} | {pm([r['clean_acc'] for r in rs])} "
            f"| {pm([r['robust_acc'] for r in rs])} "
            f"| {binomial_ci95([r['robust_acc'] for r in rs], rs[0]['n_eval'])} "
            f"| {gap} | {len(rs)} | {loc or '–'} "
            f"| {gaps or '–'} | {warn or '–'} | {bad or '–'} "
            f"| {sum(r['train_s'] for r in rs) / len(rs) / 3600:.2f} |"
        )
    return "\n".join(lines)


#: The baselines every AFA row (a variant named ``afa...``) is compared with, example by
#: example, when both rows have per-example results on the same images.
PAIRED_BASELINES = ("trades", "pgd-at")


def paired_difference(
    a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], key: str
) -> tuple[float, float, list[float]] | None:
    """Row group ``a`` minus ``b`` on the same test images, in points: the difference of the
    seed means, the half-width of its paired 95% interval over the test images (each
    example's seed-mean correctness in ``a`` minus in ``b``; test sampling only, not the
    spread over seeds) and the difference per common seed. ``None`` when a record lacks
    ``key`` (``clean_examples`` or ``robust_examples``) or the images differ in number."""
    flags = [[r.get(key) for r in rs] for rs in (a, b)]
    if any(f is None for fs in flags for f in fs) or len({len(f) for fs in flags for f in fs}) != 1:
        return None
    means = [np.mean([[c == "1" for c in f] for f in fs], axis=0) for fs in flags]
    d = means[0] - means[1]
    half = 1.96 * float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    by_seed = [{r["seed"]: r[key] for r in rs} for rs in (a, b)]
    per_seed = [
        100 * (by_seed[0][s].count("1") - by_seed[1][s].count("1")) / len(d)
        for s in sorted(set(by_seed[0]) & set(by_seed[1]))
    ]
    return 100 * float(d.mean()), 100 * half, per_seed


def paired_table(rows: Sequence[dict[str, Any]]) -> str:
    """Every AFA row against each baseline of ``PAIRED_BASELINES`` present, paired per example;
    empty when no pair has per-example results."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["variant"], []).append(r)
    lines = []
    for variant, rs in groups.items():
        if not variant.startswith("afa"):
            continue
        for base in PAIRED_BASELINES:
            if base not in groups:
                continue
            cells = []
            for key in ("robust_examples", "clean_examples"):
                diff = paired_difference(rs, groups[base], key)
                if diff is None:
                    break
                mean, half, per_seed = diff
                seeds = " / ".join(f"{v:+.1f}" for v in per_seed) or "–"
                cells.append(f"{mean:+.1f} | ±{half:.1f} | {seeds}")
            if len(cells) == 2:
                lines.append(f"| {variant} − {base} | {cells[0]} | {cells[1]} |")
    if not lines:
        return ""
    head = [
        "| pair | robust Δ (pts) | paired 95% | Δ per seed | clean Δ (pts) | paired 95% "
        "| Δ per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    return "\n".join(head + lines)


def markdown(record: dict[str, Any]) -> str:
    rows = record["runs"]
    parts = [
        f"# CIFAR-10 contrastive measurement: suite `{record['suite']}`",
        "",
        f"**{record['header']}.** {record['description']}.",
        "",
        "Written by `benchmarks/cifar_contrastive.py`; every row's exact `afa train` command "
        "is in the JSON beside this file.",
        "",
    ]
    for name in ("eval.json", "eval-autoattack.json"):
        sub = [r for r in rows if r["eval_file"] == name]
        if not sub:
            continue
        if record["suite"] == "budget":
            parts += ["Linear-probe (SLF) clean accuracy on the held-out test images.", ""]
            parts += [budget_table(sub), ""]
            continue
        label = " | ".join(sorted({robust_label(r["attacks"]) for r in sub}))
        n = sorted({r["n_eval"] for r in sub})
        parts += [
            f"Robust: {label} (worst case per example) on the first "
            f"{', '.join(f'{k:,}' for k in n)} test images; eps 8/255 Linf.",
            "",
            robust_table(sub, label),
            "",
        ]
        if paired := paired_table(sub):
            parts += [
                "Paired on the same test images: the difference of the seed means, the 95% "
                "interval of that difference over the test images (test sampling only; the "
                "per-seed differences show the spread over seeds).",
                "",
                paired,
                "",
            ]
    if record.get("warnings"):
        parts += [f"Warning: {w}" for w in record["warnings"]] + [""]
    if record.get("failed"):
        parts += [f"Failed: {f['run']}: {f['error']}" for f in record["failed"]] + [""]
    return "\n".join(parts)


def write_results(out: Path, record: dict[str, Any]) -> None:
    """The JSON (atomically) and the markdown regenerated from it."""
    write_json(out, record)
    atomic_write_text(out.with_suffix(".md"), markdown(record))


def merged(out: Path, suite: Suite, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of earlier invocations (same suite) and these, keyed by run and evaluation, in
    the suite's order of variants, then by seed (rows of variants it no longer has last)."""
    old = []
    if out.is_file():
        prev = json.loads(out.read_text())
        if prev.get("suite") == suite.name:
            old = prev.get("runs", [])
    new = {(r["run"], r["eval_file"]): r for r in rows}
    kept = [r for r in old if (r["run"], r["eval_file"]) not in new]
    rank = {v.name: i for i, v in enumerate(suite.variants)}
    return sorted(kept + list(rows), key=lambda r: (rank.get(r["variant"], len(rank)), r["seed"]))


# ------------------------------------------------------------------------------ main


def data_overrides(root: str, cache: str) -> list[str]:
    """The data of every row: the CIFAR-10 JPEG copy at ``root`` read by ``imagefolder``,
    5,000 test and 1,000 validation images held out of train (stratified, fixed seeds)."""
    return [
        "data.name=imagefolder",
        f"data.root={root}",
        f"data.cache_dir={cache}",
        "data.image_size=32",
        f"data.test_size={N_TEST}",
        f"data.val_size={N_VAL}",
        "data.split_seed=0",
    ]


def train_label(size: int | float | None) -> str:
    """The training images of the rows: all that the test and validation splits leave, or
    the stratified subset ``data.train_size`` keeps of them."""
    rest = N_TRAIN_ALL - N_TEST - N_VAL
    if size is None:
        return f"train = all {rest:,} left"
    n = round(size * rest) if isinstance(size, float) and size <= 1 else int(size)
    return f"train = {n:,} of the {rest:,} left (stratified)"


def tiny_tail(data: Sequence[str]) -> tuple[list[str], int]:
    """Overrides of ``--tiny`` and the test-split size: width 4, 1 epoch per stage, PGD-1,
    a 20% test and 10% validation split, at most 1,000 training images."""
    tail = [
        "data.test_size=0.2",
        "data.val_size=0.1",
        "model.options={width: 4}",
        "threat.steps=1",
        "train.val_examples=16",
    ]
    probe = load_run_config(SRC / "afa" / "configs" / "cifar10-standard.yaml", [*data, *tail])
    splits = load_splits(probe.data)
    if len(splits.train) > 1000:
        tail.append("data.train_size=1000")
    return tail, len(splits.test)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", choices=sorted(SUITES), required=True)
    p.add_argument("--data", default=DEFAULT_DATA, help="the CIFAR-10 ImageFolder tarball")
    p.add_argument("--runs", default="runs/cifar-contrastive", help="runs go to RUNS/<suite>")
    p.add_argument("--cache-dir", default=None, help="decoded-image cache (RUNS/data-cache)")
    p.add_argument(
        "--out",
        default=None,
        help="JSON (markdown beside it); default benchmarks/results/cifar-contrastive-<suite>.json",
    )
    p.add_argument("--epochs", type=int, default=None, help="E (budget 30, else 20)")
    p.add_argument("--stage2-epochs", type=int, default=None, help="k (round(E / 4))")
    p.add_argument("--warmup", type=int, default=None, help="warm-up epochs (round(E / 10))")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--model", default="cnn", help="ingredients / acl rows")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--n", type=int, default=1000, help="test images evaluated")
    p.add_argument("--attacks", nargs="+", default=None, help="evaluation attacks")
    p.add_argument("--final", action="store_true", help="AutoAttack standard (+ sanity)")
    p.add_argument("--sanity", action="store_true", help="gradient-masking sanity checks")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", nargs="+", default=None, help="row names or glob patterns")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="key=value",
        help="extra overrides for every run (after the row's)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-share", action="store_true", help="ALF / AFF pre-train separately")
    p.add_argument("--dry-run", action="store_true", help="print commands and estimates only")
    p.add_argument(
        "--cost-scale", type=float, default=1.0, help="x the estimates (2.3: 1 thread here)"
    )
    p.add_argument("--tiny", action="store_true", help="smoke mode (tests)")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    e = args.epochs or (2 if args.tiny else 30 if args.suite == "budget" else 20)
    k = args.stage2_epochs or (1 if args.tiny else max(1, round(e / 4)))
    if not 0 < k < e:
        raise SystemExit(f"--stage2-epochs {k}: expected between 1 and --epochs - 1 ({e - 1})")
    b = Budget(
        e,
        k,
        args.warmup if args.warmup is not None else max(1, round(e / 10)),
        32 if args.tiny else args.batch_size,
        args.model,
        args.width if not args.tiny else 4,
        1 if args.tiny else 5,
    )
    suite = SUITES[args.suite](b)
    runs_root = Path(args.runs)
    cache = args.cache_dir or str(runs_root / "data-cache")
    data = data_overrides(args.data, cache)
    tail: list[str] = []
    n_test = N_TEST
    if args.tiny:
        tail, n_test = tiny_tail(data)
    tail += list(args.set)
    attacks = tuple(args.attacks or (("autoattack",) if args.final else suite.attacks))
    if args.tiny and args.attacks is None and attacks:
        attacks = ("apgd-ce",)  # APGD-T's 9 x 100 iterations dominate a smoke test
    if args.suite == "budget":
        attacks = ()
    n = min(args.n, n_test)
    # ingredients and acl share their rows (pgd-at, trades, afa, afa-trades) by name
    runs_dir = runs_root / ("budget" if suite.name == "budget" else "adversarial")
    every = plan_runs(
        suite, b, args.seeds, runs_dir, data=data, tail=tail, device=args.device, tiny=args.tiny
    )
    pats = args.variants
    runs = [
        r for r in every if pats is None or any(fnmatch.fnmatch(r.variant.name, q) for q in pats)
    ]
    if not runs:
        raise SystemExit(f"--variants {pats}: no row; rows: {[v.name for v in suite.variants]}")
    share = not args.no_share
    final = args.final
    if args.dry_run:
        dry_run(runs, every, attacks, n, final, share, args.cost_scale)
        return 0
    donors: dict[str, list[Run]] = {}
    for r in every:
        if (key := r.pretrain_key()) is not None:
            donors.setdefault(key, []).append(r)
    default_out = (
        runs_root / f"cifar-contrastive-{suite.name}-tiny.json"
        if args.tiny
        else (BENCH / "results" / f"cifar-contrastive-{suite.name}.json")
    )
    out = Path(args.out) if args.out else default_out
    header = (
        f"{HEADER}, validation = {N_VAL:,} held out of train, "
        f"{train_label(runs[0].cfg.data.train_size)}"
        if not args.tiny
        else f"TINY SMOKE RUN on {args.data}, test = {n_test:,} held out of train"
    )
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    t0 = time.perf_counter()

    def record() -> dict[str, Any]:
        all_rows = merged(out, suite, rows)
        return {
            "suite": suite.name,
            "header": header,
            "n_test": n_test,
            "description": suite.description,
            "budget": dataclasses.asdict(b),
            "attacks": list(attacks),
            "robust_metric": (robust_label(attacks) if attacks else "clean only")
            + " (worst case per example, afa.evaluation.evaluate_run)",
            "common_overrides": [*data, *suite.common, *tail],
            "runs": all_rows,
            # standard has none and SLF's clean stage 2 has k fewer, by design
            "warnings": check_budget(
                [], [r for r in all_rows if r["variant"] != "standard" and r["protocol"] != "SLF"]
            ),
            "failed": failed,
            "wall_s": time.perf_counter() - t0,
            "environment": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "threads": torch.get_num_threads(),
                "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            },
        }

    for run in runs:
        try:
            row = run_one(
                run,
                attacks=attacks,
                n=n,
                final=final,
                sanity=args.sanity or final,
                donors=donors,
                share=share,
            )
        except Exception as exc:  # an unattended suite goes on with the next run
            log.error("%s failed: %s\n%s", run.label, exc, traceback.format_exc())
            failed.append({"run": run.cfg.run_dir.name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        rows.append(row)
        log.info(
            "%s: adv %d, clean %.1f, robust %s, cos_gap %s",
            run.label,
            row["adv_epochs"],
            100 * row["clean_acc"],
            fmt(row["robust_acc"]),
            row.get("cos_gap"),
        )
        write_results(out, record())
    rec = record()
    write_results(out, rec)
    print(markdown(rec))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
