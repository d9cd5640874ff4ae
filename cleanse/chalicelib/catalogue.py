"""Record types for cleanse: each registry type's schema and rules (`sluice.registry`),
turned into a normaliser and a validator on first use and cached.

A type's fastjsonschema validator is compiled when its first record arrives, never at
import: a cold start pays only for the types it meets, a warm Lambda reuses them.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from chalicelib.normalise import (
    _LEAVES,
    UNKNOWN_DROP,
    ItemLeaves,
    ListCleaner,
    NotFast,
    TypeRules,
    _fast_number,
    _trimmed,
    compile_rules,
    normalise,
)
from chalicelib.passthrough import compile_passthrough, object_parts
from sluice.errors import ConfigError, PermanentError
from sluice.lazy import first_use
from sluice.registry import RecordTypeSpec, Registry, load_registry

Validator = Callable[[Any], Any]


class RecordType:
    """One record type: its schema, its rules, and its validator (compiled on first use)."""

    def __init__(self, name: str, schema: Mapping[str, Any], rules: TypeRules) -> None:
        self.name = name
        self.schema = schema
        self.rules = rules
        properties = schema.get("properties") or {}
        self.known_fields = frozenset(properties)
        self._validator: Validator | None = None
        self._one_pass: Callable[[Any], dict[str, Any]] | None = None
        # What the compiled pass leaves to check: the schema less the items it checked itself
        # (None: no compiled check; the validator does it all).
        self._rest_check: Callable[[Any], bool] | None = None
        self._as_is: Callable[[bytes], bool] | None = None
        self._lock = threading.Lock()
        self._check()

    def cleanse(self, payload: Any) -> dict[str, Any]:
        """The normalised, validated payload; `PermanentError` with the reason if it is bad.

        Normalisation is the type's compiled pass (`compile_rules`); a payload it leaves
        alone (a bad value, say) goes through `normalise`, which names the field. Reasons are
        built only on error.
        """
        one_pass = self._one_pass or self._compile_one_pass()
        data: dict[str, Any] | None = None
        if one_pass is not _general:
            try:
                data = one_pass(payload)
            except Exception:
                data = None  # the general way gives the same result or says what is wrong
            rest = self._rest_check
            if data is not None and rest is not None and rest(data):
                return data  # valid: what the validator would return for it
        if data is None:
            data = normalise(payload, self.rules, self.known_fields)
        from fastjsonschema import JsonSchemaValueException

        try:
            result = self.validator(data)
        except JsonSchemaValueException as exc:
            raise PermanentError(f"invalid {self.name}: {exc.message}") from None
        return result if isinstance(result, dict) else data

    def clean_as_is(self, payload_json: bytes) -> bool:
        """Whether a payload's JSON text is already what `cleanse` would make of it (normal
        and valid), so it can pass on as it came (`passthrough`); False: cleanse it."""
        as_is = self._as_is
        if as_is is None:
            with self._lock:
                if self._as_is is None:
                    found = compile_passthrough(self.schema, self.rules, self.known_fields)
                    self._as_is = found or _never
                as_is = self._as_is
        return as_is(payload_json)

    def _compile_one_pass(self) -> Callable[[Any], dict[str, Any]]:
        """The type's compiled pass: its rules, and the schema of each list of objects they
        reach into checked in the same loop over the items (`item_cleaner`); the rest of the
        schema is `_rest_check`'s. Made once, on the type's first record."""
        with self._lock:
            if self._one_pass is None:
                checked: set[str] = set()
                properties = self.schema.get("properties") or {}

                def list_cleaner(name: str, leaves: ItemLeaves) -> ListCleaner | None:
                    found = _item_schema(properties.get(name))
                    cleaner = None if found is None else item_cleaner(leaves, found)
                    if cleaner is not None:
                        checked.add(name)
                    return cleaner

                one_pass = compile_rules(self.rules, self.known_fields, list_cleaner)
                rest = dict(self.schema)
                if checked:  # each item is checked by its cleaner: the array itself is left
                    rest["properties"] = {
                        name: _without_items(sub) if name in checked else sub
                        for name, sub in properties.items()
                    }
                self._rest_check = None if one_pass is None else compile_check(rest)
                self._one_pass = one_pass or _general
        return self._one_pass

    @property
    def validator(self) -> Validator:
        if self._validator is None:
            with self._lock:
                if self._validator is None:
                    self._validator = _compile(self.name, self.schema)
        return self._validator

    def _check(self) -> None:
        """Rules and schema must agree; a mismatch is a deploy bug, not bad data."""
        if self.schema.get("type") != "object":
            raise ConfigError(f"type {self.name!r}: schema.json must describe an object")
        missing = sorted(self.rules.fields() - self.known_fields)
        if missing:
            raise ConfigError(f"type {self.name!r}: rules name fields not in schema: {missing}")
        key = self.rules.natural_key
        if key is not None and key not in (self.schema.get("required") or []):
            raise ConfigError(f"type {self.name!r}: natural_key {key!r} must be required")
        if self.rules.unknown_fields == UNKNOWN_DROP and not self.known_fields:
            raise ConfigError(f"type {self.name!r}: unknown_fields 'drop' needs properties")


class Catalogue:
    """Record types by name, from the registry (`root`, else the one shipped with the app),
    read on first use; each type built once and cached (misses too)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self._registry: Registry | None = None
        self._types: dict[str, RecordType | None] = {}
        self._lock = threading.Lock()

    registry: first_use[Registry] = first_use(lambda self: load_registry(self.root))

    def get(self, name: str) -> RecordType | None:
        """The type called `name`, or None if there is no such type."""
        try:
            return self._types[name]
        except KeyError:
            pass
        with self._lock:
            if name not in self._types:
                self._types[name] = self._load(name)
            return self._types[name]

    def names(self) -> list[str]:
        """Every registered type (for tests and tooling)."""
        return list(self.registry.names())

    def _load(self, name: str) -> RecordType | None:
        if name not in self.registry:
            return None
        return record_type(self.registry.get(name))


