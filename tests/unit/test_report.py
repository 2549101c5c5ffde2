"""``afa.report.compare`` on hand-written run directories, complete and incomplete."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from afa.analysis.plots import plot_aligned_accuracy
from afa.report import compare, load_run, sanity_messages

VOID = {"meta", "img", "br", "hr", "link", "input"}
ATTACKS = ("PGD-20 (CE)", "PGD-30 (CW margin)", "AutoAttack (standard)")


def _write_run(
    root: Path,
    name: str,
    *,
    method: str,
    clean: float | None = None,
    robust: tuple[float, float, float] | None = None,
    sanity_failed: dict[str, float] | None = None,
    stages: tuple[tuple[str, int], ...] = (("train", 3),),
    analysis: dict | None = None,
) -> Path:
    run = root / name
    run.mkdir(parents=True)
    cfg = {
        "method": {"name": method},
        "model": {"name": "cnn"},
        "data": {"name": "digits"},
        "threat": {"norm": "linf", "eps": "8/255", "step_size": "2/255", "steps": 10},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows, g = [], 0
    for stage, epochs in stages:
        for e in range(1, epochs + 1):
            g += 1
            rows.append(
                {
                    "stage": stage,
                    "epoch": e,
                    "global_epoch": g,
                    "global_step": 10 * g,
                    "lr": 0.1,
                    "time_s": 2.0,
                    "train/loss": 2.0 / g,
                    "train/acc": 0.3 + 0.1 * g,
                    "val/clean_acc": 0.5 + 0.05 * g,
                    "val/pgd_acc": 0.2 + 0.02 * g,
                }
            )
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if clean is not None:
        sanity = {
            "large_eps": {
                "passed": True,
                "value": 0.0,
                "threshold": 0.05,
                "description": "PGD-20 (CE) accuracy at eps=0.5, a ball holding the mid-grey image",
                "details": {"eps": 0.5, "steps": 20, "accuracy": 0.0, "n_examples": 360},
            },
            "pgd_below_clean": {
                "passed": True,
                "value": 0.3,
                "threshold": 0.0,
                "description": "...",
            },
        }
        for check, value in (sanity_failed or {}).items():
            sanity[check] = {
                **sanity.get(check, {"threshold": 0.1, "description": "a custom check"}),
                "passed": False,
                "value": value,
            }
        ev = {
            "dataset": "digits",
            "model": "cnn",
            "method": method,
            "threat_model": {
                "norm": "linf",
                "eps": 8 / 255,
                "step_size": 2 / 255,
                "steps": 10,
                "description": "Linf eps=8/255, 10 steps of 2/255",
            },
            "n_examples": 360,
            "clean_acc": clean,
            "attacks": {
                a: {"robust_acc": r, "n_correct": int(r * 360), "time_s": 1.0}
                for a, r in zip(ATTACKS, robust or (), strict=False)
            },
            "robust_acc": min(robust) if robust else None,
            "sanity": sanity,
            "seed": 0,
            "time_s": 3.0,
            "adversarial_epochs": 3,
        }
        (run / "eval.json").write_text(json.dumps(ev))
    if analysis is not None:
        plot_aligned_accuracy(
            analysis["alignment"]["centroid"], run / "analysis_aligned_accuracy.png"
        )
        analysis = {**analysis, "figures": {"aligned_accuracy": "analysis_aligned_accuracy.png"}}
        (run / "analysis.json").write_text(json.dumps(analysis))
    return run


def _analysis(clean: float, adv: float, restates: bool) -> dict:
    def summary(frac: float) -> dict:
        return {
            "n": 100,
            "aligned_fraction": frac,
            "accuracy": frac,
            "n_aligned": int(100 * frac),
            "n_misaligned": 100 - int(100 * frac),
            "acc_aligned": 0.95,
            "acc_misaligned": 0.2,
        }

    note = (
        "On clean inputs centroid alignment agrees ...: here alignment restates accuracy"
        if restates
        else "On clean inputs ...: not flagged as a restatement."
    )
    return {
        "alignment": {"centroid": {"clean": summary(clean), "adversarial": summary(adv)}},
        "restates_accuracy": {"clean": restates, "adversarial": False},
        "notes": [
            note,
            "On adversarial inputs ...: not flagged as a restatement.",
        ],
        "lipschitz": {"mean": 12.5},
        "separation": {"two_r": 0.435, "eps": 0.2, "n_train": 1213, "n_test": 200},
    }


class _Checker(HTMLParser):
    """Tag balance (void elements aside), images, and external references."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith(("data:", "#")):
                self.external.append(a[key])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    tmp_path = tmp_path_factory.mktemp("report")
    runs = [
        _write_run(tmp_path / "runs", "standard", method="standard"),  # trained only
        _write_run(
            tmp_path / "runs",
            "pgd-at",
            method="pgd-at",
            clean=0.90,
            robust=(0.52, 0.50, 0.48),
            analysis=_analysis(0.88, 0.45, restates=True),
        ),
        _write_run(
            tmp_path / "runs",
            "masked",
            method="afa",
            clean=0.95,
            robust=(0.80, 0.79, 0.60),
            sanity_failed={"large_eps": 0.4},
            stages=(("pretrain", 2), ("linear", 2)),
        ),
        _write_run(
            tmp_path / "runs",
            "trades",
            method="trades",
            clean=0.85,
            robust=(0.58, 0.57, 0.55),
            analysis=_analysis(0.80, 0.55, restates=False),
        ),
        tmp_path / "runs" / "does-not-exist",
    ]
    paths = compare(runs, tmp_path / "report", title="Test report")
    return paths, tmp_path


