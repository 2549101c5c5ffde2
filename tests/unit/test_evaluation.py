"""Evaluation: the correctness matrix on hand-made attacks, worst case = AND, counts divided
once, eval.json round trip, and sanity flags that trip on a gradient-masked model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_attacks import digits, trained_digits_net
from torch import Tensor, nn

import afa.evaluation.attacks.autoattack as aa_attacks
from afa.attacks import ThreatModel
from afa.errors import ConfigError
from afa.evaluation import (
    EVAL_ATTACKS,
    EvalResult,
    EvalSettings,
    SanityCheck,
    build_attacks,
    correctness_matrix,
    evaluate,
    format_table,
    register_attack,
    write_eval_json,
)

THREAT = ThreatModel(eps=0.1, step_size=0.025, steps=10)
PGD3, PGD10 = EvalSettings({"pgd": {"steps": 3}}), EvalSettings({"pgd": {"steps": 10}})

# --------------------------------------------------------------------------- a fake world
# Inputs are (N, 1, 1, 1) values v; the model predicts class round(9 * v). An "attack"
# moves chosen examples to the value of another class.


class Dial(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        cls = torch.round(x.flatten(1)[:, 0] * 9).long()
        return nn.functional.one_hot(cls, 10).float()


def dial_data() -> tuple[Tensor, Tensor]:
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    images = (labels.float() / 9).view(-1, 1, 1, 1).clone()
    images[[3, 7]] = 0.0  # examples 3 and 7 are misclassified clean (predicted 0)
    return images, labels


def breaker(targets: set[int], seen: list[int]):
    """An attack that breaks examples whose label is in ``targets`` and records what it saw."""

    def fn(x: Tensor, y: Tensor) -> Tensor:
        seen.extend(y.tolist())
        hit = torch.tensor([int(v) in targets for v in y]).view(-1, 1, 1, 1)
        return torch.where(hit, ((y + 1) % 10).float().view(-1, 1, 1, 1) / 9, x)

    return fn


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_correctness_matrix_on_a_hand_made_case(batch_size):
    images, labels = dial_data()
    seen_a, seen_b = [], []
    correct, attacked, times = correctness_matrix(
        Dial(),
        images,
        labels,
        [("A", breaker({1, 2, 3}, seen_a)), ("B", breaker({2, 5, 6}, seen_b))],
        batch_size=batch_size,
        device="cpu",
    )
    clean = [i not in (3, 7) for i in range(10)]
    after_a = [c and i not in (1, 2) for i, c in enumerate(clean)]
    after_b = [c and i not in (5, 6) for i, c in enumerate(after_a)]
    assert correct.dtype == torch.bool and correct.shape == (10, 3)
    assert correct[:, 0].tolist() == clean
    assert correct[:, 1].tolist() == after_a
    assert correct[:, 2].tolist() == after_b
    # each attack ran only on the points still robust: A never saw 3 or 7, B never saw 1, 2
    assert sorted(seen_a) == [0, 1, 2, 4, 5, 6, 8, 9]
    assert sorted(seen_b) == [0, 4, 5, 6, 8, 9]
    assert attacked[:, 0].tolist() == clean and attacked[:, 1].tolist() == after_a
    assert set(times) == {"A", "B"}


def test_worst_case_is_the_and_of_each_row_and_counts_are_divided_once():
    # columns that are not nested: the worst case is not the smallest column accuracy
    correct = torch.tensor(
        [[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 0, 0], [1, 1, 1], [1, 0, 1], [1, 1, 0]],
        dtype=torch.bool,
    )
    r = EvalResult(THREAT, ["clean", "A", "B"], correct)
    assert r.worst_case.tolist() == [False, False, True, False, True, False, False]
    assert r.robust_acc == 2 / 7 < min(r.acc("A"), r.acc("B"))
    assert (r.clean_acc, r.acc("A"), r.acc("B")) == (6 / 7, 4 / 7, 4 / 7)
    assert r.n_correct("B") == 4 and r.n_examples == 7


def _result() -> EvalResult:
    images, labels = dial_data()
    attacks = [("PGD-20 (CE)", breaker({1}, [])), ("PGD-30 (CW margin)", breaker({2, 4}, []))]
    correct, _, _ = correctness_matrix(Dial(), images, labels, attacks, batch_size=4, device="cpu")
    sanity = {"large_eps": SanityCheck("large_eps", True, 0.0, 0.05, "words")}
    info = {"PGD-20 (CE)": {"steps": 20, "time_s": 0.5}, "PGD-30 (CW margin)": {"steps": 30}}
    return EvalResult(THREAT, ["clean", *[a[0] for a in attacks]], correct, info, sanity, 3, 1.5)


def test_eval_json_round_trip_keeps_numbers_as_numbers(tmp_path):
    r = _result()
    path = tmp_path / "run" / "eval.json"
    written = write_eval_json(
        r, path, extra={"dataset": "digits", "checkpoint": "best.pt", "threat_overrides": {}}
    )
    back = json.loads(path.read_text())
    assert back == written
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]  # no temporary left
    assert back["dataset"] == "digits" and back["checkpoint"] == "best.pt"
    assert back["model"] is None and back["method"] is None
    assert back["n_examples"] == 10 and isinstance(back["n_examples"], int)
    assert back["clean_acc"] == 0.8 and back["robust_acc"] == 0.5 and back["n_robust"] == 5
    flags = back["per_example"]
    assert flags["clean"] == "".join("1" if v else "0" for v in r.correct[:, 0].tolist())
    assert flags["robust"] == "".join("1" if v else "0" for v in r.worst_case.tolist())
    assert flags["robust"].count("1") == 5 and flags["clean"].count("1") == 8
    pgd = back["attacks"]["PGD-20 (CE)"]
    assert pgd == {"robust_acc": 0.7, "n_correct": 7, "steps": 20, "time_s": 0.5}
    assert back["attacks"]["PGD-30 (CW margin)"]["robust_acc"] == 0.5
    # only what every attack shares: steps, step size and BN mode are per attack
    assert back["threat_model"] == {"norm": "linf", "eps": 0.1, "description": "Linf eps=0.1"}
    assert back["sanity"]["large_eps"] == {
        "passed": True,
        "value": 0.0,
        "threshold": 0.05,
        "description": "words",
    }
    assert set(back["versions"]) == {"afa", "torch", "pyautoattack", "python"}
    assert back["seed"] == 3 and back["time_s"] == 1.5

    with pytest.raises(ValueError, match="robust_acc"):
        write_eval_json(r, path, extra={"robust_acc": 1.0})


def test_format_table_sorts_by_worst_case_and_marks_missing_attacks(tmp_path):
    weak = _result()
    strong = EvalResult(THREAT, ["clean", "PGD-20 (CE)"], torch.ones(4, 2, dtype=torch.bool))
    record = write_eval_json(weak, tmp_path / "eval.json")
    table = format_table([("weak", record), ("strong", strong)])
    lines = table.splitlines()
    assert lines[0] == "|  | clean | PGD-20 (CE) | PGD-30 (CW margin) | robust (worst case) |"
    assert lines[2] == "| strong | 100.00 | 100.00 | – | 100.00 |"
    assert lines[3] == "| weak | 80.00 | 70.00 | 50.00 | 50.00 |"
    assert format_table({"weak": weak, "strong": strong}) == table


# --------------------------------------------------------------------------- evaluate


class Quantised(nn.Module):
    """Gradient masking by design: the input is rounded to 1/16 (digits' own levels, so clean
    inputs are unchanged) and round() has zero gradient, so PGD cannot move."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(torch.round(x * 16) / 16)