def record_type(spec: RecordTypeSpec) -> RecordType:
    """Cleanse's view of a registry type: its rules (with the natural key) and schema."""
    rules = TypeRules.from_json(
        {**spec.rules, "natural_key": spec.natural_key}, where=str(spec.path / "rules.json")
    )
    return RecordType(spec.name, dict(spec.schema), rules)


def _compile(name: str, schema: Mapping[str, Any]) -> Validator:
    """The type's validator: the compiled check (`compile_check`), and fastjsonschema for
    what it does not pass, so an invalid record gets fastjsonschema's reason."""
    import fastjsonschema

    try:
        full: Validator = fastjsonschema.compile(dict(schema))
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise ConfigError(f"type {name!r}: schema.json is not a valid JSON Schema: {exc}") from None
    check = compile_check(schema)
    if check is None:
        return full

    def validate(data: Any) -> Any:
        return data if check(data) else full(data)

    return validate


def _never(payload_json: bytes) -> bool:
    return False  # a type beyond `compile_passthrough`: every record is cleansed


def _general(payload: Any) -> dict[str, Any]:
    raise NotImplementedError  # pragma: no cover - a marker: `normalise` does the work


def _item_schema(schema: Any) -> Mapping[str, Any] | None:
    """The items' schema of an array property whose items are objects, else None."""
    if not isinstance(schema, Mapping) or schema.get("type") != "array":
        return None
    items = schema.get("items")
    if not isinstance(items, Mapping) or items.get("type") != "object":
        return None
    return items


def _without_items(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in schema.items() if key != "items"}


