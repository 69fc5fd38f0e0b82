"""The typed configuration layer of every command: a config dataclass built from a JSON or YAML file and
`field=value` / `section.field=value` overrides, every value checked against its field's type annotation, ranges
declared on the field itself (`steps: int = field(default=500, metadata=at_least(1))`), unknown names refused with
the closest valid one, and the file and the field named in every error.

Values typed on the command line (`Text`) are read by the field's type: `true/false/1/0` for a boolean, digits for a
whole number, JSON for a list, tuple or object, as written for a string. Values from a file must already have the
field's type (a JSON "false" where a boolean is due is refused, not read as true). Nothing here reads a model or data,
so commands check their whole configuration before any process group, model load or data read.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path

import yaml

from cli.errors import did_you_mean

AT_LEAST = "at_least"


class Text(str):
    """A value as typed on the command line; the field's type decides how it reads."""


def at_least(bound: float, reason: str = "") -> dict:
    """Field metadata: the smallest valid value (and, if useful, why)."""
    return {AT_LEAST: (bound, reason)}


def load_file(path: str | Path) -> dict:
    """The object in a .json, .yaml or .yml config file; errors name the file and, for a syntax error, the line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist" if not path.exists() else f"config file {path} is not a file")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"config file {path}{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {path} line {e.lineno} column {e.colno} is not valid JSON: {e.msg}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold an object of config fields, not {type(values).__name__}")
    return values


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """`values` with each `name=value` / `section.name=value` applied as `Text` (read by the field's type later)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not name=value or section.name=value (e.g. steps=100)")
        node, parts = values, key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                sections = [k for k, v in values.items() if isinstance(v, dict)]
                raise ValueError(f"override {key!r}: {part!r} is not a config section; sections: {sections}")
            node = child
        node[parts[-1]] = Text(raw)
    return values


def build(cls, values: dict, where: str = ""):
    """An instance of the config dataclass `cls` from `values` (nested sections as dicts), every value read by or
    checked against its field's type. Ranges are checked by `check` (a config's `validate`)."""
    if isinstance(values, Text):
        values = _json(values, f"{where.rstrip('.') or 'config'}")
    if not isinstance(values, dict):
        raise ValueError(f"config section {where.rstrip('.') or 'root'} must be an object, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config field(s) {[where + u for u in unknown]}{did_you_mean(unknown[0], fields)}; "
                         f"valid in {where.rstrip('.') or 'the root'}: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _read(value, hints[name], where + name) for name, value in values.items()})


def check(config, where: str = "") -> None:
    """Every field of `config` (and of its sections) has its type and is within its declared range; for configs
    built in code rather than by `build`."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, name = getattr(config, f.name), where + f.name
        if dataclasses.is_dataclass(value):
            check(value, name + ".")
            continue
        if f.name in hints and not isinstance(value, Text):
            _read(value, hints[f.name], name)
        if AT_LEAST in f.metadata:
            bound, reason = f.metadata[AT_LEAST]
            if value < bound:
                raise ValueError(f"{name}={value!r} must be >= {bound}" + (f" ({reason})" if reason else ""))


def _json(text: str, name: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{name}={str(text)!r} must be JSON here (e.g. [1, 2] or {{\"key\": 1}})") from None


def _read(value, tp, name: str):
    """`value` as the annotation `tp` wants it, or ValueError naming the field."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, Text) and value.lower() in ("null", "none"))):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _read(value, arg, name)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0])
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            check(value, name + ".")
            return value
        return build(tp, value, name + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, Text) and value.lower() in ("true", "1", "false", "0"):
            return value.lower() in ("true", "1")
        raise ValueError(f"{name}={str(value) if isinstance(value, Text) else value!r} must be true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, Text) and re.fullmatch(r"[-+]?\d+", value.strip()):
            return int(value)
        raise ValueError(f"{name}={str(value) if isinstance(value, Text) else value!r} must be a whole number")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, Text):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{name}={str(value) if isinstance(value, Text) else value!r} must be a number")
    if tp is str:
        if isinstance(value, str):
            return str(value)
        raise ValueError(f"{name}={value!r} must be a string")
    if origin is tuple or tp is tuple:
        items = _json(value, name) if isinstance(value, Text) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{name}={items!r} must be a list")
        if args and args[-1] is not Ellipsis and len(items) != len(args):
            raise ValueError(f"{name}={list(items)!r} must have {len(args)} items")
        kinds = [args[0]] * len(items) if args and args[-1] is Ellipsis else list(args) or [typing.Any] * len(items)
        return tuple(_read(item, kind, f"{name}[{i}]") for i, (item, kind) in enumerate(zip(items, kinds)))
    if origin is list or tp is list:
        items = _json(value, name) if isinstance(value, Text) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{name}={items!r} must be a list")
        return [_read(item, args[0], f"{name}[{i}]") if args else item for i, item in enumerate(items)]
    if origin is dict or tp is dict:
        mapping = _json(value, name) if isinstance(value, Text) else value
        if not isinstance(mapping, dict):
            raise ValueError(f"{name}={mapping!r} must be an object")
        # a dict field's own keys given one by one on the command line (model.overrides.num_layers=2) read as JSON
        return {k: _plain(v) for k, v in mapping.items()}
    return _plain(value)


def _plain(value):
    """A command-line value with no field type to go by: JSON when it parses, else the text."""
    if isinstance(value, Text):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