def test_evaluate_runs_pgd_and_cw_on_still_robust_points_and_restores_state():
    net = trained_digits_net().train()
    x, y = digits()[2], digits()[3]
    rng = torch.random.get_rng_state()
    r = evaluate(
        net,
        x,
        y,
        THREAT,
        attacks=("pgd", "cw"),
        settings=EvalSettings({"pgd": {"steps": 10}, "cw": {"steps": 5}}, batch_size=64),
        n_examples=200,
        sanity=False,
    )
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert net.training and all(p.requires_grad and p.grad is None for p in net.parameters())
    assert r.columns == ["clean", "PGD-10 (CE, BN eval)", "PGD-5 (CW margin, BN eval)"]
    assert r.n_examples == 200 and r.sanity == {}
    assert r.robust_acc <= r.acc("PGD-10 (CE, BN eval)") < r.clean_acc - 0.3
    assert r.attacks["PGD-10 (CE, BN eval)"]["n_attacked"] == r.n_correct("clean")
    cw = r.attacks["PGD-5 (CW margin, BN eval)"]
    assert cw["n_attacked"] == r.n_correct("PGD-10 (CE, BN eval)")
    assert r.attacks["PGD-5 (CW margin, BN eval)"]["step_size"] == THREAT.step_size
    # the same seed gives the same matrix; uint8 images are scaled by 1/255
    again = evaluate(
        net,
        x,
        y,
        THREAT,
        attacks=("pgd", "cw"),
        settings=EvalSettings({"pgd": {"steps": 10}, "cw": {"steps": 5}}, batch_size=64),
        n_examples=200,
        sanity=False,
    )
    assert torch.equal(again.correct, r.correct)
    u8 = torch.round(x[:50] * 255).to(torch.uint8)
    a = evaluate(net, u8, y[:50], THREAT, attacks=("pgd",), settings=PGD3, sanity=False)
    b = evaluate(
        net, u8.float() / 255, y[:50], THREAT, attacks=("pgd",), settings=PGD3, sanity=False
    )
    assert torch.equal(a.correct, b.correct)