def item_cleaner(leaves: ItemLeaves, item_schema: Mapping[str, Any]) -> ListCleaner | None:
    """One generated loop over a list of objects: each item trimmed, its `leaves` converted
    (field, converter: in the rules' order) and the item checked against `item_schema`, as
    `compile_check` checks it. An item it cannot pass raises `NotFast`: the payload then goes
    the general way, which says what is wrong. None if the schema is beyond `compile_check`.
    """
    constants: dict[str, Any] = {
        "NotFast": NotFast,
        "LEAVES": _LEAVES,
        "trimmed": _trimmed,
    }
    lines = [
        "def clean_items(value):",
        "    out = []",
        "    append = out.append",
        "    for d1 in value:",
        "        if type(d1) is not dict:",
        "            raise NotFast",
        "        d1 = {k: v.strip() if type(v) is str else v if type(v) in LEAVES else trimmed(v)"
        " for k, v in d1.items()}",
    ]
    for n, (leaf, convert) in enumerate(leaves):
        # The field's name and converter are bound in the namespace, never written into the
        # source (as compile_check does with every value from the schema).
        name, field = f"K{n}", f"F{n}"
        constants[name], constants[field] = convert, leaf
        lines.append(f"        v = d1.get({field})")
        if convert is _fast_number:  # numbers already are numbers nearly always: no call
            lines.append(
                "        if v is not None and type(v) is not int and type(v) is not bool"
                " and not (type(v) is float and v - v == 0.0):"
            )
        else:
            lines.append("        if v is not None:")
        lines.append(f"            d1[{field}] = {name}(v, '')")
    check: list[str] = []
    try:
        _emit(item_schema, "d1", 2, check, constants, counter=[0])
    except _Unsupported:
        return None
    lines.extend(line.replace("return False", "raise NotFast") for line in check)
    lines += ["        append(d1)", "    return out"]
    cleaner: ListCleaner = _define(lines, "<item cleaner>", constants, "clean_items")
    return cleaner


# ---------------------------------------------------------------------- compiled check

# Keywords the compiled check knows; a schema using any other keeps fastjsonschema alone.
_NOTES = frozenset({"$schema", "$id", "$comment", "title", "description", "examples"})
_CHECKED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
    }
)
_DRAFT_07 = "http://json-schema.org/draft-07/schema#"
_TYPE_TEST = {
    "string": "type({v}) is str",
    "integer": "type({v}) is int",
    "number": "(type({v}) is int or (type({v}) is float and {v} - {v} == 0.0))",
    "boolean": "type({v}) is bool",
    "null": "{v} is None",
    "object": "type({v}) is dict",
    "array": "type({v}) is list",
}


class _Unsupported(Exception):
    pass


