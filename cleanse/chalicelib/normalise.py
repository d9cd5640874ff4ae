"""Declarative per-type normalisation (`rules.json`); pure: no I/O, no schema, never mutates.

Numbers are coerced from strings BEFORE validation, so "12.50" passes a number schema and
the schema describes exactly what cleanse sends on (order of rules: see `normalise`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sluice.errors import ConfigError, PermanentError

UNKNOWN_DROP = "drop"
UNKNOWN_KEEP = "keep"
_RULE_KEYS = frozenset(
    {
        "trim",
        "blank_is_missing",
        "lowercase",
        "uppercase",
        "timestamps",
        "numbers",
        "unknown_fields",
        "natural_key",
        "description",
    }
)
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_EPOCH_RE = re.compile(r"[+-]?\d+(?:\.\d+)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TypeRules:
    """The normalisation rules of one record type, as read from its `rules.json`."""

    trim: bool = True
    blank_is_missing: bool = False
    lowercase: tuple[str, ...] = ()
    uppercase: tuple[str, ...] = ()
    timestamps: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    unknown_fields: str = UNKNOWN_DROP
    natural_key: str | None = None

    @classmethod
    def from_json(cls, raw: Any, *, where: str = "rules.json") -> TypeRules:
        """Parse and check a `rules.json` document; `ConfigError` names what is wrong."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: not a JSON object")
        unknown = sorted(set(raw) - _RULE_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown rule(s) {unknown}")
        unknown_fields = raw.get("unknown_fields", UNKNOWN_DROP)
        if unknown_fields not in (UNKNOWN_DROP, UNKNOWN_KEEP):
            raise ConfigError(f"{where}: unknown_fields must be 'drop' or 'keep'")
        natural_key = raw.get("natural_key")
        if natural_key is not None and (not isinstance(natural_key, str) or not natural_key):
            raise ConfigError(f"{where}: natural_key must be a field name")
        return cls(
            trim=_flag(raw, "trim", True, where),
            blank_is_missing=_flag(raw, "blank_is_missing", False, where),
            lowercase=_paths(raw, "lowercase", where),
            uppercase=_paths(raw, "uppercase", where),
            timestamps=_paths(raw, "timestamps", where),
            numbers=_paths(raw, "numbers", where),
            unknown_fields=unknown_fields,
            natural_key=natural_key,
        )

    def fields(self) -> set[str]:
        """Top-level fields the rules name (they must exist in the schema)."""
        named = [*self.lowercase, *self.uppercase, *self.timestamps, *self.numbers]
        if self.natural_key:
            named.append(self.natural_key)
        return {path.split(".")[0].removesuffix("[]") for path in named}


def normalise(payload: Any, rules: TypeRules, known_fields: frozenset[str]) -> dict[str, Any]:
    """A normalised copy of `payload`; `PermanentError` naming the field for a bad value.

    Order: the payload must be an object; strings are trimmed (recursively); blanks are
    dropped (`blank_is_missing`: CSV has no null); unknown top-level fields are dropped
    (`unknown_fields: "drop"`; nested shapes are the schema's business); case is fixed;
    numbers are parsed; timestamps made UTC. The schema validates the result (`catalogue`).
    Field paths are names joined by "."; a name ending in "[]" walks every item of a list
    (`items[].quantity`). A rule skips absent and null fields: `required` reports those.
    """
    if not isinstance(payload, Mapping):
        raise PermanentError(f"payload is a JSON {_json_kind(payload)}, not an object")
    data: dict[str, Any] = {str(k): v for k, v in payload.items()}
    if rules.trim:
        data = {k: _trimmed(v) for k, v in data.items()}
    if rules.blank_is_missing:
        data = {k: v for k, v in data.items() if v != ""}
    if rules.unknown_fields == UNKNOWN_DROP:
        data = {k: v for k, v in data.items() if k in known_fields}
    for path in rules.lowercase:
        _apply(data, path, _lower)
    for path in rules.uppercase:
        _apply(data, path, _upper)
    for path in rules.numbers:
        _apply(data, path, parse_number)
    for path in rules.timestamps:
        _apply(data, path, parse_timestamp)
    return data


def parse_number(value: Any, field: str) -> Any:
    """A number from a numeric string ("12.50" → 12.5, "42" → 42); NaN and ±inf refused.

    Strings are checked against a strict grammar (no "1_000", "0x1f", " 1,5", "NaN"), then
    parsed with `Decimal` so no float rounding happens before the final conversion. Values
    that are neither strings nor numbers are left for the schema to refuse.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PermanentError(f"field {field!r}: {value!r} is not a finite number")
        return value
    if not isinstance(value, str):
        return value
    if not _NUMBER_RE.fullmatch(value):
        raise PermanentError(f"field {field!r}: {_show(value)} is not a number")
    try:
        number = Decimal(value)
    except InvalidOperation:  # pragma: no cover - the grammar above admits only decimals
        raise PermanentError(f"field {field!r}: {_show(value)} is not a number") from None
    if number == number.to_integral_value() and not any(c in value for c in ".eE"):
        return int(number)
    result = float(number)
    if not math.isfinite(result):
        raise PermanentError(f"field {field!r}: {_show(value)} is out of range")
    return result


def parse_timestamp(value: Any, field: str) -> str:
    """`value` as UTC `YYYY-MM-DDTHH:MM:SS.sssZ` (sub-millisecond digits are cut, not rounded).

    Accepted: ISO 8601 with `Z` or an offset; naive ISO 8601, taken as UTC (a producer that
    means local time must send an offset; guessing a zone would be worse); epoch seconds as a
    number or a numeric string (CSV). Refused: a date without a time of day, and epoch values
    out of datetime's range (epoch milliseconds land there: they are not silently rescaled).
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PermanentError(f"field {field!r}: a timestamp cannot be a JSON {_json_kind(value)}")
    try:
        if isinstance(value, int | float) or _EPOCH_RE.fullmatch(value):
            seconds = Decimal(str(value))
            if not seconds.is_finite():
                raise ValueError("not finite")
            at = _EPOCH + timedelta(milliseconds=int(seconds * 1000))
        else:
            at = datetime.fromisoformat(value)
            if not any(sep in value for sep in "Tt "):
                raise PermanentError(
                    f"field {field!r}: timestamp {_show(value)} has no time of day"
                )
            at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError, InvalidOperation):
        raise PermanentError(f"field {field!r}: cannot parse timestamp {_show(value)}") from None
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _apply(data: dict[str, Any], path: str, convert: Callable[[Any, str], Any]) -> None:
    for container, key, name in _targets(data, path.split("."), ""):
        value = container[key]
        if value is not None:
            container[key] = convert(value, name)


