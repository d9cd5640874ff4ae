"""Routing rules: load and validate them, and compute one record's routing attributes.

`routing.json` declares the attributes and their values; each record type's rules are its
`routing` in the registry (`types/<name>/type.json`). Pure (no AWS, stdlib and `sluice`
only), so tools can load this file by path and call `declared_attributes()` to check
consumers' filter policies against what the router can set.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from sluice import jsonx
from sluice.envelope import BASE_ATTRIBUTES, MAX_MESSAGE_ATTRIBUTES
from sluice.errors import ConfigError, PermanentError
from sluice.registry import Registry, load_registry

ROUTING_FILE = Path(__file__).with_name("routing.json")
SUPPORTED_VERSION = 1
# A message carries the base attributes (record_type, correlation_id, chunk_id) too.
MAX_ROUTING_ATTRIBUTES = MAX_MESSAGE_ATTRIBUTES - len(BASE_ATTRIBUTES)

_TOP_KEYS = frozenset({"$comment", "version", "attributes", "types"})
_ATTRIBUTE_KEYS = frozenset({"description", "values"})
_RULE_KEYS = frozenset({"description", "field", "cases", "default", "if_missing"})
_CASE_EXTRA_KEYS = frozenset({"description", "value"})
# SNS message attribute names: letters, digits, "_", "-", "."; no leading/trailing or double
# period; not starting with "AWS." or "Amazon." (reserved).
_NAME_RE = re.compile(r"^[A-Za-z0-9_-](?:[A-Za-z0-9_.-]{0,254}[A-Za-z0-9_-])?$")


class RoutingConfigError(ConfigError):
    """`routing.json` is not a valid set of routing rules; the message says where and why."""


def _is_number(value: object) -> bool:
    if type(value) is int:
        return True
    if type(value) is float:
        return value - value == 0.0  # finite: inf - inf and nan - nan are nan
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_scalar(value: object) -> bool:
    return isinstance(value, str) or _is_number(value)


_NUMERIC: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
OPERATORS = ("eq", "in", *_NUMERIC)


def _valid_operand(op: str, operand: object) -> bool:
    if op == "in":
        return isinstance(operand, list) and bool(operand) and all(map(_is_scalar, operand))
    return _is_scalar(operand) if op == "eq" else _is_number(operand)


@dataclass(frozen=True)
class Case:
    """`{"<operator>": operand, "value": v}`: the attribute is `v` if the field matches."""

    operator: str
    operand: Any
    value: str

    @property
    def numeric(self) -> bool:
        return self.operator in _NUMERIC

    def matches(self, found: Any) -> bool:
        """Whether a field value matches (numeric operators: the caller checked a number)."""
        return self._test(found)

    @cached_property
    def _test(self) -> Callable[[Any], bool]:
        """`matches` for this operator and operand, chosen once."""
        operand = self.operand
        if self.operator == "eq":
            return lambda found: _is_scalar(found) and bool(found == operand)
        if self.operator == "in":
            return lambda found: _is_scalar(found) and found in operand
        compare = _NUMERIC[self.operator]
        return lambda found: bool(compare(found, operand))


_MISSING = object()


@dataclass(frozen=True)
class AttributeRule:
    """How one record type sets one routing attribute from one payload field."""

    record_type: str
    attribute: str
    field: str
    cases: tuple[Case, ...]
    default: str
    if_missing: str | None = None  # None: a record without the field is quarantined

    @cached_property
    def _plan(self) -> tuple[tuple[str, ...], tuple[tuple[bool, Callable[[Any], bool], str], ...]]:
        """The field's path and each case as (numeric, test, value), made once."""
        cases = tuple((case.numeric, case._test, case.value) for case in self.cases)
        return _split_path(self.field), cases

    def evaluate(self, payload: Mapping[str, Any]) -> str:
        return self.decide(_lookup(payload, self._plan[0]))

    def decide(self, found: Any) -> str:
        """The attribute's value for the field's value (`_MISSING`: absent or null)."""
        cases = self._plan[1]
        if found is _MISSING:
            if self.if_missing is None:
                raise PermanentError(
                    f"{self.record_type} record has no {self.field!r}, which routing attribute "
                    f"{self.attribute!r} needs"
                )
            return self.if_missing
        for numeric, test, value in cases:
            if numeric and not _is_number(found):
                raise PermanentError(
                    f"{self.record_type} field {self.field!r} is {found!r}, not a number "
                    f"(routing attribute {self.attribute!r})"
                )
            if test(found):
                return value
        return self.default


