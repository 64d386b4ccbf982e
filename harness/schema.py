"""Turn plain YAML mappings into typed dataclasses, naming the exact key of every mistake.

A tiny, strict reader: unknown keys are errors (a typo must never silently fall back to a default),
values are checked against the field's type and its ``choices``/``min``/``max`` metadata.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from harness.errors import ConfigError

T = TypeVar("T")


def choice(default: Any, choices: Any, **extra: Any) -> Any:
    """A field whose value must be one of ``choices`` (a collection, or a callable returning one)."""
    meta = {"choices": choices, **extra}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def bounded(default: Any, *, min: float | None = None, max: float | None = None) -> Any:  # noqa: A002
    return dataclasses.field(default=default, metadata={"min": min, "max": max})


def _allowed(meta: dict) -> list[Any] | None:
    choices = meta.get("choices")
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str | None) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}", source)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(
                key, f"{value!r} is not allowed; allowed: {', '.join(map(str, get_args(tp)))}", source
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}", source)
        (item_tp,) = get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}", source)
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, key, source)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}", source)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}", source)
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected a number, got {value!r}", source)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
        if not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}", source)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}", source)
        return value
    raise TypeError(f"unsupported field type {tp!r} at {key}")


def parse(cls: type[T], data: Any, key: str, source: str | None = None) -> T:
    """Build dataclass ``cls`` from a mapping; ``key`` is the dotted path used in error messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(key, f"expected a mapping, got {data!r}", source)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        name = f"{key}.{unknown[0]}" if key else str(unknown[0])
        raise ConfigError(name, f"unknown key; allowed keys here: {', '.join(fields)}", source)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        path = f"{key}.{name}" if key else name
        if name not in data:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required:
                raise ConfigError(path, "is required", source)
            continue
        value = _coerce(data[name], hints[name], path, source)
        allowed = _allowed(f.metadata)
        if allowed is not None and value is not None:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if item not in allowed:
                    raise ConfigError(
                        path, f"{item!r} is not allowed; allowed: {', '.join(map(str, allowed))}", source
                    )
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if lo is not None and value is not None and value < lo:
            raise ConfigError(path, f"must be at least {lo}, got {value!r}", source)
        if hi is not None and value is not None and value > hi:
            raise ConfigError(path, f"must be at most {hi}, got {value!r}", source)
        values[name] = value
    return cls(**values)


def to_dict(obj: Any) -> Any:
    """Plain, JSON-able view of a parsed spec (the inverse of :func:`parse`)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
