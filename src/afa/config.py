"""Strict, typed configuration machinery (no schema lives here).

YAML -> ``key=value`` overrides -> frozen dataclasses, with errors that name the key:

* an unknown key names the closest known key;
* a wrong type names the key, what was expected and what was given;
* a float may be written as a fraction (``eps: 8/255``) and is parsed exactly.

What a config may cost is bounded here, once, for files and overrides alike
(:class:`ConfigLoader`): at most :data:`MAX_CONFIG_BYTES` of UTF-8 (or UTF-16 / UTF-32 with
a byte-order mark), :data:`MAX_DEPTH` levels of nesting, :data:`MAX_VALUES` values once
YAML aliases are expanded (a "billion laughs" file is refused before it is expanded),
integers of at most :data:`MAX_INT_DIGITS` digits, and each key of a mapping once.

Each layer defines the dataclass for its own piece (``afa.data.DataConfig``,
``afa.attacks.ThreatModel``, ...); the run's schema composes them.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from afa.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_VALUES",
    "ConfigLoader",
    "ConfigTooCostly",
    "apply_overrides",
    "from_dict",
    "load_yaml",
    "parse_number",
    "parse_yaml",
    "to_dict",
]

#: A recipe is a few kilobytes; a file larger than this is not a config.
MAX_CONFIG_BYTES = 1 << 20
#: Nesting levels (a recipe uses four: ``train.optimizer.lr`` and its value).
MAX_DEPTH = 32
#: Values (scalars, lists and mappings) after YAML aliases are expanded: a recipe holds a
#: few hundred; ten levels of aliases nested ten wide would expand to ten billion.
MAX_VALUES = 100_000
#: Digits of an integer (a seed fits in 20); Python refuses to read more than 4300.
MAX_INT_DIGITS = 100

_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigTooCostly(yaml.MarkedYAMLError):
    """YAML that parses, but that a config may not be (too deep, too large, a key twice)."""


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader within the bounds above: refused as soon as one is crossed,
    before anything is expanded or converted, with the place in the text."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._values = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if not self.check_event(yaml.AliasEvent):
            self._values += 1
            if self._values > MAX_VALUES:
                raise ConfigTooCostly(
                    problem=f"more than {MAX_VALUES} values", problem_mark=self._mark()
                )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConfigTooCostly(
                    problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=self._mark()
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _mark(self) -> Any:
        return self.peek_event().start_mark

    # ``anchor`` is the event's anchor name (str | None); types-PyYAML declares it a dict.
    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], Mark] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                continue
            seen = first.setdefault((key.tag, key.value), key.start_mark)
            if seen is not key.start_mark:
                raise ConfigTooCostly(
                    problem=f"duplicate key {key.value!r} (first at line {seen.line + 1}); "
                    "expected each key once",
                    problem_mark=key.start_mark,
                )
        return node

    def compose_document(self) -> Node | None:
        node = super().compose_document()
        _check_expanded(node)
        return node

    def construct_yaml_int(self, node: ScalarNode) -> int:
        digits = len(node.value.lstrip("+-").replace("_", ""))
        if digits > MAX_INT_DIGITS:
            raise ConfigTooCostly(
                problem=f"an integer of {digits} digits (expected at most {MAX_INT_DIGITS})",
                problem_mark=node.start_mark,
            )
        return super().construct_yaml_int(node)


ConfigLoader.add_constructor("tag:yaml.org,2002:int", ConfigLoader.construct_yaml_int)


def _check_expanded(root: Node | None) -> None:
    """Refuse a document whose aliases expand past :data:`MAX_VALUES` values or
    :data:`MAX_DEPTH` levels, or refer to themselves, without expanding it (the size and
    height of each node are computed once and remembered for every alias of it)."""
    seen: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels) when expanded
    path: list[Node] = []

    def measure(node: Node) -> tuple[int, int]:
        if id(node) in seen:
            return seen[id(node)]
        if any(n is node for n in path):
            raise ConfigTooCostly(
                problem="an alias that contains itself (an infinite value)",
                problem_mark=node.start_mark,
            )
        path.append(node)
        if isinstance(node, SequenceNode):
            children: list[Node] = node.value
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        values, levels = 1, 1
        for child in children:
            v, h = measure(child)
            values, levels = values + v, max(levels, h + 1)
            if values > MAX_VALUES:
                raise ConfigTooCostly(
                    problem=f"more than {MAX_VALUES} values once aliases are expanded "
                    "(aliases nested too deep?)",
                    problem_mark=node.start_mark,
                )
            if levels > MAX_DEPTH:
                raise ConfigTooCostly(
                    problem=f"nested deeper than {MAX_DEPTH} levels once aliases are expanded",
                    problem_mark=child.start_mark,
                )
        path.pop()
        seen[id(node)] = (values, levels)
        return values, levels

    if root is not None:
        measure(root)


def parse_yaml(text: str) -> Any:
    """``text`` read by :class:`ConfigLoader`.

    Raises:
        yaml.YAMLError: not YAML (a :class:`ConfigTooCostly` when it crosses a bound).
    """
    loader = ConfigLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:  # a bound above is missing: still one line, never a traceback
        raise ConfigTooCostly(problem=f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


#: Byte-order marks, UTF-32's before UTF-16's (``FF FE 00 00`` starts with ``FF FE``).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _decode(raw: bytes, path: Path) -> str:
    """The text of a config file: UTF-8, or UTF-16 / UTF-32 when a byte-order mark says so."""
    codec = next((c for bom, c in _BOMS if raw.startswith(bom)), None)
    if codec is None and b"\x00" in raw:
        raise ConfigError(
            f"{path}: not UTF-8 text (it holds NUL bytes: UTF-16 or UTF-32 without a "
            "byte-order mark, or not a text file); expected a YAML file saved as UTF-8"
        )
    try:
        return raw.decode(codec or "utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not {(codec or 'utf-8').upper().removesuffix('-SIG')} text (byte "
            f"0x{raw[exc.start]:02x} at line {line}); expected a YAML file saved as UTF-8"
        ) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` within the bounds of :class:`ConfigLoader`;
    errors name the file (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    with open(path, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; expected a YAML config "
            "(a recipe is a few KiB)"
        )
    try:
        data = parse_yaml(_decode(raw, path))
    except ConfigTooCostly as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: {where}{exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    if data is None:
        # Refused rather than read as "every default": an empty file is far more often a
        # wrong path or an unsaved editor buffer than a wish for the defaults ({} says that).
        raise ConfigError(
            f"{path}: empty config file; expected a mapping of sections (data, model, "
            "method, train, ...), or {} for every default"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where it is."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def parse_number(value: Any, key: str = "value") -> float:
    """A float from a number or an exact fraction string such as ``"8/255"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got a boolean {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            pass
    raise ConfigError(f"{key}: expected a number (e.g. 0.03 or 8/255), got {value!r}")


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict; values are parsed as YAML scalars
    (within the bounds of :class:`ConfigLoader`; text that is not YAML stays a string).

    The target key is not checked here (the schema does that, naming the key).
    """
    out = _deep_copy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {_short(item)!r}: expected key=value (e.g. train.epochs=5)"
            )
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {_short(item)!r}: empty key")
        parts = key.split(".")
        if len(parts) > MAX_DEPTH:
            raise ConfigError(f"override {_short(key)!r}: nested deeper than {MAX_DEPTH} levels")
        try:
            value = parse_yaml(text) if text.strip() else None
        except ConfigTooCostly as exc:
            raise ConfigError(f"override {_short(key)}: {exc.problem}") from None
        except yaml.YAMLError:
            value = text
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {_short(item)!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _short(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for an error line."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def from_dict(cls: type[T], data: Any, key: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` strictly; ``key`` is the dotted path for errors."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{key or 'config'}: expected a mapping, got {data!r}")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"from_dict: {cls!r} is not a dataclass")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        path = f"{key}.{name}" if key else str(name)
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" (did you mean {_join(key, close[0])!r}?)" if close else ""
            raise ConfigError(f"unknown key {path!r}{hint}; known: {', '.join(fields)}")
        kwargs[name] = _convert(value, hints[name], path)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing key {_join(key, missing[0])!r}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key or cls.__name__}: {exc}") from None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        # A scalar of exactly one member's type is that member: under ``int | float``,
        # ``2.0`` stays a float (a fraction) and ``2`` an int (a count).
        for arg in args:
            if arg in (bool, int, float, str) and type(value) is arg:
                return _convert(value, arg, key)
        members = [a for a in args if a is not type(None)]
        for arg in members:
            try:
                return _convert(value, arg, key)
            except ConfigError:
                if len(members) == 1 and isinstance(value, Mapping):
                    # ``Section | None`` given a mapping: the section's own error names the
                    # key (``classifier.protocol``), not "expected ClassifierConfig or null".
                    raise
                continue  # the next member may fit; the error below names them all
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}{hint}")
    if origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(
                _convert(v, a, f"{key}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        args = get_args(tp)
        inner = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, inner, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        return parse_number(value, key)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    raise TypeError(f"{key}: unsupported config type {tp!r}")


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML/JSON-serialisable values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
