"""Dataclass configs: YAML files, dotted ``key=value`` overrides, strict key checking.

Every config in the project is a (possibly nested) dataclass. ``from_dict`` builds one from a
plain mapping and refuses unknown keys with an error that names the source and the dotted key,
so a typo in a YAML file never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from actbert.errors import ActBertError

T = TypeVar("T")


class ConfigError(ActBertError):
    """A config file or override that does not match the dataclass schema."""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/JSON value to the annotated type ``tp`` (dataclasses, lists, tuples, scalars)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, source=where)
    if origin is typing.Union or (origin is not None and str(origin) == "types.UnionType"):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        last_error: Exception | None = None
        for candidate in non_none:
            try:
                return _coerce(value, candidate, where)
            except (ConfigError, TypeError, ValueError) as exc:
                last_error = exc
        raise ConfigError(f"{where}: {value!r} does not match {tp}") from last_error
    if origin in (list, Sequence, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from exc
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from exc
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {args}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ``ConfigError`` naming ``source.key``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    types = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown config key(s) {', '.join(repr(k) for k in unknown)} "
            f"for {cls.__name__}; known keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, types[k], f"{source}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) -> plain dict/list/scalars, suitable for YAML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-4"`` -> (["optim", "lr"], 1e-4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    return key.split("."), yaml.safe_load(raw)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply dotted overrides to a plain nested dict (returns a new dict)."""
    out = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[path[-1]] = value
    return out


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Load dataclass ``cls`` from a YAML file (optional), then apply ``key=value`` overrides.

    Unknown keys anywhere (file or override) raise ``ConfigError`` naming the file and key.
    """
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        data = loaded
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} (with overrides {list(overrides)})"
    return from_dict(cls, data, source=source)


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: ``low <= x <= high`` (a bound is exclusive when its
    ``*_open`` flag is set; ``None`` = unbounded). The default, ``Range()``, is "a number >= 0"."""

    low: float | None = 0
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def describe(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else "a finite number"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        low = "-inf" if self.low is None else f"{self.low:g}"
        return f"in {left}{low}, {self.high:g}{right}"


AT_LEAST_ONE = Range(1)
POSITIVE = Range(0, low_open=True)
FRACTION = Range(0, 1)  # a probability or ratio
DROPOUT = Range(0, 1, high_open=True)


def check_ranges(obj: Any, ranges: Mapping[str, Range], source: str, prefix: str = "", default: Range | None = Range()) -> None:
    """Every int / float field of dataclass ``obj`` within its range (``ranges[name]``, else
    ``default``; ``None`` = unchecked): a ``ConfigError`` naming ``source``, the key and the range."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        rule = ranges.get(f.name, default)
        if rule is not None and not rule.contains(value):
            raise ConfigError(f"{source}: {prefix}{f.name} must be {rule.describe()}, got {value!r}")


def save_yaml(obj: Any, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
