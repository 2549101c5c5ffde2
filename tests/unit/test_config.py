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


# --- what a config may cost: bounded once, for files and overrides alike


def _load(tmp_path, data: bytes) -> dict:
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    return load_yaml(path)


def test_aliases_and_merge_keys_within_the_bounds_are_read(tmp_path) -> None:
    text = (
        "base: &b {lr: 0.1, momentum: 0.9}\n"
        "derived: &d {<<: *b, lr: 0.2}\n"
        "nested: {inner: &n {<<: *d, lr: 0.3}}\n"
        "other: {<<: *n}\n"
        "eps: &e 8/255\n"
        "again: *e\n"
    )
    data = _load(tmp_path, text.encode())
    assert data["derived"] == {"lr": 0.2, "momentum": 0.9}  # a merged key is not a duplicate
    assert data["other"] == {"lr": 0.3, "momentum": 0.9}
    assert data["again"] == "8/255"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            b"a: 1\nb:\n  c: 2\n  c: 3\n",
            r"c.yaml: line 4, column 3: duplicate key 'c' \(first at line 3\)",
        ),
        (b"a: [" + b"[" * 40 + b"]" * 40 + b"]\n", "nested deeper than 32 levels"),
        (b"a: " + b"9" * 101 + b"\n", "an integer of 101 digits"),
        (b"a: -0x" + b"f" * 200 + b"\n", "an integer of 202 digits"),
        (b"a: &a {b: *a}\n", "an alias that contains itself"),
    ],
    ids=["duplicate", "deep", "digits", "hex-digits", "loop"],
)
def test_config_bounds_are_one_line_with_the_place(tmp_path, text, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _load(tmp_path, text)
    assert "\n" not in str(info.value)


def test_aliases_chained_past_the_depth_bound_are_refused(tmp_path) -> None:
    """Each alias is one level deeper, though no line of the file is nested."""
    rows = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 40)]
    with pytest.raises(ConfigError, match=r"line 31, column 6: nested deeper than 32 levels"):
        _load(tmp_path, ("\n".join(rows) + "\n").encode())


@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_a_byte_order_mark_says_the_encoding(tmp_path, codec) -> None:
    text = "name: café\n"
    data = text.encode(codec)
    if codec == "utf-16-be":
        data = b"\xfe\xff" + data
    assert _load(tmp_path, data) == {"name": "café"}


def test_text_that_is_not_utf8_names_the_byte_and_line(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"c.yaml: not UTF-8 text \(byte 0xe9 at line 2\)"):
        _load(tmp_path, "a: 1\nname: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="NUL bytes"):
        _load(tmp_path, "a: 1\n".encode("utf-16-le"))
    with pytest.raises(ConfigError, match=r"not UTF-16 text"):
        _load(tmp_path, b"\xff\xfea\x00:")  # an odd number of bytes after the mark


def test_overrides_are_read_within_the_same_bounds() -> None:
    with pytest.raises(ConfigError, match=r"^override train.seed: an integer of 5000 digits"):
        apply_overrides({}, ["train.seed=" + "9" * 5000])
    with pytest.raises(ConfigError, match=r"nested deeper than 32 levels"):
        apply_overrides({}, [".".join(["a"] * 40) + "=1"])
    with pytest.raises(ConfigError, match=r"^override 'x{77}\.\.\.': expected key=value"):
        apply_overrides({}, ["x" * 5000])
    assert apply_overrides({}, ["a=b: c", "d=[1"]) == {"a": {"b": "c"}, "d": "[1"}