def test_files_exist_and_json_table_is_sorted_by_worst_case(report):
    paths, _ = report
    assert {"md", "html", "json"} <= set(paths)
    for p in paths.values():
        assert Path(p).is_file()
    data = json.loads(Path(paths["json"]).read_text())
    names = [r["name"] for r in data["runs"]]
    assert names[:3] == ["masked", "trades", "pgd-at"]  # 0.60 > 0.55 > 0.48
    assert set(names[3:]) == {"standard", "does-not-exist"}  # no robust accuracy: last
    masked = data["runs"][0]
    assert masked["robust_acc"] == 0.60 and masked["clean_acc"] == 0.95
    assert masked["attacks"]["AutoAttack (standard)"] == 0.60
    assert masked["epochs"] == {"pretrain": 2, "linear": 2}
    assert masked["train_time_s"] == 8.0
    assert masked["sanity_failed"] == ["large_eps"]
    pgd = next(r for r in data["runs"] if r["name"] == "pgd-at")
    assert (
        pgd["aligned_clean"] == 0.88 and pgd["lipschitz"] == 12.5 and pgd["adversarial_epochs"] == 3
    )
    assert (
        data["threat_model"] == "Linf eps=8/255, 10 steps of 2/255" and data["dataset"] == "digits"
    )