def test_evaluate_rejects_unknown_attacks_and_bad_images():
    net = trained_digits_net()
    x, y = digits()[2][:4], digits()[3][:4]
    with pytest.raises(ConfigError, match="unknown"):
        evaluate(net, x, y, THREAT, attacks=("cw-l2",))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate(net, x * 255, y, THREAT, attacks=("pgd",))


def test_sanity_checks_pass_on_a_normal_model():
    net = trained_digits_net()
    x, y = digits()[2], digits()[3]
    r = evaluate(net, x, y, THREAT, attacks=("pgd",), settings=PGD10, n_examples=200)
    assert set(r.sanity) == {"large_eps", "eps_monotone", "pgd_below_clean"}
    assert all(c.passed for c in r.sanity.values()), r.sanity
    assert r.sanity["large_eps"].threshold == 0.05
    assert r.sanity["pgd_below_clean"].value == pytest.approx(r.clean_acc - r.robust_acc)


@pytest.mark.parametrize("random_start", [False, True])
def test_sanity_flags_trip_on_a_gradient_masked_model(random_start):
    masked = Quantised(trained_digits_net())
    x, y = digits()[2], digits()[3]
    threat = THREAT.with_(random_start=random_start)
    r = evaluate(masked, x, y, threat, attacks=("pgd",), settings=PGD10, n_examples=200)
    assert not r.sanity["large_eps"].passed, r.sanity
    assert r.sanity["large_eps"].value > 0.05
    if not random_start:  # PGD does not move at all: nothing below clean either
        assert r.robust_acc == r.clean_acc
        assert not r.sanity["pgd_below_clean"].passed


def test_autoattack_flags_with_fake_autoattacks(monkeypatch):
    x, y = digits()[2], digits()[3]

    # an AutoAttack that does nothing: its accuracy sits far above PGD's
    monkeypatch.setattr(aa_attacks, "autoattack", lambda model, x, y, threat, **kw: x)
    r = evaluate(
        trained_digits_net(),
        x,
        y,
        THREAT,
        attacks=("pgd", "autoattack"),
        settings=PGD10,
        n_examples=150,
    )
    assert r.columns[-1] == "AutoAttack (standard)"
    check = r.sanity["autoattack_not_weaker_than_pgd"]
    assert not check.passed and check.value > 0.5, check
    assert r.sanity["autoattack_gap"].passed

    # an all-breaking AutoAttack on a masked model: PGD overstates robustness
    monkeypatch.setattr(
        aa_attacks, "autoattack", lambda model, x, y, threat, **kw: torch.zeros_like(x)
    )
    r = evaluate(
        Quantised(trained_digits_net()),
        x,
        y,
        THREAT.with_(random_start=False),
        attacks=("pgd", "autoattack"),
        settings=PGD10,
        n_examples=150,
    )
    gap = r.sanity["autoattack_gap"]
    pgd = "PGD-10 (CE, no random start, BN eval)"
    assert not gap.passed and gap.value == pytest.approx(r.acc(pgd) - r.robust_acc)
    assert r.sanity["autoattack_not_weaker_than_pgd"].passed


