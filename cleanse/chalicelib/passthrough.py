"""A payload that is already clean passes through cleanse as the JSON it came as.

Most records arrive normal and valid: no string to trim, no unknown field, numbers already
numbers, timestamps already canonical. Cleansing one the general way builds it as dicts,
copies it while normalising, walks it again to validate and encodes it again: about four
times msgspec's own decode and encode. `compile_passthrough` makes, once per record type, a
test of the payload's JSON text that says "normalising changes nothing and the schema holds":

- the text has no control character and no backslash (no escapes), no string that starts or
  ends with whitespace (a quote next to a space or another `str.isspace` character), and no
  empty string when blanks count as missing;
- msgspec decodes it into structs made from the schema (types, lengths, patterns, bounds,
  required fields, no unknown field where the schema or `unknown_fields: drop` forbids them),
  which checks in C what the generated check checks in Python;
- the rules' top-level fields are what their rules would make them: already lower or upper
  case, numbers already numbers, timestamps already in the canonical form and real dates.

Anything it is not sure of answers False and the record goes the general way, which says what
is wrong or makes the same data; schemas or rules beyond what it knows get no test at all.
The JSON passed on is the text that arrived. It is the bytes the general way would write for
the payload because payloads reach cleanse as msgspec wrote them from decoded objects (ingest,
and replays, write them so): compact, numbers in msgspec's form, each name once. Text written
otherwise (`1E2` for `100.0`, spaces between tokens, a name twice) would pass on as it is,
meaning to every JSON reader in the pipeline what the general way's bytes mean.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any

from chalicelib.normalise import _CANONICAL_TS, UNKNOWN_DROP, TypeRules

# The most a number bound may be for a float comparison to agree with an exact one.
_EXACT = 2**53
_NOTES = frozenset({"$schema", "$id", "$comment", "title", "description", "examples"})
_DRAFT_07 = "http://json-schema.org/draft-07/schema#"


class _Unsupported(Exception):
    pass


_unicode_space_quote: re.Pattern[bytes] | None = None


def _space_next_to_quote() -> re.Pattern[bytes]:
    """Bytes of a quote next to a whitespace character other than ASCII's (a non-ASCII one
    only appears in a payload that is not ASCII; ASCII's space is looked for apart). Made on
    first use: finding them walks every code point (~0.1 s)."""
    global _unicode_space_quote
    if _unicode_space_quote is None:
        spaces = [chr(c).encode() for c in range(0x80, sys.maxunicode + 1) if chr(c).isspace()]
        either = b"|".join(re.escape(s) for s in spaces)
        _unicode_space_quote = re.compile(b'"(?:' + either + b")|(?:" + either + b')"')
    return _unicode_space_quote


def compile_passthrough(
    schema: Mapping[str, Any], rules: TypeRules, known_fields: frozenset[str]
) -> Callable[[bytes], bool] | None:
    """Whether a payload's JSON is already what cleanse would send on (see the module), or None
    if the type's schema or rules are beyond this test."""
    if not rules.trim or schema.get("$schema", _DRAFT_07) != _DRAFT_07:
        return None
    top = {path for path in (*rules.lowercase, *rules.uppercase, *rules.timestamps)}
    if any("." in path or path.endswith("[]") for path in top):
        return None  # case and timestamp rules inside containers: the general way
    import msgspec

    space_quote = _space_next_to_quote()
    numbers: set[str] = set(rules.numbers)
    try:
        struct = _type_of(
            schema,
            "Payload",
            numbers=numbers,
            forbid=rules.unknown_fields == UNKNOWN_DROP,
            known=known_fields,
            blank=rules.blank_is_missing,
        )
    except _Unsupported:
        return None
    if numbers:
        return None  # a numbers rule on a field the schema does not make a number
    decode = msgspec.json.Decoder(struct).decode
    # A blank top-level string: dropping unknown fields, every top-level field is typed, and
    # its strings need a character (`_type_of(blank=...)`); keeping them, look for one.
    blank_anywhere = rules.blank_is_missing and rules.unknown_fields != UNKNOWN_DROP
    lower, upper, stamps = rules.lowercase, rules.uppercase, rules.timestamps
    attr = _attr_names(schema)

    def clean_as_is(data: bytes) -> bool:
        if b"\\" in data:
            return False  # an escape: the general way reads it (a raw control character
            # is not JSON inside a string, and msgspec refuses it there)
        if b" " in data and (b'" ' in data or b' "' in data):
            return False  # a string that starts or ends with a space (or a false alarm)
        if blank_anywhere and b'""' in data:
            return False
        if not data.isascii() and space_quote.search(data):
            return False
        try:
            payload = decode(data)
        except Exception:  # not valid as it is (or not JSON): the general way says why
            return False
        for name in lower:
            value = getattr(payload, attr[name])
            if type(value) is str and value.lower() != value:
                return False
        for name in upper:
            value = getattr(payload, attr[name])
            if type(value) is str and value.upper() != value:
                return False
        for name in stamps:
            value = getattr(payload, attr[name])
            if value is None or value is msgspec.UNSET:
                continue
            if type(value) is not str or not _CANONICAL_TS.fullmatch(value):
                return False
            try:
                datetime.fromisoformat(value)
            except ValueError:
                return False
        return True

    return clean_as_is


def _attr_names(schema: Mapping[str, Any]) -> dict[str, str]:
    return {name: f"f{i}" for i, name in enumerate(schema.get("properties") or {})}