def test_markdown_table_order_missing_values_and_plain_words(report):
    paths, _ = report
    md = Path(paths["md"]).read_text()
    rows = [line for line in md.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [r.split("|")[2].strip() for r in rows][:3] == ["masked", "trades", "pgd-at"]
    standard = next(r for r in rows if "| standard |" in r)
    assert standard.count("—") >= 6  # clean, three attacks, worst case, alignment ...
    assert "PGD at eps=0.5 still leaves 40.0% accuracy" in md
    assert "do not trust these robust accuracies" in md
    assert "no eval.json" in md and "run directory not found" in md
    assert "restates accuracy" in md and "†" in md and "⚠" in md
    # 360 examples: 1.96 * sqrt(0.25 / 360) = 5.2 points, 1.96 * sqrt(0.09 / 360) = 3.1
    assert "Test examples per evaluation: 360" in md and "±5.2 points (at 50%; ±3.1 at 90%" in md
    assert (
        "2r = 0.435 apart in Linf (1213 training and 200 test images) against 2 eps = 0.400" in md
    )
    # figures referenced by relative paths that exist
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (Path(paths["md"]).parent / link).is_file(), link


def test_html_is_well_formed_and_self_contained(report):
    paths, _ = report
    text = Path(paths["html"]).read_text()
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert checker.stack == [], checker.stack
    assert not checker.external
    # tradeoff + three training-curve figures + pgd-at's and trades' analysis figures
    assert len(checker.images) == 1 + 4 + 2
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PGD at eps=0.5 still leaves 40.0% accuracy" in text
    assert (
        text.index("<td>masked</td>")
        < text.index("<td>trades</td>")
        < text.index("<td>pgd-at</td>")
    )


def test_load_run_tolerates_broken_files(tmp_path):
    run = tmp_path / "broken"
    run.mkdir()
    (run / "eval.json").write_text("{not json")
    (run / "metrics.jsonl").write_text('{"stage": "train", "epoch": 1, "time_s": 1.5}\nnot json\n')
    (run / "analysis.json").write_text(json.dumps({"figures": {"tsne": "missing.png"}}))
    s = load_run(run)
    assert s.clean_acc is None and s.robust_acc is None
    assert any("eval.json unreadable" in n for n in s.notes)
    assert any("1 unreadable line" in n for n in s.notes)
    assert any("missing.png" in n for n in s.notes)
    assert s.train_time_s == 1.5 and s.epochs == {"train": 1}
    paths = compare([run], tmp_path / "out", title="broken")
    assert "—" in Path(paths["md"]).read_text()


def test_sanity_messages_for_every_known_check():
    from afa.report.collect import RunSummary

    run = RunSummary(name="r", path=Path("."))
    run.sanity = {
        "large_eps": {
            "passed": False,
            "value": 0.4,
            "threshold": 0.05,
            "description": "PGD-20 (CE) accuracy at eps=0.5, ...",
            "details": {"eps": 0.5, "steps": 20, "accuracy": 0.4, "n_examples": 500},
        },
        "eps_monotone": {"passed": False, "value": 0.06, "threshold": 0.02, "description": ""},
        "pgd_below_clean": {"passed": False, "value": 0.0, "threshold": 0.0, "description": ""},
        "autoattack_not_weaker_than_pgd": {
            "passed": False,
            "value": 0.05,
            "threshold": 0.02,
            "description": "",
        },
        "autoattack_gap": {"passed": False, "value": 0.2, "threshold": 0.1, "description": ""},
        "new_check": {
            "passed": False,
            "value": 1.0,
            "threshold": 0.5,
            "description": "something odd",
        },
        "fine": {"passed": True, "value": 0.0, "threshold": 0.1, "description": ""},
    }
    failed, explained, passed = sanity_messages(run)
    assert passed == ["fine"] and explained == []
    assert len(failed) == 6
    assert failed[0].startswith("PGD at eps=0.5 still leaves 40.0% accuracy")
    assert "rose by 6.0%" in failed[1]
    assert "not attacking" in failed[2]
    assert "misconfigured" in failed[3]
    assert "20.0% above the worst case" in failed[4]
    assert "new_check" in failed[5] and "something odd" in failed[5]


def test_a_gap_that_gradient_attacks_close_is_explained_not_failed(tmp_path):
    from afa.report.collect import RunSummary

    gap = {
        "passed": False,
        "value": 0.156,
        "threshold": 0.1,
        "description": "PGD-20 (CE, BN eval) accuracy run alone minus the worst case ...",
        "details": {"attack": "PGD-20 (CE, BN eval)", "steps": 20, "pgd_acc": 0.5},
    }
    closed = {"passed": True, "value": 0.95, "threshold": 0.8, "description": ""}
    run = RunSummary(name="r", path=tmp_path)
    run.sanity = {"autoattack_gap": gap, "gap_closed_by_gradient_attacks": closed}
    failed, explained, passed = sanity_messages(run)
    assert failed == [] and passed == ["gap_closed_by_gradient_attacks"]
    assert "PGD-20 (CE) is 15.6% above" in explained[0] and "not masked" in explained[0]
    assert "break 95.0%" in explained[0]

    # the diagnosis failing: masked gradients, both are failures
    run.sanity["gap_closed_by_gradient_attacks"] = {**closed, "passed": False, "value": 0.3}
    failed, explained, passed = sanity_messages(run)
    assert explained == [] and len(failed) == 2 and "masked gradients" in failed[1]


def test_an_eval_json_from_before_the_sanity_fields_still_renders(tmp_path):
    """Sanity checks written without ``details`` (older eval.json files): the sentences
    say which numbers were not recorded instead of reading them out of the descriptions."""
    run = _write_run(
        tmp_path / "runs",
        "old",
        method="pgd-at",
        clean=0.9,
        robust=(0.6, 0.5, 0.3),
        sanity_failed={"large_eps": 0.4},
    )
    record = json.loads((run / "eval.json").read_text())
    for check in record["sanity"].values():
        check.pop("details", None)
    record["sanity"]["autoattack_gap"] = {
        "passed": False,
        "value": 0.2,
        "threshold": 0.1,
        "description": "PGD-20 (CE, BN eval) accuracy run alone minus the worst case ...",
    }
    record["sanity"]["gap_closed_by_gradient_attacks"] = {
        "passed": True,
        "value": 0.9,
        "threshold": 0.8,
        "description": "",
    }
    (run / "eval.json").write_text(json.dumps(record))
    summary = load_run(run)
    failed, explained, _ = sanity_messages(summary)
    assert failed == [
        "PGD at a very large radius (not recorded) still leaves 40.0% accuracy (it should be "
        "about 0; threshold 5.0%): gradients may be masked; do not trust these robust accuracies."
    ]
    assert explained[0].startswith("PGD (CE, steps not recorded) is 20.0% above the worst case")
    md = Path(compare([run], tmp_path / "report", title="old")["md"]).read_text()
    assert "a very large radius (not recorded)" in md and "steps not recorded" in md