def test_evaluate_with_a_real_autoattack_component():
    net = trained_digits_net()
    x, y = digits()[2], digits()[3]
    r = evaluate(net, x, y, THREAT, attacks=("pgd", "apgd-ce"), settings=PGD10, n_examples=24)
    assert r.columns == ["clean", "PGD-10 (CE, BN eval)", "AutoAttack (apgd-ce)"]
    assert r.attacks["AutoAttack (apgd-ce)"]["attacks_to_run"] == ["apgd-ce"]
    assert r.sanity["autoattack_not_weaker_than_pgd"].passed, r.sanity
    assert math.isfinite(r.time_s) and r.time_s > 0


def test_the_gap_diagnosis_tells_weak_pgd_from_masked_gradients(monkeypatch):
    """A PGD crippled by a tiny step leaves a gap that APGD closes (weak PGD, explained);
    on a model with zero input gradients APGD closes nothing (masked gradients)."""
    x, y = digits()[2], digits()[3]
    real = aa_attacks.autoattack

    def standard_is_everything_breaking(model, x, y, threat, **kw):
        if kw.get("version") == "standard":
            return torch.zeros_like(x)  # what a gradient-free attack would find
        return real(model, x, y, threat, **kw)

    monkeypatch.setattr(aa_attacks, "autoattack", standard_is_everything_breaking)
    crippled = THREAT.with_(step_size=THREAT.eps / 200)  # 10 steps reach 5% of the ball
    r = evaluate(
        trained_digits_net(),
        x,
        y,
        crippled,
        attacks=("pgd", "autoattack"),
        settings=PGD10,
        n_examples=60,
    )
    assert not r.sanity["autoattack_gap"].passed
    weak = r.sanity["gap_closed_by_gradient_attacks"]
    assert weak.passed and weak.value >= 0.8, weak

    r = evaluate(
        Quantised(trained_digits_net()),
        x,
        y,
        THREAT.with_(random_start=False),
        attacks=("pgd", "autoattack"),
        settings=PGD10,
        n_examples=60,
    )
    masked = r.sanity["gap_closed_by_gradient_attacks"]
    assert not masked.passed and masked.value < 0.2, masked


# --------------------------------------------------------------------------- settings


def test_settings_resolve_each_attacks_declared_defaults_and_the_runs_config():
    from afa.evaluation.runs import eval_settings
    from afa.runs import EvalConfig

    default = EvalSettings()
    assert default.attack_options("pgd") == {"steps": 20}
    assert default.attack_options("cw") == {"steps": 30}
    assert default.attack_options("autoattack") == {}
    # the run config's defaults are the attacks' own: one evaluation either way
    config = eval_settings(EvalConfig())
    for name in ("pgd", "cw", "autoattack", "apgd-t"):
        assert config.attack_options(name) == default.attack_options(name)
    assert (config.batch_size, config.seed) == (default.batch_size, default.seed)
    # --steps reaches every attack that has steps, and only those
    steps = eval_settings(EvalConfig(cw_steps=50), steps=7)
    assert steps.attack_options("pgd") == steps.attack_options("cw") == {"steps": 7}
    assert steps.attack_options("square") == {}
    # --attack-option over the run's own, per attack and key
    mixed = eval_settings(EvalConfig(pgd_steps=9), attack_options={"cw": {"steps": 3}})
    assert mixed.attack_options("pgd") == {"steps": 9}
    assert mixed.attack_options("cw") == {"steps": 3}


