"""Every ``afa eval`` override takes effect, and eval.json records exactly what ran.

The PGD that the evaluation attacks call is wrapped to record the threat model it was
really given; each test compares that with the command line and with eval.json.
"""

from __future__ import annotations

import json

import pytest

import afa.evaluation.attacks.pgd as eval_pgd
from afa.cli.main import main

TINY = ["train.epochs=1", "model.options={width: 4}", "eval.n_examples=16"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-overrides")
    assert main(["train", "digits-pgd-at", f"out_dir={out}", "name=run", *TINY]) == 0
    return out / "run"


@pytest.fixture
def seen(monkeypatch):
    """The threat models the evaluation's PGD was called with, by objective name."""
    calls: dict[str, set] = {}
    real = eval_pgd.perturb_worst_case

    def spy(model, x, y, threat, objective, **kw):
        calls.setdefault(objective.__name__, set()).add(threat)
        return real(model, x, y, threat, objective, **kw)

    monkeypatch.setattr(eval_pgd, "perturb_worst_case", spy)
    return calls


def _eval(run, *args: str) -> dict:
    assert main(["eval", str(run), "--attacks", "pgd,cw", "--no-sanity", *args]) == 0
    return json.loads((run / "eval.json").read_text())


def _ran(record: dict, objective: str) -> dict:
    (settings,) = [a for a in record["attacks"].values() if a["objective"] == objective]
    return settings


def test_defaults_are_the_runs_threat_model_with_eval_steps(run, seen):
    record = _eval(run)
    train = record["training_threat_model"]
    assert record["threat_overrides"] == {}
    assert set(record["attacks"]) == {"PGD-20 (CE, BN eval)", "PGD-30 (CW margin, BN eval)"}
    for objective, steps in (("cross_entropy", 20), ("cw_margin", 30)):
        (threat,) = seen[objective]
        ran = _ran(record, objective)
        assert threat.steps == ran["steps"] == steps and threat.bn_mode == ran["bn_mode"] == "eval"
        assert threat.eps == ran["eps"] == train["eps"] == record["threat_model"]["eps"]
        assert threat.step_size == ran["step_size"] == train["step_size"]
    assert "steps" not in record["threat_model"]  # one radius; steps are per attack


@pytest.mark.parametrize(
    ("args", "field", "value"),
    [
        (["--steps", "3"], "steps", 3),
        (["--eps", "0.1"], "eps", 0.1),
        (["--step-size", "1/255"], "step_size", 1 / 255),
        (["--restarts", "2"], "restarts", 2),
    ],
)
def test_each_override_takes_effect_and_is_recorded(run, seen, args, field, value):
    record = _eval(run, *args)
    assert record["threat_overrides"] == {field: value}
    for objective in ("cross_entropy", "cw_margin"):
        (threat,) = seen[objective]
        assert getattr(threat, field) == pytest.approx(value)
        assert _ran(record, objective)[field] == pytest.approx(value)
    if field == "steps":
        assert set(record["attacks"]) == {"PGD-3 (CE, BN eval)", "PGD-3 (CW margin, BN eval)"}
    if field == "restarts":
        assert "PGD-20 (CE, 2 restarts, BN eval)" in record["attacks"]
    if field == "eps":
        assert record["threat_model"] == {"norm": "linf", "eps": 0.1, "description": "Linf eps=0.1"}


def test_steps_reach_the_sanity_checks(run, seen):
    assert main(["eval", str(run), "--attacks", "pgd", "--steps", "2", "--n", "8"]) == 0
    record = json.loads((run / "eval.json").read_text())
    assert {t.steps for t in seen["cross_entropy"]} == {2}  # main attack and every sanity PGD
    assert "PGD-2 (CE, BN eval)" in record["sanity"]["large_eps"]["description"]


def test_an_override_out_of_range_is_one_line(run, capsys):
    assert main(["eval", str(run), "--restarts", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("afa eval: error:") and "--restarts" in err and "Traceback" not in err


def test_an_attack_option_changes_that_attack_only_and_is_recorded(run, seen):
    record = _eval(run, "--attack-option", "cw.steps=5")
    assert {t.steps for t in seen["cw_margin"]} == {5}
    assert {t.steps for t in seen["cross_entropy"]} == {20}
    assert record["threat_overrides"] == {"attack_options": {"cw": {"steps": 5}}}
    assert record["settings"]["attack_options"] == {"pgd": {"steps": 20}, "cw": {"steps": 5}}
    assert set(record["attacks"]) == {"PGD-20 (CE, BN eval)", "PGD-5 (CW margin, BN eval)"}


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("cw.stepz=5", "did you mean 'eval.attack_options.cw.steps'"),
        ("cw.steps=many", "expected an integer"),
        ("steps=5", "expected ATTACK.KEY=VALUE"),
        ("pgf.steps=5", "did you mean 'pgd'"),
    ],
)
def test_a_bad_attack_option_is_one_line(run, capsys, option, says):
    assert main(["eval", str(run), "--attack-option", option]) == 2
    err = capsys.readouterr().err
    assert err.startswith("afa") and says in err and "Traceback" not in err


def test_train_refuses_a_bad_attack_option_before_training(tmp_path, capsys):
    bad = "eval.attack_options={cw: {stepz: 3}}"
    assert main(["train", "digits-pgd-at", f"out_dir={tmp_path}", "name=r", bad, *TINY]) == 2
    assert "eval.attack_options.cw.stepz" in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