def compile_check(schema: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    """A function that says whether data is valid under `schema`, generated once per type.

    Never more lenient than fastjsonschema: it answers True only for data fastjsonschema
    accepts unchanged, and is stricter where that is simpler (an integer is an `int`, not
    1.0; a number is finite). False means "ask fastjsonschema", which names the problem.
    None if the schema uses a keyword (or a draft) it does not know, or fills defaults.
    """
    if schema.get("$schema", _DRAFT_07) != _DRAFT_07:
        return None
    lines = ["def check(d0):"]
    constants: dict[str, Any] = {}
    try:
        _emit(schema, "d0", 1, lines, constants, counter=[0])
    except _Unsupported:
        return None
    lines.append("    return True")
    check: Callable[[Any], bool] = _define(
        lines, f"<check {schema.get('$id', '')}>", constants, "check"
    )
    return check


def _define(lines: list[str], filename: str, constants: Mapping[str, Any], name: str) -> Any:
    """The function `name` that the generated source `lines` defines, with `constants` in
    its globals. Deployed code's one exec: the source is generated from the registry's
    schemas and rules (names and literals it emits itself), never from record data."""
    namespace: dict[str, Any] = dict(constants)
    exec(compile("\n".join(lines), filename, "exec"), namespace)
    return namespace[name]


def _emit(
    schema: Any,
    v: str,
    depth: int,
    lines: list[str],
    constants: dict[str, Any],
    counter: list[int],
) -> None:
    """Append the lines that `return False` unless `v` is valid under `schema`."""
    if not isinstance(schema, Mapping) or set(schema) - _CHECKED - _NOTES:
        raise _Unsupported
    kind = schema.get("type")
    if not isinstance(kind, str) or kind not in _TYPE_TEST:
        raise _Unsupported  # no type, or a list of them: fastjsonschema decides
    pad = "    " * depth

    def fail_if(condition: str) -> None:
        lines.append(f"{pad}if {condition}:")
        lines.append(f"{pad}    return False")

    def constant(value: Any) -> str:
        counter[0] += 1
        name = f"C{counter[0]}"
        constants[name] = value
        return name

    fail_if(f"not ({_TYPE_TEST[kind].format(v=v)})")
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        if key in schema:
            bound = schema[key]
            if type(bound) is not int or kind != ("string" if "Length" in key else "array"):
                raise _Unsupported
            fail_if(f"len({v}) {'<' if key.startswith('min') else '>'} {bound}")
    if kind == "string":
        if "pattern" in schema:
            pattern = schema["pattern"]
            if not isinstance(pattern, str):
                raise _Unsupported
            # As fastjsonschema reads a pattern: searched, an unescaped "$" is the very end.
            fixed = re.sub(r"(?<!\\)\$", r"\\Z", pattern)
            fail_if(f"not {constant(re.compile(fixed))}.search({v})")
        if "format" in schema:
            fail_if(f"not {constant(_format_regex(schema['format']))}.match({v})")
    elif "pattern" in schema or "format" in schema:
        raise _Unsupported
    for key, op in (
        ("minimum", "<"),
        ("maximum", ">"),
        ("exclusiveMinimum", "<="),
        ("exclusiveMaximum", ">="),
    ):
        if key in schema:
            bound = schema[key]
            if (
                kind not in ("integer", "number")
                or type(bound) not in (int, float)
                or not math.isfinite(bound)  # its repr would not be Python ("inf")
            ):
                raise _Unsupported
            fail_if(f"{v} {op} {bound!r}")
    if kind == "object":
        _emit_object(schema, v, depth, lines, constants, counter, fail_if, constant)
    elif any(k in schema for k in ("properties", "required", "additionalProperties")):
        raise _Unsupported
    if kind == "array" and "items" in schema:
        item = f"i{depth}"
        lines.append(f"{pad}for {item} in {v}:")
        _emit(schema["items"], item, depth + 1, lines, constants, counter)
    elif "items" in schema:
        raise _Unsupported


def _emit_object(
    schema: Mapping[str, Any],
    v: str,
    depth: int,
    lines: list[str],
    constants: dict[str, Any],
    counter: list[int],
    fail_if: Callable[[str], None],
    constant: Callable[[Any], str],
) -> None:
    parts = object_parts(schema)
    if parts is None:
        raise _Unsupported
    properties, required, extra = parts
    for name in required:
        if name not in properties:  # a described one is looked up once, below
            fail_if(f"{name!r} not in {v}")
    if extra is False:
        fail_if(f"not {constant(frozenset(properties))}.issuperset({v})")
    missing = constant(object())
    pad = "    " * depth
    for name, sub in properties.items():
        value = f"d{depth}_{counter[0]}"
        counter[0] += 1
        lines.append(f"{pad}{value} = {v}.get({name!r}, {missing})")
        if name in required:
            fail_if(f"{value} is {missing}")
            _emit(sub, value, depth, lines, constants, counter)
        else:
            lines.append(f"{pad}if {value} is not {missing}:")
            _emit(sub, value, depth + 1, lines, constants, counter)


def _format_regex(name: Any) -> re.Pattern[str]:
    """fastjsonschema's own expression for a format it checks (draft 07)."""
    from fastjsonschema.draft07 import CodeGeneratorDraft07

    found = CodeGeneratorDraft07.FORMAT_REGEXS.get(name) if isinstance(name, str) else None
    if not isinstance(found, str):
        raise _Unsupported
    return re.compile(found)
