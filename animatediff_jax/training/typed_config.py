"""Frozen dataclasses filled from YAML mappings, every value checked against its declared type.

    raw = {}
    merge(raw, yaml_mapping, Config, "")              # unknown keys -> UsageError naming the dotted key
    merge(raw, {"a": {"b": "1e-4"}}, Config, "")      # later sources win, section by section
    cfg = build(Config, raw, "")                      # defaults for what is missing; coerced, bounded

Coercion follows the declared type, not what YAML guessed: a float field parses numeric text (YAML
1.1 reads `1e-4` as a string) and must be finite; an int field takes integral numbers or text; bool,
str and `Literal` choices must match exactly; lists become tuples; a dataclass-typed field is a
section (a mapping). `bounded(default, ge=, gt=, le=, lt=)` adds a range to a number field (each
item of a tuple); `field(metadata={"fields_of": Cls})` makes an open mapping whose keys are `Cls`'s
fields. Every error is a `UsageError` whose message starts with the dotted key.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import field
from typing import Any, Literal, Mapping, Sequence, Union

from animatediff_jax.errors import UsageError


def bounded(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None):
    """A dataclass field whose number (or each number of a tuple) must lie in the given bounds."""
    return field(default=default, metadata={"bounds": (ge, gt, le, lt)})


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's field name -> declared type (string annotations evaluated)."""
    return typing.get_type_hints(cls)


def field_type(cls: type, parts: Sequence[str]) -> Any:
    """The declared type at dotted key `parts` under dataclass `cls`, or None when there is no such field."""
    tp = None
    for part in parts:
        section = section_of(tp) if tp is not None else cls
        if section is None or part not in field_types(section):
            return None
        tp = field_types(section)[part]
    return tp


def section_of(tp: Any) -> type | None:
    """The dataclass a field of type `tp` (or `tp | None`) holds, else None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if is_union(tp) else [tp]
    return args[0] if len(args) == 1 and dataclasses.is_dataclass(args[0]) else None


def is_union(tp: Any) -> bool:
    """Whether `tp` is `X | Y` (or `Optional[X]`, `Union[...]`)."""
    return typing.get_origin(tp) in (Union, types.UnionType)


def wants_text(tp: Any) -> bool:
    """Whether a field takes only text (str, a str choice), possibly null."""
    options = [a for a in typing.get_args(tp) if a is not type(None)] if is_union(tp) else [tp]
    return bool(options) and all(a is str or (typing.get_origin(a) is Literal
                                              and all(isinstance(c, str) for c in typing.get_args(a)))
                                 for a in options)


def merge(raw: dict, update: Mapping, cls: type, where: str) -> None:
    """Merge `update` into the raw values of dataclass `cls`, refusing keys `cls` does not have."""
    hints = field_types(cls)
    for key, value in update.items():
        name = f"{where}{key}"
        if key not in hints:
            raise unknown_key(name, hints)
        sub = section_of(hints[key])
        opened = fields_of(cls, key)
        if (sub or opened) and isinstance(value, Mapping):
            if not isinstance(raw.get(key), dict):
                raw[key] = {}
            if sub:
                merge(raw[key], value, sub, name + ".")
            else:
                raw[key].update(value)
        elif (sub and not is_union(hints[key])) or opened:
            raise UsageError(f"{name}: a section; give a mapping, got {value!r}")
        else:
            raw[key] = value


def unknown_key(name: str, known: Mapping) -> UsageError:
    """The error for an unknown dotted key: the closest known name, or all of them."""
    section, _, key = name.rpartition(".")
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f"did you mean {section + '.' if section else ''}{close[0]}?" if close else \
        f"known{' in ' + section if section else ''}: {', '.join(sorted(known))}"
    return UsageError(f"{name}: unknown config key ({hint})")


def fields_of(cls: type, key: str) -> type | None:
    """For an open mapping field (`field(metadata={"fields_of": SomeDataclass})`): that dataclass."""
    return next((f.metadata.get("fields_of") for f in dataclasses.fields(cls) if f.name == key), None)


def build(cls: type, raw: Mapping, where: str):
    """An instance of dataclass `cls` from merged raw values (missing fields take their defaults)."""
    hints, kwargs = field_types(cls), {}
    unknown = sorted(set(raw) - set(hints), key=str)
    if unknown:
        raise unknown_key(f"{where}{unknown[0]}", hints)
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        name, opened = where + f.name, f.metadata.get("fields_of")
        if opened is not None:
            fields = field_types(opened)
            for k in raw[f.name]:
                if k not in fields:
                    raise unknown_key(f"{name}.{k}", fields)
            kwargs[f.name] = types.MappingProxyType(
                {k: coerce(v, fields[k], f"{name}.{k}") for k, v in raw[f.name].items()})
        else:
            kwargs[f.name] = coerce(raw[f.name], hints[f.name], name)
            _check_bounds(kwargs[f.name], f.metadata.get("bounds"), name)
    return cls(**kwargs)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` as declared type `tp` (numbers from numeric text, lists as tuples, mappings as
    dataclasses); UsageError naming `key` when it does not fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if is_union(tp):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        errors = []
        for option in options:
            try:
                return coerce(value, option, key)
            except UsageError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise UsageError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if value is None:
        raise UsageError(f"{key}: expected {_describe(tp)}, got null")
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise UsageError(f"{key}: must be one of {', '.join(map(str, args))}; got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        return _integer(value, key)
    if tp is float:
        return _real(value, key)
    if tp is str:
        if isinstance(value, str):
            return value
        raise UsageError(f"{key}: expected text, got {value!r} (quote it)")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UsageError(f"{key}: expected a list of {len(args)} items, got {value!r}")
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise UsageError(f"{key}: a section; give a mapping, got {value!r}")
        return build(tp, value, key + ".")
    raise TypeError(f"{key}: no coercion for declared type {tp!r}")  # a bug in this module


def _integer(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = value
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            number = _to_float(value)
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        return int(number)
    raise UsageError(f"{key}: expected an integer, got {value!r}")


def _real(value: Any, key: str) -> float:
    number = _to_float(value) if isinstance(value, str) else value
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise UsageError(f"{key}: expected a number, got {value!r}")
    if not math.isfinite(number):
        raise UsageError(f"{key}: must be finite, got {value!r}")
    return float(number)


def _to_float(text: str) -> Any:
    try:
        return float(text.strip().replace("_", ""))
    except ValueError:
        return text


def _describe(tp: Any) -> str:
    if is_union(tp):
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if typing.get_origin(tp) is tuple:
        return "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(tp, str(tp))


def _check_bounds(value: Any, bounds: tuple | None, key: str) -> None:
    if bounds is None or value is None:
        return
    for i, v in enumerate(value) if isinstance(value, tuple) else [(None, value)]:
        ge, gt, le, lt = bounds
        name = key if i is None else f"{key}[{i}]"
        for ok, text in ((ge is None or v >= ge, f">= {ge}"), (gt is None or v > gt, f"> {gt}"),
                         (le is None or v <= le, f"<= {le}"), (lt is None or v < lt, f"< {lt}")):
            if not ok:
                raise UsageError(f"{name}: must be {text}, got {v}")
