"""Strict config parsing: errors name the key; fractions are exact; overrides are dotted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from afa.attacks.threat import ThreatModel
from afa.config import apply_overrides, from_dict, load_yaml, parse_number, to_dict
from afa.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    milestones: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Outer:
    threat: ThreatModel = field(default_factory=ThreatModel)
    inner: Inner = field(default_factory=Inner)
    mode: Literal["a", "b"] = "a"
    epochs: int = 3
    note: str | None = None


def test_fraction_is_exact() -> None:
    cfg = from_dict(Outer, {"threat": {"eps": "8/255", "step_size": "2/255"}})
    assert cfg.threat.eps == 8 / 255
    assert cfg.threat.step_size == 2 / 255


def test_unknown_key_names_path_and_closest_match() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'threat.epss'.*did you mean 'threat.eps'"):
        from_dict(Outer, {"threat": {"epss": 0.1}})


def test_wrong_type_names_key_expected_and_got() -> None:
    with pytest.raises(ConfigError, match=r"epochs: expected an integer, got 'ten'"):
        from_dict(Outer, {"epochs": "ten"})
    with pytest.raises(ConfigError, match=r"inner.milestones\[1\]: expected a number"):
        from_dict(Outer, {"inner": {"milestones": [0.5, "x"]}})
    with pytest.raises(ConfigError, match=r"mode: expected 'a' or 'b', got 'c'"):
        from_dict(Outer, {"mode": "c"})


def test_booleans_are_not_numbers_and_strings_are_not_booleans() -> None:
    with pytest.raises(ConfigError, match="threat.random_start: expected true or false"):
        from_dict(Outer, {"threat": {"random_start": "False"}})
    with pytest.raises(ConfigError, match="expected a number"):
        from_dict(Outer, {"inner": {"lr": True}})


def test_invalid_value_is_rejected_by_the_owner() -> None:
    with pytest.raises(ConfigError, match="threat.eps: expected >= 0"):
        from_dict(Outer, {"threat": {"eps": -0.1}})


def test_overrides_are_dotted_and_yaml_typed() -> None:
    raw = apply_overrides({"threat": {"eps": 0.1}}, ["threat.eps=8/255", "epochs=5", "note=hi"])
    cfg = from_dict(Outer, raw)
    assert cfg.threat.eps == 8 / 255 and cfg.epochs == 5 and cfg.note == "hi"
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["epochs"])


def test_round_trip() -> None:
    cfg = from_dict(Outer, {"inner": {"milestones": [0.5, 0.75]}, "mode": "b"})
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_yaml_errors_name_the_file(tmp_path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_yaml(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_yaml(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="scalar.yaml: expected a mapping"):
        load_yaml(scalar)


@given(st.integers(1, 255), st.integers(1, 255))
def test_parse_number_fractions(num: int, den: int) -> None:
    assert parse_number(f"{num}/{den}") == num / den


@dataclass(frozen=True)
class Pair:
    betas: tuple[float, float] = (0.9, 0.999)


def test_fixed_length_tuples() -> None:
    assert from_dict(Pair, {"betas": ["1/2", 0.25]}).betas == (0.5, 0.25)
    with pytest.raises(ConfigError, match=r"betas: expected 2 items, got 3"):
        from_dict(Pair, {"betas": [0.1, 0.2, 0.3]})


def test_empty_yaml_is_refused_and_explicit_empty_mapping_accepted(tmp_path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    with pytest.raises(ConfigError, match=r"empty.yaml: empty config file"):
        load_yaml(empty)
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("{}\n")
    assert load_yaml(defaults) == {}


def test_yaml_error_is_one_line_with_its_place(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb: c: d\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(bad)
    assert "\n" not in str(info.value) and "line 2, column 5" in str(info.value)


@dataclass(frozen=True)
class Holdout:
    size: int | float = 0.5


@given(st.one_of(st.integers(-5, 10**6), st.floats(-5, 10**6, allow_nan=False)))
def test_int_or_float_keeps_the_written_type(value: int | float) -> None:
    """Under ``int | float`` a count stays an int and 2.0 stays a float (a fraction)."""
    got = from_dict(Holdout, {"size": value}).size
    assert type(got) is type(value) and got == value


def test_val_size_fraction_or_count() -> None:
    from afa.data import DataConfig

    assert from_dict(DataConfig, {"val_size": 0.1}).val_size == 0.1
    assert from_dict(DataConfig, {"val_size": "1/10"}).val_size == 0.1
    assert from_dict(DataConfig, {"val_size": 500}).val_size == 500
    assert from_dict(DataConfig, {"val_size": 0}).val_size == 0
    for bad in (1.5, -0.1, -3):
        with pytest.raises(ConfigError, match="data.val_size: expected 0, a fraction in"):
            from_dict(DataConfig, {"val_size": bad})
    # runs stored by earlier versions hold every val_size as a float: they still load (a
    # user's new 2.0 is refused by `afa train`, tests/integration/test_cli_errors.py)
    assert from_dict(DataConfig, {"val_size": 1000.0}).val_size == 1000.0
    with pytest.raises(ConfigError, match="val_size: expected int or float, got True"):
        from_dict(DataConfig, {"val_size": True})


@dataclass(frozen=True)
class WithOptional:
    inner: Inner | None = None


def test_optional_section_error_names_the_inner_key() -> None:
    with pytest.raises(ConfigError, match=r"^unknown key 'inner.lrr' \(did you mean 'inner.lr'"):
        from_dict(WithOptional, {"inner": {"lrr": 0.1}})
    assert from_dict(WithOptional, {"inner": None}).inner is None
    with pytest.raises(ConfigError, match=r"inner: expected Inner or null, got 3"):
        from_dict(WithOptional, {"inner": 3})