def _type_of(
    schema: Any,
    name: str,
    *,
    numbers: set[str],
    path: str = "",
    forbid: bool = False,
    known: frozenset[str] | None = None,
    blank: bool = False,
    nonempty: bool = False,
) -> Any:
    """The msgspec type that decodes exactly the values `schema` accepts unchanged (a subset
    of them: never one it refuses). `numbers`: the rules' number paths still to find; each
    found is removed, and must be a number or integer in the schema. `blank`: the object's
    string properties must not be empty (`nonempty` for one string)."""
    import msgspec

    if not isinstance(schema, Mapping):
        raise _Unsupported
    kind = schema.get("type")
    keys = set(schema) - _NOTES - {"type"}
    here = path.removesuffix(".")
    if here in numbers:
        if kind not in ("number", "integer"):
            raise _Unsupported
        numbers.discard(here)
    if kind == "string":
        return _string(schema, keys, msgspec, nonempty)
    if kind in ("integer", "number"):
        return _number(schema, keys, kind, msgspec)
    if kind == "boolean" and not keys:
        return bool
    if kind == "array":
        if keys - {"items", "minItems", "maxItems"}:
            raise _Unsupported
        item: Any = Any
        if "items" in schema:
            item = _type_of(schema["items"], f"{name}Item", numbers=numbers, path=f"{here}[].")
        return _sized(list[item], schema, "minItems", "maxItems", msgspec)
    if kind == "object":
        if keys - {"properties", "required", "additionalProperties"}:
            raise _Unsupported
        parts = object_parts(schema)
        if parts is None:
            raise _Unsupported
        properties, required, extra = parts
        if not set(required) <= set(properties) or (
            known is not None and set(properties) != set(known)
        ):
            raise _Unsupported
        fields: list[Any] = []
        rename = {}
        for i, (prop, sub) in enumerate(properties.items()):
            attr = f"f{i}"
            rename[attr] = prop
            typ = _type_of(
                sub,
                f"{name}_{i}",
                numbers=numbers,
                path=f"{here}.{prop}".lstrip("."),
                nonempty=blank,
            )
            if prop in required:
                fields.append((attr, typ))
            else:
                fields.append((attr, typ | msgspec.UnsetType, msgspec.UNSET))
        required_first = [f for f in fields if len(f) == 2] + [f for f in fields if len(f) == 3]
        return msgspec.defstruct(
            name, required_first, rename=rename, forbid_unknown_fields=forbid or not extra
        )
    raise _Unsupported  # no type, a list of types, null, or a keyword this does not know


def object_parts(schema: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str], bool] | None:
    """An object schema's properties, required names and `additionalProperties` (a bool);
    None if any of them is not what draft 07 allows here."""
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    extra = schema.get("additionalProperties", True)
    if (
        not isinstance(properties, Mapping)
        or not isinstance(required, list)
        or not all(isinstance(name, str) for name in [*properties, *required])
        or not isinstance(extra, bool)
    ):
        return None
    return properties, required, extra


def _string(schema: Mapping[str, Any], keys: set[str], msgspec: Any, nonempty: bool) -> Any:
    if keys - {"minLength", "maxLength", "pattern", "format"}:
        raise _Unsupported
    if "pattern" in schema and "format" in schema:
        raise _Unsupported
    pattern = None
    if "pattern" in schema:
        if not isinstance(schema["pattern"], str):
            raise _Unsupported
        # As fastjsonschema reads a pattern: searched, an unescaped "$" is the very end.
        pattern = re.sub(r"(?<!\\)\$", r"\\Z", schema["pattern"])
    elif "format" in schema:
        from fastjsonschema.draft07 import CodeGeneratorDraft07

        found = CodeGeneratorDraft07.FORMAT_REGEXS.get(schema["format"])
        if not isinstance(found, str):
            raise _Unsupported
        pattern = f"^(?:{found})"  # fastjsonschema matches a format from the start
    meta = {}
    for key, arg in (("minLength", "min_length"), ("maxLength", "max_length")):
        if key in schema:
            if type(schema[key]) is not int:
                raise _Unsupported
            meta[arg] = schema[key]
    if nonempty:  # blank is missing: "" would be dropped, so it is not clean as it is
        meta["min_length"] = max(meta.get("min_length", 0), 1)
    if pattern is not None:
        meta["pattern"] = pattern
    return Annotated[str, msgspec.Meta(**meta)] if meta else str


def _number(schema: Mapping[str, Any], keys: set[str], kind: str, msgspec: Any) -> Any:
    bounds = {"minimum": "ge", "maximum": "le", "exclusiveMinimum": "gt", "exclusiveMaximum": "lt"}
    if keys - set(bounds):
        raise _Unsupported
    meta = {}
    for key, arg in bounds.items():
        if key in schema:
            bound = schema[key]
            if type(bound) not in (int, float) or not math.isfinite(bound) or abs(bound) > _EXACT:
                raise _Unsupported
            if kind == "integer" and type(bound) is not int:
                raise _Unsupported
            meta[arg] = bound
    base: Any = int if kind == "integer" else float  # a JSON integer is a number too
    return Annotated[base, msgspec.Meta(**meta)] if meta else base


def _sized(typ: Any, schema: Mapping[str, Any], low: str, high: str, msgspec: Any) -> Any:
    meta = {}
    for key, arg in ((low, "min_length"), (high, "max_length")):
        if key in schema:
            if type(schema[key]) is not int:
                raise _Unsupported
            meta[arg] = schema[key]
    return Annotated[typ, msgspec.Meta(**meta)] if meta else typ