@lru_cache(maxsize=256)
def _split_path(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def _lookup(payload: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a dotted path (its names); `_MISSING` if any step is absent, not an
    object, or null."""
    value: Any = payload
    for name in path:
        if type(value) is not dict and not isinstance(value, Mapping):
            return _MISSING
        if name not in value:
            return _MISSING
        value = value[name]
    return _MISSING if value is None else value


class _JsonRoute:
    """`attributes_for_json` of one record type, made once: the top-level fields its rules
    read are decoded by a msgspec struct of just those fields (the rest of the object is
    scanned, never built), and each rule decides from its field's value."""

    def __init__(self, rules: RoutingRules, record_type: str) -> None:
        import msgspec

        self.rules = rules
        self.record_type = record_type
        own = rules.types.get(record_type, ())
        names = tuple(dict.fromkeys(_split_path(rule.field)[0] for rule in own))
        # Struct attributes f0, f1, ... renamed to the fields' names: any JSON name will do.
        attrs = {name: f"f{i}" for i, name in enumerate(names)}
        row = msgspec.defstruct(
            "RoutingFields",
            [(attr, Any, msgspec.UNSET) for attr in attrs.values()],
            rename={attr: name for name, attr in attrs.items()},
        )
        self._decode = msgspec.json.Decoder(row).decode
        self._unset = msgspec.UNSET
        self._not_object = msgspec.ValidationError  # JSON of another kind
        # Per rule: (attribute, struct attribute of its top field, the rest of its path, rule).
        self._steps = tuple(
            (rule.attribute, attrs[path[0]], path[1:], rule)
            for rule in own
            for path in [_split_path(rule.field)]
        )

    def __call__(self, payload_json: Any) -> dict[str, str]:
        if not self._steps:
            return {}
        try:
            found = self._decode(payload_json)
        except self._not_object:  # not an object: refused as `attributes_for` refuses it
            return self.rules.attributes_for(self.record_type, jsonx.loads(payload_json))
        except Exception as exc:  # msgspec.DecodeError: not JSON
            raise PermanentError(
                f"{self.record_type} payload is not JSON ({exc}); cannot route it"
            ) from None
        unset = self._unset
        attributes = {}
        for attribute, attr, rest, rule in self._steps:
            value = getattr(found, attr)
            if value is unset or value is None:
                value = _MISSING
            elif rest:
                value = _lookup(value, rest)
            attributes[attribute] = rule.decide(value)
        return attributes


@dataclass(frozen=True)
class RoutingRules:
    """The declared attributes (name → allowed values) and each type's rules."""

    attributes: Mapping[str, tuple[str, ...]]
    types: Mapping[str, tuple[AttributeRule, ...]]
    # Per type, `attributes_for_json` compiled (made on first use).
    _json_routes: dict[str, _JsonRoute] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def attributes_for(self, record_type: str, payload: Any) -> dict[str, str]:
        """Routing attributes of one record; `PermanentError` if its payload cannot be routed.

        A type without rules gets no routing attributes (consumers still see `record_type`).
        """
        rules = self.types.get(record_type, ())
        if not rules:
            return {}
        if not isinstance(payload, Mapping):
            raise PermanentError(f"{record_type} payload is not a JSON object; cannot route it")
        return {rule.attribute: rule.evaluate(payload) for rule in rules}

    def attributes_for_json(self, record_type: str, payload_json: Any) -> dict[str, str]:
        """`attributes_for` of a payload given as its JSON text: only the top-level fields the
        rules name are decoded (a record's payload passes through the router as it came)."""
        return self.json_route(record_type)(payload_json)

    def json_route(self, record_type: str) -> Callable[[Any], dict[str, str]]:
        """`attributes_for_json` of one record type, as a function made once per type."""
        route = self._json_routes.get(record_type)
        if route is None:
            route = self._json_routes[record_type] = _JsonRoute(self, record_type)
        return route

    def declared(self) -> dict[str, list[str]]:
        return {name: list(values) for name, values in self.attributes.items()}

    @classmethod
    def from_document(cls, doc: Any, origin: str = "routing.json") -> RoutingRules:
        """Validate a parsed `routing.json`; `RoutingConfigError` names the first problem."""
        return _Parser(origin).parse(doc)


class _Parser:
    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, problem: str) -> RoutingConfigError:
        return RoutingConfigError(f"{self.origin}: {where}: {problem}")

    def parse(self, doc: Any) -> RoutingRules:
        if not isinstance(doc, Mapping):
            raise self.fail("top level", "must be a JSON object")
        self.keys("top level", doc, _TOP_KEYS, required=("attributes",))
        version = doc.get("version", SUPPORTED_VERSION)
        if version != SUPPORTED_VERSION:
            raise self.fail("version", f"{version!r} is not supported (use {SUPPORTED_VERSION})")
        attributes = self.attributes(doc["attributes"])
        raw_types = doc.get("types", {})
        if not isinstance(raw_types, Mapping):
            raise self.fail("types", "must be an object of record type → rules")
        types = {
            record_type: self.type_rules(record_type, rules, attributes)
            for record_type, rules in raw_types.items()
        }
        return RoutingRules(attributes=attributes, types=types)

    def keys(
        self, where: str, obj: Mapping[str, Any], allowed: frozenset[str], required: Sequence[str]
    ) -> None:
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(unknown)}")
        for key in required:
            if key not in obj:
                raise self.fail(where, f"lacks {key!r}")

    def attributes(self, raw: Any) -> dict[str, tuple[str, ...]]:
        if not isinstance(raw, Mapping) or not raw:
            raise self.fail("attributes", "must be a non-empty object of name → declaration")
        if len(raw) > MAX_ROUTING_ATTRIBUTES:
            raise self.fail(
                "attributes",
                f"{len(raw)} declared; a message allows {MAX_ROUTING_ATTRIBUTES} routing "
                f"attributes besides {', '.join(BASE_ATTRIBUTES)}",
            )
        declared: dict[str, tuple[str, ...]] = {}
        for name, spec in raw.items():
            where = f"attributes.{name}"
            if (
                not _NAME_RE.match(name)
                or ".." in name
                or name.lower().startswith(("aws.", "amazon."))
            ):
                raise self.fail(where, "is not a valid SNS message attribute name")
            if name in BASE_ATTRIBUTES:
                raise self.fail(where, "clashes with a base message attribute")
            if not isinstance(spec, Mapping):
                raise self.fail(where, "must be an object with 'values'")
            self.keys(where, spec, _ATTRIBUTE_KEYS, required=("values",))
            values = spec["values"]
            if (
                not isinstance(values, list)
                or not values
                or not all(isinstance(v, str) and v for v in values)
            ):
                raise self.fail(f"{where}.values", "must be a non-empty list of non-empty strings")
            if len(set(values)) != len(values):
                raise self.fail(f"{where}.values", "lists a value twice")
            declared[name] = tuple(values)
        return declared

    def type_rules(
        self,
        record_type: str,
        raw: Any,
        declared: Mapping[str, tuple[str, ...]],
        where: str | None = None,
    ) -> tuple[AttributeRule, ...]:
        where = where or f"types.{record_type}"
        if not record_type or not isinstance(raw, Mapping):
            raise self.fail(where, "must be an object of attribute → rule")
        rules = []
        for attribute, spec in raw.items():
            if attribute not in declared:
                raise self.fail(
                    f"{where}.{attribute}",
                    f"sets undeclared attribute {attribute!r} "
                    f"(declared: {', '.join(declared)}); declare it under 'attributes' first",
                )
            rules.append(self.rule(record_type, attribute, spec, declared[attribute], where))
        return tuple(rules)

    def rule(
        self, record_type: str, attribute: str, spec: Any, allowed: tuple[str, ...], within: str
    ) -> AttributeRule:
        where = f"{within}.{attribute}"
        if not isinstance(spec, Mapping):
            raise self.fail(where, "must be an object with 'field', 'cases' and 'default'")
        self.keys(where, spec, _RULE_KEYS, required=("field", "cases", "default"))
        field = spec["field"]
        if not isinstance(field, str) or not field or "" in field.split("."):
            raise self.fail(f"{where}.field", "must be a field name or dotted path")
        raw_cases = spec["cases"]
        if not isinstance(raw_cases, list):
            raise self.fail(f"{where}.cases", "must be a list")
        cases = tuple(
            self.case(f"{where}.cases[{i}]", attribute, c, allowed) for i, c in enumerate(raw_cases)
        )
        default = self.value(f"{where}.default", attribute, spec["default"], allowed)
        if_missing = spec.get("if_missing")
        if if_missing is not None:
            if_missing = self.value(f"{where}.if_missing", attribute, if_missing, allowed)
        return AttributeRule(record_type, attribute, field, cases, default, if_missing)

    def case(self, where: str, attribute: str, raw: Any, allowed: tuple[str, ...]) -> Case:
        if not isinstance(raw, Mapping):
            raise self.fail(where, 'must be an object like {"gt": 1000, "value": "high"}')
        operators = [k for k in raw if k not in _CASE_EXTRA_KEYS]
        if len(operators) != 1 or operators[0] not in OPERATORS:
            raise self.fail(
                where,
                f"needs exactly one operator of {', '.join(OPERATORS)} "
                f"(found {', '.join(operators) or 'none'})",
            )
        if "value" not in raw:
            raise self.fail(where, "lacks 'value'")
        op = operators[0]
        operand = raw[op]
        if not _valid_operand(op, operand):
            kind = {"in": "a non-empty list of strings or numbers", "eq": "a string or number"}
            raise self.fail(f"{where}.{op}", f"{operand!r} is not {kind.get(op, 'a number')}")
        value = self.value(f"{where}.value", attribute, raw["value"], allowed)
        return Case(op, operand, value)

    def value(self, where: str, attribute: str, value: Any, allowed: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(
                where,
                f"{value!r} is not a declared value of attribute {attribute!r} "
                f"(declared: {', '.join(allowed)})",
            )
        return value


def parse_rules(text: str | bytes, origin: str = "routing.json") -> RoutingRules:
    """Parse and validate the text of a routing document (attributes, optionally types)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise RoutingConfigError(f"{origin}: not valid JSON: {exc}") from None
    return RoutingRules.from_document(doc, origin)


def rules_with_registry(doc: Any, registry: Registry, origin: str) -> RoutingRules:
    """The attributes `doc` (a routing.json) declares and each registered type's rules (its
    type.json `routing`), validated; an error names the file it is in."""
    declared = _declared_only(doc, origin)
    types = {}
    for spec in registry:
        if spec.routing:
            parser = _Parser(str(spec.path / "type.json"))
            types[spec.name] = parser.type_rules(spec.name, spec.routing, declared, "routing")
    return RoutingRules(attributes=declared, types=types)


@lru_cache(maxsize=8)
def load_rules(path: Path | str = ROUTING_FILE, registry_root: Path | None = None) -> RoutingRules:
    """The validated rules: attributes from `path` (the app's `routing.json`), each type's
    rules from the registry (`registry_root`, else the app's). Read once per process."""
    path = Path(path)
    doc = _read_document(path)
    return rules_with_registry(doc, load_registry(registry_root), str(path))


def _read_document(path: Path) -> Any:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise RoutingConfigError(f"cannot read routing rules {path}: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RoutingConfigError(f"{path}: not valid JSON: {exc}") from None


def declared_attributes(path: Path | str = ROUTING_FILE) -> dict[str, list[str]]:
    """Each routing attribute the router can set, with its allowed values (validated).

    Tools that cannot import this module may read `routing.json` directly: the same mapping
    is `{name: spec["values"] for name, spec in doc["attributes"].items()}`.
    """
    return {k: list(v) for k, v in _declared_only(_read_document(Path(path)), str(path)).items()}


def _declared_only(doc: Any, origin: str) -> Mapping[str, tuple[str, ...]]:
    """The attributes a routing.json declares (it holds no per-type rules any more)."""
    if isinstance(doc, Mapping) and "types" in doc:
        raise RoutingConfigError(
            f"{origin}: 'types' is no longer read here: a record type's routing rules are the "
            "'routing' of its types/<name>/type.json"
        )
    return RoutingRules.from_document(doc, origin).attributes
