"""A record type drafted from sample records: JSON Schema, natural key and rules.

genson infers the shape (types, nested objects and arrays, `required` = fields present in
every sample); `draft_type` then tightens it, since the schema describes what cleanse sends
on: objects allow no fields beyond those seen, and a string gets a pattern or format only
when every sample value fits it (ISO 8601 timestamps also become a `timestamps` rule, so
cleanse makes them UTC first and the pattern is of that canonical form).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

SCHEMA_DRAFT = "http://json-schema.org/draft-07/schema#"
# What cleanse's `timestamps` rule makes of a timestamp (normalise.parse_timestamp).
CANONICAL_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
# Deliberately plain: a sample value either obviously is an e-mail address or is left alone.
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
# A number as cleanse's `numbers` rule parses it from text (normalise._NUMBER_RE).
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# The start of an ISO 8601 date and time (the rest is for datetime.fromisoformat to judge).
_TIMESTAMP_START_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


class SampleError(ValueError):
    """The sample file cannot be read as records, or no type can be drafted from it."""


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The records in `path`: a JSON array of objects, or JSON Lines (one object a line).

    `SampleError` names the file and line (or position) of whatever is not a record.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SampleError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SampleError(f"{path}: not UTF-8 text (JSON Lines or a JSON array)") from None
    body = text.lstrip("\ufeff").strip()
    if not body:
        raise SampleError(f"{path}: empty, no sample records")
    if body.startswith("["):
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise SampleError(f"{path}: not a JSON array: {exc}") from None
        records = list(doc)
        where = [f"item {i + 1}" for i in range(len(records))]
    else:
        records, where = [], []
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise SampleError(
                    f"{path}, line {number}: not JSON ({exc}); give JSON Lines (one object "
                    "per line) or a JSON array of objects"
                ) from None
            where.append(f"line {number}")
    if not records:
        raise SampleError(f"{path}: no sample records (an empty array)")
    for record, place in zip(records, where, strict=True):
        if not isinstance(record, dict):
            kind = type(record).__name__.replace("NoneType", "null")
            raise SampleError(f"{path}, {place}: a JSON {kind}, not an object (a record)")
    return records


@dataclass(frozen=True)
class Draft:
    """What `draft_type` proposes for a new type (written by `newtype.write_type`)."""

    name: str
    natural_key: str
    schema: dict[str, Any]
    rules: dict[str, Any]
    key_candidates: tuple[str, ...] = field(default=())


def infer_schema(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """genson's schema of `records`, without its `$schema` line (the draft sets draft-07)."""
    from genson import SchemaBuilder  # type: ignore[import-untyped]

    builder = SchemaBuilder()
    for record in records:
        builder.add_object(record)
    schema: dict[str, Any] = builder.to_schema()
    schema.pop("$schema", None)
    return schema


