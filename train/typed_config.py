"""Frozen dataclasses <-> plain YAML data, converting every value by its declared type.

Every problem (unknown key, wrong type, bad choice, failed cross-field check) is collected with its
key path and raised once as a `ConfigError`, so a user fixes a recipe in one pass.

A schema dataclass may define `problems(self) -> list[Problem]` for cross-field checks. A check names
the key paths it reads; it is dropped when one of them already failed to convert, because it would
then be judging a default the user never chose.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import yaml

_NONE_WORDS = {"null", "none", "~"}
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


class ConfigError(Exception):
    """All problems of one config, each line starting with its key path."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        n = len(self.problems)
        lines = [f"{self.source}: {n} problem{'s' if n != 1 else ''}:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class OverrideText(str):
    """A value typed on the command line: kept verbatim for `str` fields, parsed as YAML otherwise."""


def parse_overrides(args: Iterable[str], problems: list[str]) -> dict[str, Any]:
    """`["optim.lr=1e-5", "data.batch_size=64"]` -> nested dict with `OverrideText` leaves."""
    nested: dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {arg!r}: expected key.sub=value")
            continue
        parts = key.strip().split(".")
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"{key}: conflicts with an earlier override of {part}")
                break
            node = child
        else:
            node[parts[-1]] = OverrideText(value)
    return nested


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merges override mappings into base mappings; leaves replace whatever was there."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build(cls: type, data: Any, source: str) -> Any:
    """Builds `cls` from plain data, or raises ConfigError listing every problem."""
    obj, problems, _ = build_partial(cls, data)
    if problems:
        raise ConfigError(source, problems)
    return obj


def build_partial(cls: type, data: Any) -> tuple[Any, list[str], set[str]]:
    """(object, problems, key paths that failed to convert): the object holds schema defaults where a value failed,
    so that further checks (of files the config names, say) can run on the keys that did convert."""
    problems: list[str] = []
    failed: set[str] = set()
    obj = _build_dataclass(cls, data, "", problems, failed)
    return obj, problems, failed


def failed_under(path: str, failed: set[str]) -> bool:
    """Whether `path`, a key above it or a key below it failed to convert (see build_partial)."""
    return any(
        path == f or not f or path.startswith(f + ".") or path.startswith(f + "[") or f.startswith(path + ".")
        for f in failed
    )


def to_plain(obj: Any) -> Any:
    """Dataclass tree -> dicts/lists/scalars, in field order (YAML- and JSON-ready)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    return obj


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_plain(obj), sort_keys=False, allow_unicode=True)


def flatten(plain: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1e-5}} -> {"optim.lr": 1e-5} (for trackers and tables)."""
    flat: dict[str, Any] = {}
    for key, value in plain.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


# --- conversion -------------------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _build_dataclass(cls: type, data: Any, path: str, problems: list[str], failed: set[str]) -> Any:
    where = path or "top level"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problems.append(f"{where}: expected a mapping of keys, got {_describe(data)}")
        failed.add(path)
        data = {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            problems.append(_unknown_key(str(key), path, list(fields)))
    values: dict[str, Any] = {}
    for name in fields:
        key_path = _join(path, name)
        field_type = hints[name]
        if dataclasses.is_dataclass(field_type):
            values[name] = _build_dataclass(field_type, data.get(name), key_path, problems, failed)
            continue
        if name not in data:
            continue  # the schema default applies
        try:
            values[name] = _convert(data[name], field_type, key_path)
        except _ConversionError as err:
            problems.append(str(err))
            failed.add(key_path)
    obj = cls(**values)
    check = getattr(obj, "problems", None)
    if callable(check):
        for problem in check():
            paths = [_join(path, k) for k in problem.keys]
            if not any(p in failed or any(p.startswith(f + ".") for f in failed if f) for p in paths):
                problems.append(f"{' / '.join(paths)}: {problem.message}")
    return obj


class _ConversionError(Exception):
    pass


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    return f"{kind.get(type(value), type(value).__name__)} {value!r}"


def _unknown_key(key: str, path: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean {_join(path, close[0])!r}?" if close else f"valid keys here: {', '.join(valid)}"
    return f"{_join(path, key)}: unknown key; {hint}"


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, OverrideText) and value.strip().lower() in _NONE_WORDS):
            return None
        if len(inner) != 1:
            raise TypeError(f"unsupported union type at {path}: {tp}")
        return _convert(value, inner[0], path)
    if origin is Literal:
        text = value if isinstance(value, str) else None
        if isinstance(value, OverrideText):
            text = str(value).strip()
        if text not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if isinstance(value, bool):
                hint = " (YAML reads yes/no/on/off as booleans: quote the word)"
            raise _ConversionError(
                f"{path}: {value!r} is not a valid choice{hint}; choose one of {', '.join(map(repr, args))}"
            )
        return str(text)
    if origin is tuple:
        item_type = args[0]
        if isinstance(value, OverrideText):
            value = _parse_override(value)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            value = [value]  # a single value stands for a one-element list
        if not isinstance(value, list | tuple):
            raise _ConversionError(f"{path}: expected a list, got {_describe(value)}")
        return tuple(_convert(v, item_type, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is str:
        if isinstance(value, OverrideText):
            return str(value)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _ConversionError(
                f"{path}: expected a string, got {_describe(value)} (quote it in YAML to keep it as text)"
            )
        return str(value)
    if isinstance(value, OverrideText):
        value = _parse_override(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str | int) and str(value).strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[str(value).strip().lower()]
        raise _ConversionError(f"{path}: expected true or false, got {_describe(value)}")
    if tp is int:
        number = _as_number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            raise _ConversionError(f"{path}: expected an integer, got {_describe(value)}")
        return int(number)
    if tp is float:
        number = _as_number(value)
        if number is None:
            raise _ConversionError(f"{path}: expected a number, got {_describe(value)}")
        if not math.isfinite(number):  # every number of the schema is a rate, a weight or a bound: nan/inf are errors
            raise _ConversionError(f"{path}: expected a finite number, got {_describe(value)}")
        return float(number)
    raise TypeError(f"unsupported field type at {path}: {tp}")


def _parse_override(text: OverrideText) -> Any:
    try:
        return yaml.safe_load(str(text))
    except yaml.YAMLError:
        return str(text)


def _as_number(value: Any) -> float | None:
    # PyYAML 1.1 reads `5e-6` (no dot) as a string, so numbers are parsed from text as well.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip().replace("_", ""))
        except ValueError:
            return None
    return None
