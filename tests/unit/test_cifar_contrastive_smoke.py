"""benchmarks/cifar_contrastive.py end to end in its ``--tiny`` mode, on an ImageFolder tree
made here (10 classes x 12 PNG images of 32x32): one row of each suite, the pre-training
shared by SLF / ALF / AFF and by the two adversarial suites, the JSON and markdown, and the
second invocation that skips.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from benchmark_modules import load_benchmark  # tests/benchmark_modules.py

from afa.runs import load_checkpoint

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load() -> ModuleType:
    return load_benchmark("cifar_contrastive")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/train/<class>/<i>.png``: each class a different mean colour plus noise."""
    from PIL import Image

    root = tmp_path_factory.mktemp("cifar") / "tiny-cifar"
    rng = np.random.default_rng(0)
    for c in range(10):
        folder = root / "train" / f"class{c}"
        folder.mkdir(parents=True)
        base = rng.integers(0, 256, size=3)
        for i in range(12):
            img = np.clip(base + rng.normal(0, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i:04d}.png")
    return root


def argv(
    tree: Path, tmp: Path, suite: str, *variants: str, extra: tuple[str, ...] = ()
) -> list[str]:
    return [
        "--suite",
        suite,
        "--tiny",
        "--data",
        str(tree),
        "--runs",
        str(tmp / "runs"),
        "--out",
        str(tmp / f"{suite}.json"),
        "--device",
        "cpu",
        "--variants",
        *variants,
        *extra,
    ]


def test_one_row_of_each_suite_then_skips(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cc = load()
    calls = {
        "budget": argv(tree, tmp_path, "budget", "supcon cnn w32"),
        "ingredients": argv(tree, tmp_path, "ingredients", "afa baseline *"),
        "acl": argv(tree, tmp_path, "acl", "acl SLF"),
    }
    records = {}
    for suite, args in calls.items():
        assert cc.main(args) == 0, suite
        records[suite] = json.loads((tmp_path / f"{suite}.json").read_text())

    # budget: clean SupCon + probe; clean accuracy only, per-epoch collapse indicators
    (row,) = records["budget"]["runs"]
    assert row["method"] == "supcon" and row["robust_acc"] is None and row["adv_epochs"] == 0
    assert row["train_epochs"] == 1 and row["stage2_epochs"] == 1  # E - k pre-training epochs
    assert len(row["cos_gap_by_epoch"]) == 1 and len(row["loss_over_chance_by_epoch"]) == 1
    assert len(row["probe_val_clean_by_epoch"]) == 1
    assert row["steps"] == 2 * 2  # 2 epochs of 86 images at batch 32 (partial batch dropped)
    md = (tmp_path / "budget.md").read_text()
    assert "TINY SMOKE RUN" in md and md.count("\n| cnn w4 |") == 1

    # ingredients: one AFA row under the three protocols, one pre-training of E - k epochs;
    # ALF / AFF spend E adversarial epochs, SLF's stage 2 is clean
    rows = {r["variant"]: r for r in records["ingredients"]["runs"]}
    assert set(rows) == {"afa baseline SLF", "afa baseline ALF", "afa baseline AFF"}
    assert {k: r["adv_epochs"] for k, r in rows.items()} == {
        "afa baseline SLF": 1,
        "afa baseline ALF": 2,
        "afa baseline AFF": 2,
    }
    assert {r["train_epochs"] for r in rows.values()} == {1}
    assert records["ingredients"]["warnings"] == []
    for r in rows.values():
        assert 0.0 <= r["robust_acc"] <= r["clean_acc"] <= 1.0
        assert r["n_eval"] == 24  # 20% of 120 held out as the test split
        assert list(r["per_attack"]) == ["AutoAttack (apgd-ce)"]
        assert isinstance(r["collapse_warning"], bool)
    # SLF trained the pre-training and kept it; ALF and AFF resumed from it
    run_dir = tmp_path / "runs" / "adversarial"
    first = run_dir / rows["afa baseline SLF"]["run"]
    assert (first / "pretrain.pt").is_file()
    assert rows["afa baseline SLF"]["pretraining_from"] is None
    for p in ("ALF", "AFF"):
        assert rows[f"afa baseline {p}"]["pretraining_from"] == str(first)
        assert rows[f"afa baseline {p}"]["cos_gap"] == rows["afa baseline SLF"]["cos_gap"]
    md = (tmp_path / "ingredients.md").read_text()
    assert md.count("\n| afa baseline ") == 3 and "| APGD-CE % |" in md

    (acl,) = records["acl"]["runs"]
    assert acl["method"] == "acl" and acl["protocol"] == "SLF" and acl["adv_epochs"] == 1
    assert "train.optimizer.lr=0.3125" in acl["command"]  # LARS lr 5.0 x 32 / 512

    # a second invocation trains and evaluates nothing and reports the same rows
    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(cc.training_plan, "train_run", refuse)
    monkeypatch.setattr(cc, "evaluate_run", refuse)
    for suite, args in calls.items():
        assert cc.main(args) == 0
        again = json.loads((tmp_path / f"{suite}.json").read_text())
        assert again["runs"] == records[suite]["runs"], suite
        assert again["failed"] == []
    # the acl suite reads the AFA rows the ingredients suite measured
    shared = argv(tree, tmp_path, "acl", "afa baseline *")
    shared[shared.index("--out") + 1] = str(tmp_path / "acl-afa.json")
    assert cc.main(shared) == 0
    rows_acl = json.loads((tmp_path / "acl-afa.json").read_text())["runs"]
    assert rows_acl == records["ingredients"]["runs"]


def test_shared_pretraining_equals_a_run_of_its_own(tree: Path, tmp_path: Path) -> None:
    """AFF forked from ALF's pre-training ends with the weights of an AFF trained alone."""
    cc = load()
    shared = tmp_path / "shared"
    alone = tmp_path / "alone"
    assert cc.main(argv(tree, shared, "ingredients", "afa baseline ALF", "afa baseline AFF")) == 0
    assert cc.main(argv(tree, alone, "ingredients", "afa baseline AFF", extra=("--no-share",))) == 0
    name = json.loads((alone / "ingredients.json").read_text())["runs"][0]["run"]
    a = load_checkpoint(shared / "runs" / "adversarial" / name / "last.pt")
    b = load_checkpoint(alone / "runs" / "adversarial" / name / "last.pt")
    assert not (alone / "runs" / "adversarial" / name / "pretraining.json").exists()
    assert (shared / "runs" / "adversarial" / name / "pretraining.json").exists()
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_dry_run_prints_every_command_and_trains_nothing(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cc = load()
    assert cc.main(argv(tree, tmp_path, "acl", "*", extra=("--dry-run",))) == 0
    out = capsys.readouterr().out
    names = [v.name for v in cc.acl_suite(cc.Budget(2, 1, 1)).variants]
    assert out.count("afa train ") == len(names) == 19
    assert "pre-training shared" in out and "# total ~" in out
    assert not (tmp_path / "runs" / "acl").exists()


def test_estimate_follows_the_readme_costs() -> None:
    """At the real budget: a PGD-AT row is 20 x 190 s x 44,000 / 50,000 plus its evaluation."""
    cc = load()
    b = cc.Budget(20, 5, 2)
    suite = cc.ingredients_suite(b)
    runs = cc.plan_runs(suite, b, [0], Path("/nonexistent"), data=[], tail=[], device="cpu")
    pgd = next(r for r in runs if r.variant.name == "pgd-at")
    train = 20 * 190 * 44_000 / 50_000
    evals = (1000 * 100 + 0.4 * 1000 * 900) * cc.ATTACK_STEP_S
    assert cc.estimate_s(pgd, cc.APGD, 1000, shared=False) == pytest.approx(train + evals)
    assert cc.model_scale("cnn", 64) > 3 * cc.model_scale("cnn", 32)


def test_afa_trades_estimate_follows_its_afa_adversary() -> None:
    """Two PGD-k attacks cost EPOCH_S["afa-trades"]; one AFA step adds 2 / (k + 1) of the
    second attack's share to TRADES; the shared adversary about nothing. The recipe's row
    (one AFA step) is planned at the one-step cost."""
    cc = load()
    trades, separate = cc.EPOCH_S["trades"], cc.EPOCH_S["afa-trades"]
    assert cc.afa_trades_epoch_s({"afa_steps": None}, 5) == separate
    one = cc.afa_trades_epoch_s({"afa_steps": 1}, 5)
    assert one == pytest.approx(trades + (separate - trades) / 3)
    assert cc.afa_trades_epoch_s({"shared_adversary": True}, 5) == pytest.approx(1.04 * trades)
    b = cc.Budget(20, 5, 2)
    runs = cc.plan_runs(
        cc.ingredients_suite(b), b, [0], Path("/nonexistent"), data=[], tail=[], device="cpu"
    )
    row = next(r for r in runs if r.variant.name == "afa-trades")
    assert row.cfg.method["afa_steps"] == 1 and row.cfg.threat.steps == 5
    train = 20 * one * 44_000 / 50_000
    assert cc.estimate_s(row, (), 0, shared=False) == pytest.approx(train)


def test_an_interrupted_run_resumes_from_last_pt(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cc = load()
    args = argv(tree, tmp_path, "ingredients", "pgd-at")
    fit = cc.training_plan.fit
    with monkeypatch.context() as m:  # the first call stops after 1 of 2 epochs
        m.setattr(cc.training_plan, "fit", lambda *a, **k: fit(*a, **{**k, "stop_after": 1}))
        assert cc.main(args) == 0
    (row,) = json.loads((tmp_path / "ingredients.json").read_text())["runs"]
    run = tmp_path / "runs" / "adversarial" / row["run"]
    assert row["steps"] == 2 and load_checkpoint(run / "last.pt")["global_epoch"] == 1
    (run / "eval.json").unlink()
    resumed = []
    train_run = cc.training_plan.train_run
    monkeypatch.setattr(
        cc.training_plan,
        "train_run",
        lambda cfg, **k: resumed.append(k["resume"]) or train_run(cfg, **k),
    )
    assert cc.main(args) == 0
    assert resumed == [True]
    (row,) = json.loads((tmp_path / "ingredients.json").read_text())["runs"]
    assert row["steps"] == 4 and load_checkpoint(run / "last.pt")["global_epoch"] == 2
    assert [r["epoch"] for r in cc.read_jsonl(run / "metrics.jsonl")] == [1, 2]


def test_robust_interval_is_the_binomial_half_width() -> None:
    """The tables' 95% column: 1.96 sqrt(p (1 - p) / n) of the seeds' mean, in points."""
    cc = load()
    assert cc.binomial_ci95([0.5], 1000) == "±3.1"
    assert cc.binomial_ci95([0.14, 0.16], 2000) == "±1.6"  # p = 0.15
    assert cc.binomial_ci95([None], 1000) == "–"


def test_merged_rows_follow_the_suite_order(tmp_path: Path) -> None:
    """A table written over several invocations lists its rows in the suite's order of
    variants, then by seed; a re-measured row replaces its old record."""
    cc = load()
    suite = cc.Suite(
        "s", (cc.Variant("a", "x.yaml"), cc.Variant("b", "x.yaml")), (), (), "description"
    )

    def row(variant: str, seed: int, acc: float) -> dict[str, object]:
        run = f"{variant}-s{seed}"
        return {"run": run, "eval_file": "eval.json", "variant": variant, "seed": seed, "acc": acc}

    out = tmp_path / "t.json"
    out.write_text(json.dumps({"suite": "s", "runs": [row("b", 0, 0.1), row("a", 1, 0.2)]}))
    rows = cc.merged(out, suite, [row("a", 1, 0.3), row("a", 0, 0.4), row("gone", 0, 0.5)])
    assert [(r["variant"], r["seed"], r["acc"]) for r in rows] == [
        ("a", 0, 0.4),
        ("a", 1, 0.3),
        ("b", 0, 0.1),
        ("gone", 0, 0.5),
    ]


def test_paired_difference_against_a_loop() -> None:
    """The paired comparison of two rows on the same images: the seed means' difference, its
    95% half-width 1.96 s / sqrt(n) over the per-example differences, the per-seed gaps;
    the table lists AFA rows against the baselines present, and nothing without flags."""
    cc = load()
    rng = np.random.default_rng(0)
    n = 400

    def rows(variant: str, p: float) -> list[dict[str, object]]:
        return [
            {
                "variant": variant,
                "seed": seed,
                "robust_examples": "".join("1" if v else "0" for v in rng.random(n) < p),
                "clean_examples": "".join("1" if v else "0" for v in rng.random(n) < 2 * p),
            }
            for seed in (0, 1)
        ]

    a, b = rows("afa-trades", 0.2), rows("trades", 0.15)
    mean, half, per_seed = cc.paired_difference(a, b, "robust_examples")
    d = []
    for i in range(n):
        ai = sum(int(r["robust_examples"][i]) for r in a) / 2
        bi = sum(int(r["robust_examples"][i]) for r in b) / 2
        d.append(ai - bi)
    m = sum(d) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
    assert mean == pytest.approx(100 * m) and half == pytest.approx(100 * 1.96 * sd / math.sqrt(n))
    for seed in (0, 1):
        gap = a[seed]["robust_examples"].count("1") - b[seed]["robust_examples"].count("1")
        assert per_seed[seed] == pytest.approx(100 * gap / n)
    table = cc.paired_table([*a, *b, *rows("pgd-at", 0.2)])
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == [
        "| afa-trades − trades",
        "| afa-trades − pgd-at",
    ]
    old = [{**r, "robust_examples": None} for r in a]
    assert cc.paired_difference(old, b, "robust_examples") is None
    assert cc.paired_table([*old, *b]) == ""


def test_header_names_the_training_images() -> None:
    """Every table says what it trained on: all 44,000 images left, or the subset kept."""
    cc = load()
    assert cc.train_label(None) == "train = all 44,000 left"
    assert cc.train_label(10000) == "train = 10,000 of the 44,000 left (stratified)"
    assert cc.train_label(0.5) == "train = 22,000 of the 44,000 left (stratified)"
    data = cc.data_overrides("copy.tar.gz", "cache")
    assert "data.test_size=5000" in data and "data.val_size=1000" in data
    assert not any(d.startswith("data.train_size") for d in data)


ARGV_STUB = """#!/usr/bin/env bash
# records each call's arguments, one call a line, fields separated by the unit separator
printf '%s\\x1f' "$@" >> "$STUB_LOG"
printf '\\n' >> "$STUB_LOG"
"""


def test_full_table_script_rows_resolve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/cifar_full_table.sh: its calls in priority order name existing rows of all
    44,000 images at 30 epochs, AutoAttack on 2,000; each call's dry run plans its row; then
    the alignment measurement of every row's run directory."""
    cc = load()
    stub = tmp_path / "python"
    stub.write_text(ARGV_STUB)
    stub.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "PYTHON": str(stub), "STUB_LOG": str(log), "RUNS": str(tmp_path / "r")}
    proc = subprocess.run(
        ["bash", str(BENCH / "cifar_full_table.sh")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "step failed" not in proc.stdout, proc.stdout + proc.stderr
    *calls, align = [line.split("\x1f")[:-1] for line in log.read_text().splitlines()]
    assert all(c[0] == "benchmarks/cifar_contrastive.py" for c in calls)
    assert align[0] == "benchmarks/alignment_table.py"
    assert align[align.index("--runs") + 1] == f"{tmp_path / 'r'}/adversarial/*"
    assert align[align.index("--n") + 1] == "1000"
    order = [(c[c.index("--variants") + 1], c[c.index("--seeds") + 1]) for c in calls]
    assert order == [
        ("standard", "0"),
        ("pgd-at", "0"),
        ("afa-trades", "0"),
        ("trades", "0"),
        ("afa baseline ALF", "0"),
        ("trades", "1"),
        ("afa-trades", "1"),
        ("pgd-at", "1"),
    ]
    for c in calls:
        assert c[c.index("--epochs") + 1] == "30" and c[c.index("--n") + 1] == "2000"
        assert "--final" in c and "--set" not in c  # no data.train_size: all 44,000
        assert cc.main([*c[1:], "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("afa train ") == len(calls)
    assert out.count("): 30 adv epochs, ") == len(calls) - 1  # standard has none
    assert "classifier.protocol=alf" in out and "classifier.epochs=3" in out