def _targets(node: Any, parts: list[str], prefix: str) -> Iterator[tuple[Any, Any, str]]:
    """(container, key, field name) of every value `parts` reaches under `node`."""
    head, rest = parts[0], parts[1:]
    is_list = head.endswith("[]")
    name = head.removesuffix("[]")
    if not isinstance(node, dict) or name not in node:
        return
    here = f"{prefix}.{name}" if prefix else name
    if not is_list:
        if rest:
            yield from _targets(node[name], rest, here)
        else:
            yield node, name, here
        return
    items = node[name]
    if not isinstance(items, list):
        return  # the schema says what is wrong with it
    for i in range(len(items)):
        if rest:
            yield from _targets(items[i], rest, f"{here}[{i}]")
        else:
            yield items, i, f"{here}[{i}]"


def _trimmed(value: Any) -> Any:
    """`value` with every string in it stripped; containers are copies, never changed.

    Runs over every field of every record: strings and numbers inside a container are
    handled in its comprehension, without a call each (a quarter less time than the plain
    recursive version on the synthetic orders).
    """
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        return {
            k: v.strip() if type(v) is str else v if type(v) in _LEAVES else _trimmed(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            v.strip() if type(v) is str else v if type(v) in _LEAVES else _trimmed(v) for v in value
        ]
    return value


_LEAVES = frozenset({int, float, bool, type(None)})


def _lower(value: Any, field: str) -> Any:
    return value.lower() if isinstance(value, str) else value


def _upper(value: Any, field: str) -> Any:
    return value.upper() if isinstance(value, str) else value


def _flag(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false")
    return value


def _paths(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ConfigError(f"{where}: {key} must be a list of field paths")
    return tuple(value)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, Mapping) else type(value).__name__


def _show(value: object, limit: int = 60) -> str:
    """A value for a reason string, cut short (reasons are logged and stored)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
