"""The generic validator: a parsed YAML value checked against a dataclass field's annotation and rules, and
converted to that type; every mistake a one-line `UserError` naming the key by its dotted path.

Annotations handled: bool, int, float, str, Literal, unions with None, tuples (fixed or `...`), and
dataclasses (a nested mapping); rules: semisup.core.fields (ge/gt/le/lt bounds, `pair`, `nonempty`).
"""

from __future__ import annotations

import dataclasses
import math
import operator
import types
import typing
from typing import Any, Literal

from semisup.config.dialect import Empty
from semisup.core.errors import UserError


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = " or null" if type(None) in typing.get_args(tp) else ""
        return " or ".join(_type_name(a) for a in args) + nullable
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} {_type_name(args[0])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def convert(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp` and return it in that type."""
    if isinstance(value, Empty):  # `key:` with nothing after it
        if dataclasses.is_dataclass(tp):
            return build(key, None, tp)
        if type(None) in typing.get_args(tp):
            return None
        raise UserError(f"{key}: no value (line {value.line}): write one, or delete the key for its default")
    origin = typing.get_origin(tp)
    bad = UserError(f"{key}: {value!r} is not {_type_name(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for inner in (a for a in typing.get_args(tp) if a is not type(None)):
            try:
                return convert(key, value, inner)
            except UserError:
                continue
        raise bad
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad
        return tuple(convert(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if dataclasses.is_dataclass(tp):
        return build(key, value, tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):
            hint = " (PyYAML reads 1e-3 as a string: write 1.0e-3)" if _looks_numeric(value) else ""
            raise UserError(f"{key}: {value!r} is not a number{hint}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


_BOUNDS = {
    "ge": (operator.ge, ">="),
    "gt": (operator.gt, ">"),
    "le": (operator.le, "<="),
    "lt": (operator.lt, "<"),
}


def _check_rules(key: str, value: Any, rules: dict) -> None:
    if value is None:
        return
    items = list(value) if isinstance(value, tuple) else [value]
    if rules.get("nonempty") and not items:
        raise UserError(f"{key}: must not be empty")
    for v in items:
        for op, bound in rules.items():
            if op in _BOUNDS and not _BOUNDS[op][0](v, bound):
                raise UserError(f"{key}: {_show(value)} is out of range (must be {_BOUNDS[op][1]} {bound})")
    if rules.get("pair") and value[0] > value[1]:
        raise UserError(f"{key}: {_show(value)} must be [low, high] with low <= high")


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else repr(value)


def build(prefix: str, raw: Any, cls: type) -> Any:
    """Build dataclass `cls` from the mapping `raw`, naming every key by its dotted path."""
    where = prefix or "params.yaml"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise UserError(f"{dotted}: unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    for yaml_key, f in fields.items():
        if yaml_key not in raw:
            continue
        dotted = f"{prefix}.{yaml_key}" if prefix else yaml_key
        value = convert(dotted, raw[yaml_key], hints[f.name])
        _check_rules(dotted, value, f.metadata.get("rules", {}))
        kwargs[f.name] = value
    return cls(**kwargs)
