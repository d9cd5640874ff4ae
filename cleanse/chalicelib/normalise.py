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


class NotFast(Exception):
    """The one-pass normaliser met something it leaves to `normalise` (which names it)."""


ItemLeaves = tuple[tuple[str, Callable[[Any, str], Any]], ...]
ListCleaner = Callable[[list[Any]], list[Any]]


def compile_rules(
    rules: TypeRules,
    known_fields: frozenset[str],
    list_cleaner: Callable[[str, ItemLeaves], ListCleaner | None] | None = None,
) -> Callable[[Any], dict[str, Any]] | None:
    """`normalise` for one type as one pass over the payload's fields, built once per type.

    Same output as `normalise(payload, rules, known_fields)` for a payload it accepts; for
    anything else (a bad value, a payload that is not an object) it raises, and the caller
    runs `normalise`, which names the field: messages are built only on error. None when
    the rules need the general walk (`trim: false` with nested paths: `normalise` then
    converts inside the caller's own containers, which a copy here would not reproduce).

    `list_cleaner(name, leaves)` may supply the loop for a list of objects whose rules all
    reach one field of each item (the leaves: (field, converter) in the rules' order); it
    must trim and convert each item as `_list_of_objects` does, and may raise (NotFast) to
    leave the payload to `normalise`. None from it: `_list_of_objects` does the items.
    """
    steps: dict[str, list[Callable[[Any], Any]]] = {}
    leaves: dict[str, list[tuple[str, Callable[[Any, str], Any]]]] = {}
    for paths, convert in (
        (rules.lowercase, _lower),
        (rules.uppercase, _upper),
        (rules.numbers, _fast_number),
        (rules.timestamps, _fast_timestamp),
    ):
        for path in paths:
            head, *rest = path.split(".")
            if rest and not rules.trim:
                return None
            name = head.removesuffix("[]")
            steps.setdefault(name, []).append(_step(head.endswith("[]"), rest, convert))
            if head.endswith("[]") and len(rest) == 1 and not rest[0].endswith("[]"):
                leaves.setdefault(name, []).append((rest[0], convert))
    plan = {name: _chain(found) for name, found in steps.items()}
    # A list of objects whose rules all reach one field of each item ("items[].quantity"):
    # trimmed and converted in one loop over the items.
    fused = {
        name: (list_cleaner and list_cleaner(name, tuple(found))) or _list_of_objects(tuple(found))
        for name, found in leaves.items()
        if rules.trim and len(found) == len(steps[name])
    }
    trim, blank = rules.trim, rules.blank_is_missing
    known = known_fields if rules.unknown_fields == UNKNOWN_DROP else None

    def one_pass(payload: Any) -> dict[str, Any]:
        if type(payload) is not dict:
            raise NotFast
        out: dict[str, Any] = {}
        for key, value in payload.items():
            if type(key) is not str:
                raise NotFast
            kind = type(value)
            if kind is list and key in fused and (known is None or key in known):
                out[key] = fused[key](value)
                continue
            if trim:  # unknown fields too, as `normalise` does (a hostile one fails there)
                if kind is str:
                    value = value.strip()
                elif kind is dict or kind is list:
                    value = _trimmed(value)
            if blank and value == "":
                continue
            if known is not None and key not in known:
                continue
            convert = plan.get(key)
            if convert is not None and value is not None:
                value = convert(value)
            out[key] = value
        return out

    return one_pass


def _list_of_objects(
    leaves: tuple[tuple[str, Callable[[Any, str], Any]], ...],
) -> Callable[[list[Any]], list[Any]]:
    """Trim a list and apply `leaves` (field of each item, converter) to its objects."""
    numbers = tuple(leaf for leaf, convert in leaves if convert is _fast_number)
    others = tuple((leaf, convert) for leaf, convert in leaves if convert is not _fast_number)
    if len(numbers) + len(others) != len(leaves) or (numbers and others):
        numbers, others = (), leaves  # the rules' order must hold: one loop per rule

    def convert_items(value: list[Any]) -> list[Any]:
        out = []
        for item in value:
            kind = type(item)
            if kind is not dict:
                out.append(_trimmed(item))
                continue
            new: dict[str, Any] = {
                k: v.strip() if type(v) is str else v if type(v) in _LEAVES else _trimmed(v)
                for k, v in item.items()
            }
            for leaf in numbers:
                found: Any = new.get(leaf)
                kind = type(found)
                if kind is int or found is None or (kind is float and found - found == 0.0):
                    continue
                new[leaf] = _fast_number(found, "")
            for leaf, convert in others:
                found = new.get(leaf)
                if found is not None:
                    new[leaf] = convert(found, "")
            out.append(new)
        return out

    return convert_items


def _chain(steps: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    if len(steps) == 1:
        return steps[0]

    def chained(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return chained


def _step(
    is_list: bool, rest: list[str], convert: Callable[[Any, str], Any]
) -> Callable[[Any], Any]:
    """What one rule path does to its top-level field's value (a copy made by the trim):
    returns the new value; below the top it converts in place, as `_apply` does."""
    inner = _walker(rest, convert) if rest else None

    def on_value(value: Any) -> Any:
        if value is None:
            return value
        if inner is None:
            return convert(value, "")
        inner(value)
        return value

    if not is_list:
        return on_value

    def on_list(value: Any) -> Any:
        if type(value) is not list:
            return value  # the schema says what is wrong with it
        for i, item in enumerate(value):
            value[i] = on_value(item)
        return value

    return on_list


def _walker(parts: list[str], convert: Callable[[Any, str], Any]) -> Callable[[Any], None]:
    """Converts, in place, what `parts` reach under a node (as `_targets` walks them)."""
    head, rest = parts[0], parts[1:]
    name = head.removesuffix("[]")
    step = _step(head.endswith("[]"), rest, convert)

    def walk(node: Any) -> None:
        if isinstance(node, dict) and name in node:
            node[name] = step(node[name])

    return walk


def _fast_number(value: Any, field: str) -> Any:
    kind = type(value)
    if kind is int or kind is bool:
        return value
    if kind is float and value - value == 0.0:  # finite
        return value
    return parse_number(value, field)


# ASCII digits only: `\d` would admit other scripts' digits, which `isoformat` would rewrite.
_CANONICAL_TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


def _fast_timestamp(value: Any, field: str) -> str:
    """A timestamp already in the form `parse_timestamp` gives is kept once it parses."""
    if type(value) is str and _CANONICAL_TS.fullmatch(value):
        datetime.fromisoformat(value)  # a real date and time, or ValueError
        return value
    return parse_timestamp(value, field)


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