def key_candidates(name: str, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Top-level fields that could be the natural key, best first.

    A candidate is a non-empty string in every record and unique across them. Preferred:
    `<name>_id` (also with `-` as `_`), then `id`, then other `..._id` fields, then the rest,
    each group in the first record's field order.
    """
    fields = [f for f in records[0] if _is_key(f, records)]
    preferred = [f"{name}_id", f"{name.replace('-', '_')}_id", "id"]
    ranked = [f for f in dict.fromkeys(preferred) if f in fields]
    ranked += [f for f in fields if f.endswith("_id") and f not in ranked]
    ranked += [f for f in fields if f not in ranked]
    return ranked


def _is_key(field_name: str, records: Sequence[Mapping[str, Any]]) -> bool:
    values = [record.get(field_name) for record in records]
    if not all(isinstance(v, str) and v.strip() for v in values):
        return False
    texts = [str(v).strip() for v in values]
    if all(_is_timestamp(t) or _DATE_RE.fullmatch(t) for t in texts):
        return False  # a time is unique in a small sample, not an identity
    return len(set(texts)) == len(texts)


def draft_type(
    name: str,
    records: Sequence[Mapping[str, Any]],
    *,
    natural_key: str | None = None,
    description: str | None = None,
) -> Draft:
    """The schema, rules and natural key of type `name`, from its sample `records`.

    `natural_key` overrides the proposal; it must still be a string in every record (it is
    required in the schema). `SampleError` when none can be proposed or the override is bad.
    """
    if not records:
        raise SampleError("no sample records")
    candidates = key_candidates(name, records)
    if natural_key is None:
        if not candidates:
            fields = ", ".join(records[0]) or "none"
            raise SampleError(
                "no natural key found: no field is a non-empty string in every sample record "
                f"and unique across them (fields of the first record: {fields}); choose one "
                "with --natural-key FIELD"
            )
        natural_key = candidates[0]
    else:
        missing = [i + 1 for i, r in enumerate(records) if not isinstance(r.get(natural_key), str)]
        if missing:
            raise SampleError(
                f"--natural-key {natural_key}: not a string in sample record(s) "
                f"{', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''}; "
                "the natural key must be a string field present in every record"
            )
    inferred = infer_schema(records)
    found: dict[str, list[str]] = {"numbers": [], "timestamps": []}
    _tighten(inferred, list(records), "", found)
    key_schema = inferred["properties"][natural_key]
    key_schema.clear()
    key_schema.update({"type": "string", "minLength": 1})
    schema = {
        "$schema": SCHEMA_DRAFT,
        "$id": f"https://sluice.example/types/{name}.json",
        "title": name,
        "description": description or f"A {name} record as cleanse sends it on (see rules.json).",
        **inferred,
    }
    done = [
        what
        for what, rule in (
            ("numbers sent as text are parsed", "numbers"),
            ("timestamps are made UTC", "timestamps"),
        )
        if found[rule]
    ]
    rules: dict[str, Any] = {
        "description": "; ".join(
            [
                "Drafted by `sluice new-type`: strings are trimmed",
                "a field the schema does not name is kept, so the schema "
                "(additionalProperties: false) quarantines the record and names the field",
                *done,
            ]
        )
        + ".",
        "trim": True,
        "blank_is_missing": False,
        **{rule: paths for rule, paths in found.items() if paths},
        "unknown_fields": "keep",
    }
    return Draft(name, natural_key, schema, rules, tuple(candidates))


def _tighten(
    node: dict[str, Any], values: list[Any], path: str | None, found: dict[str, list[str]]
) -> None:
    """Tighten genson's `node` in place, given every sample value found at it.

    `path` is the field's path as rules.json names it ("a.b", "a[].b", "" for the record),
    None where a rule cannot reach (a list of lists, a name with "." or "[]" in it): such a
    timestamp is left a plain string, since no rule would make it canonical first. `found`
    collects the paths for the `numbers` and `timestamps` rules.
    """
    kinds = node.get("type")
    kinds = set(kinds) if isinstance(kinds, list) else {kinds}
    if "object" in kinds and "properties" in node:
        node["additionalProperties"] = False
        objects = [v for v in values if isinstance(v, dict)]
        for prop, sub in node["properties"].items():
            present = [o[prop] for o in objects if prop in o]
            plain = path is not None and "." not in prop and not prop.endswith("[]")
            child = (f"{path}.{prop}" if path else prop) if plain else None
            _tighten(sub, present, child, found)
    if "array" in kinds and isinstance(node.get("items"), dict):
        items = [item for v in values if isinstance(v, list) for item in v]
        # rules walk one level of lists ("items[].at", "tags[]"), not lists of lists
        item_path = f"{path}[]" if path and not path.endswith("[]") else None
        _tighten(node["items"], items, item_path, found)
    if path and _numbers_as_text(node, kinds, values):
        found["numbers"].append(path)
    if kinds <= {"string", "null"} and "string" in kinds:
        strings = [v.strip() for v in values if isinstance(v, str)]
        if not strings:
            return
        if path and all(_is_timestamp(s) for s in strings):
            node["pattern"] = CANONICAL_TIMESTAMP
            found["timestamps"].append(path)
        elif all(_DATE_RE.fullmatch(s) for s in strings):
            node["pattern"] = DATE_PATTERN
        elif all(_EMAIL_RE.fullmatch(s) for s in strings):
            node["format"] = "email"


def _numbers_as_text(node: dict[str, Any], kinds: set[Any], values: list[Any]) -> bool:
    """Numbers some samples send as text ("12.50" beside 12.5): `node` becomes a number (an
    integer if every value is whole) for the `numbers` rule to parse. A field that is text
    in every sample stays text (codes such as "01234" are not numbers)."""
    numeric = kinds & {"integer", "number"}
    if not numeric or "string" not in kinds or not kinds <= {"integer", "number", "string", "null"}:
        return False
    texts = [v.strip() for v in values if isinstance(v, str)]
    if not all(_NUMBER_RE.fullmatch(t) for t in texts):
        return False
    whole = "number" not in kinds and not any(c in t for t in texts for c in ".eE")
    kind = "integer" if whole else "number"
    node["type"] = [kind, "null"] if "null" in kinds else kind
    return True


def _is_timestamp(value: str) -> bool:
    """An ISO 8601 date with a time of day, as cleanse's `timestamps` rule accepts it."""
    text = value.strip()
    if not _TIMESTAMP_START_RE.match(text):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True
