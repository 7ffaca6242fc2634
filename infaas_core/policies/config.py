"""Policy configuration: a policy's params mapping turned into frozen dataclasses.

Every constant a policy uses lives in ``configs/policy/<name>.yaml`` (composed with Hydra
``defaults:``) with its meaning and source; the code holds none, and this package never reads
YAML. The edge (the command lines, through :mod:`infaas_edge`) composes a policy's full params
and the policy parses them at construction with :func:`parse_config`:

- an unknown key, a missing key or a value of the wrong type raises
  :class:`~infaas_core.errors.ConfigError` naming the full dotted key (``policy.monitor.gpu.qps_factor``);
- nothing is filled in: a policy built without its params fails naming the first missing key,
  so the code has no defaults that could drift from the YAML (the YAML *is* the default).

The parser understands the field types the policy configs use: ``bool``, ``int``,
``float``, ``str``, ``Literal[...]``, ``X | None``, ``dict[str, int | float | str]`` and
nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from infaas_core.errors import ConfigError

T = TypeVar("T")


def parse_config(cls: type[T], data: Any, key: str) -> T:
    """Build the frozen dataclass ``cls`` from mapping ``data``; errors name ``key.<field>``."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(key, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"unknown key; known: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name in fields:
        if name not in data:
            raise ConfigError(f"{key}.{name}", "missing key")
        kwargs[name] = _convert(hints[name], data[name], f"{key}.{name}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(key)
    return obj


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(key, "must not be null")
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, key)
        errors = []
        for a in inner:
            try:
                return _convert(a, value, key)
            except ConfigError as e:
                errors.append(e.reason)
        raise ConfigError(key, "; ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return parse_config(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported config field type {tp!r}")


def require(cond: bool, key: str, reason: str) -> None:
    """Raise ``ConfigError(key, reason)`` unless ``cond`` (for ``validate`` methods)."""
    if not cond:
        raise ConfigError(key, reason)