def test_settings_refuse_unknown_attacks_keys_and_types_by_name():
    from afa.evaluation.runs import eval_settings
    from afa.runs import EvalConfig

    with pytest.raises(ConfigError, match=r"eval.attack_options.*did you mean 'pgd'"):
        EvalSettings({"pgf": {"steps": 3}})
    with pytest.raises(ConfigError, match=r"eval.attack_options.cw.step'.*did you mean"):
        EvalSettings({"cw": {"step": 3}})
    with pytest.raises(ConfigError, match=r"eval.attack_options.cw.steps: expected an integer"):
        EvalSettings({"cw": {"steps": "many"}})
    with pytest.raises(ConfigError, match="no settings of its own"):
        EvalSettings({"autoattack": {"steps": 3}})
    with pytest.raises(ConfigError, match=r"eval.attack_options.pgd.steps: expected >= 1"):
        build_attacks(["pgd"], nn.Identity(), THREAT, EvalSettings({"pgd": {"steps": 0}}), None)
    # one spelling per setting in a run's config: the PGD steps keep their keys
    with pytest.raises(ConfigError, match=r"set eval.pgd_steps instead"):
        eval_settings(EvalConfig(attack_options={"pgd": {"steps": 5}}))


def test_a_setting_without_a_default_is_refused_at_registration():
    def no_default(model, threat, settings, generator, *, strength: float):
        raise AssertionError("never built")

    with pytest.raises(TypeError, match="'strength' needs a type and a default"):
        register_attack("test-no-default")(no_default)
    assert "test-no-default" not in EVAL_ATTACKS


def test_settings_round_trip_through_eval_json(tmp_path):
    net = trained_digits_net()
    x, y = digits()[2], digits()[3]
    settings = EvalSettings({"cw": {"steps": 4}}, steps=None, batch_size=32, seed=5)
    r = evaluate(
        net, x, y, THREAT, attacks=("pgd", "cw"), settings=settings, n_examples=40, sanity=False
    )
    write_eval_json(r, tmp_path / "eval.json")
    record = json.loads((tmp_path / "eval.json").read_text())
    assert record["settings"] == {
        "batch_size": 32,
        "seed": 5,
        "attack_options": {"pgd": {"steps": 20}, "cw": {"steps": 4}},
    }
    back = EvalSettings.from_record(record["settings"])
    assert back.record(["pgd", "cw"]) == record["settings"]
    for name in ("pgd", "cw"):
        assert back.attack_options(name) == settings.attack_options(name)
    # read back, the settings build the same evaluation
    again = evaluate(
        net, x, y, THREAT, attacks=("pgd", "cw"), settings=back, n_examples=40, sanity=False
    )
    assert (
        again.columns
        == r.columns
        == ["clean", "PGD-20 (CE, BN eval)", "PGD-4 (CW margin, BN eval)"]
    )
    assert torch.equal(again.correct, r.correct)
    assert record["attacks"]["PGD-4 (CW margin, BN eval)"]["steps"] == 4


def test_sanity_checks_record_their_numbers_and_the_report_reads_them(tmp_path):
    from afa.report import load_run, sanity_messages

    masked = Quantised(trained_digits_net())
    x, y = digits()[2], digits()[3]
    r = evaluate(masked, x, y, THREAT, attacks=("pgd",), settings=PGD10, n_examples=120)
    large = r.sanity["large_eps"]
    assert not large.passed
    assert large.details == {"eps": 0.5, "steps": 10, "accuracy": large.value, "n_examples": 120}
    mono = r.sanity["eps_monotone"].details
    assert mono["multipliers"] == [0.25, 0.5, 1.0, 2.0] and len(mono["accuracies"]) == 4
    assert mono["eps"] == pytest.approx([0.025, 0.05, 0.1, 0.2])
    below = r.sanity["pgd_below_clean"]
    assert below.value == pytest.approx(below.details["clean_acc"] - below.details["pgd_acc"])

    write_eval_json(r, tmp_path / "run" / "eval.json")
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert record["sanity"]["large_eps"]["details"]["eps"] == 0.5
    assert record["sanity"]["large_eps"]["description"].startswith("PGD-10 (CE")
    # the report takes the radius from the field, not from the sentence
    record["sanity"]["large_eps"]["description"] = "a sentence without numbers"
    (tmp_path / "run" / "eval.json").write_text(json.dumps(record))
    failed, _, _ = sanity_messages(load_run(tmp_path / "run"))
    assert any(m.startswith("PGD at eps=0.5 still leaves") for m in failed), failed
