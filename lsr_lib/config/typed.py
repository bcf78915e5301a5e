"""Strict loading of frozen dataclasses from plain dicts (the machinery behind ``config``).

Unknown keys and wrong types raise :class:`ConfigError` naming the key, before any work starts;
lists become tuples; a dataclass's ``validate()`` runs after construction (inner sections first,
so a section's rules see checked types and an outer rule sees valid sections). A ``validate()``
lists its rules as data, ``(key, acceptable?, what it must be)``, and hands them to :func:`check`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Callable, Iterable

Rule = tuple[str, bool, str]  # (key, acceptable?, what it must be)


class ConfigError(ValueError):
    """A profile file has an unknown key, a wrong type or a bad value."""


def opt_in(default: Any) -> Any:
    """A setting added later whose ``default`` keeps the earlier behaviour: :func:`to_dict` leaves it
    out while it has that value, so config hashes and fingerprints (and the caches they key) made
    before it existed stay valid."""
    return dataclasses.field(default=default, metadata={"omit_at_default": True})


def opt_in_section(factory: Callable[[], Any]) -> Any:
    """:func:`opt_in` for a whole config section (a dataclass built by ``factory``)."""
    return dataclasses.field(default_factory=factory, metadata={"omit_at_default": True})


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain JSON-able dict (tuples become lists; :func:`opt_in` settings only when set)."""
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (f.metadata.get("omit_at_default") and getattr(obj, f.name) == _default(f))
        }
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj


def check(obj: Any, rules: Iterable[Rule]) -> None:
    """Raise ConfigError ``key: must be <what>, got <value>`` for the first failed rule (dotted keys reach into
    sections)."""
    for key, ok, must in rules:
        if not ok:
            raise ConfigError(f"{key}: must be {must}, got {to_dict(functools.reduce(getattr, key.split('.'), obj))!r}")


def each(obj: Any, keys: str, test: Callable[[Any], bool], must: str) -> list[Rule]:
    """One rule per space-separated key of ``obj``: ``test(value)`` must hold."""
    return [(k, bool(test(getattr(obj, k))), must) for k in keys.split()]


def positive(obj: Any, keys: str) -> list[Rule]:
    """Each key is a finite number > 0."""
    return each(obj, keys, lambda v: 0 < v < math.inf, "> 0")


def non_negative(obj: Any, keys: str) -> list[Rule]:
    """Each key is a finite number >= 0 (seeds, weights, counts where 0 means none)."""
    return each(obj, keys, lambda v: 0 <= v < math.inf, ">= 0")


def one_of(obj: Any, key: str, allowed: Iterable[str]) -> Rule:
    """The key's value is one of ``allowed``."""
    allowed = tuple(allowed)
    return key, getattr(obj, key) in allowed, f"one of {', '.join(allowed)}"


def items_from(obj: Any, key: str, allowed: Iterable[str], empty: bool = False) -> Rule:
    """The key's list holds distinct names from ``allowed`` (and at least one unless ``empty``)."""
    allowed, value = tuple(allowed), getattr(obj, key)
    ok = set(value) <= set(allowed) and len(set(value)) == len(value) and (empty or len(value) > 0)
    return key, ok, f"a list of distinct names from {', '.join(allowed)}" + ("" if empty else " (at least one)")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against type ``tp`` (recursively), converting lists to tuples."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of settings, got {type(value).__name__}")
        return build_dataclass(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def build_dataclass(cls: type, values: dict, where: str = "") -> Any:
    """Build ``cls`` from a dict, rejecting unknown keys and wrong types by name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(where + '.' + k if where else k for k in unknown)}; "
            f"allowed in {where or 'the top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as e:
            raise ConfigError(f"{where}.{e}" if where and not str(e).startswith(f"{where}.") else str(e)) from None
    return obj
