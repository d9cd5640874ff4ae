"""The filter policy contract: a consumer may filter only on attributes the router sets,
and the router should set only attributes some consumer filters on.

Attributes and their allowed values are declared in router/chalicelib/routing.json (read as
JSON, never imported: the router is an app, tooling does not load its code).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sluice.envelope import ATTR_CORRELATION_ID, ATTR_TYPE
from sluice.errors import ConfigError
from sluice.registry import REGISTERED_TYPES, expand_template_policies, load_registry
from sluice_tools.scaffold.errors import ScaffoldError

ROUTING_JSON = Path("router") / "chalicelib" / "routing.json"
REGISTRY_DIR = Path("types")
# Set on every message; filtering on chunk_id would be meaningless, so it is not offered.
BASE_ATTRIBUTES = (ATTR_TYPE, ATTR_CORRELATION_ID)
# Operators SNS applies to string attributes (numeric needs a Number attribute).
STRING_OPERATORS = ("anything-but", "prefix", "suffix", "equals-ignore-case", "exists")


def declared_attributes(repo: Path) -> dict[str, list[str] | None]:
    """Attribute name → allowed values (None: any value) the router can set on a message."""
    path = repo / ROUTING_JSON
    try:
        routing = json.loads(path.read_text(encoding="utf-8"))
        attributes = routing["attributes"]
        declared: dict[str, list[str] | None] = {
            str(name): [str(v) for v in spec["values"]] for name, spec in attributes.items()
        }
    except FileNotFoundError:
        raise ScaffoldError(f"cannot check the filter policy: {ROUTING_JSON} not found") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ScaffoldError(f"{ROUTING_JSON} has no usable 'attributes' ({exc})") from None
    for name in BASE_ATTRIBUTES:
        declared.setdefault(name, None)
    types = registered_names(repo)
    if types:  # record_type takes a registered type's name, or the marker for all of them
        declared[ATTR_TYPE] = [*types, REGISTERED_TYPES]
    return declared


def registered_names(repo: Path) -> tuple[str, ...]:
    """The record types of the repository's registry (`types/`; none without one)."""
    if not (repo / REGISTRY_DIR).is_dir():
        return ()
    try:
        return load_registry(repo / REGISTRY_DIR).names()
    except ConfigError as exc:
        raise ScaffoldError(f"cannot read the record-type registry: {exc}") from None


def consumer_filter_policies(repo: Path) -> list[tuple[Path, Mapping[str, Any]]]:
    """(resources.yaml, policy) of each `consumers/*/resources.yaml` filter policy on
    message attributes: its SNS subscriptions' and, for a direct consumer, Metadata.Sluice's."""
    import yaml

    found: list[tuple[Path, Mapping[str, Any]]] = []
    for path in sorted(repo.glob("consumers/*/resources.yaml")):
        where = path.relative_to(repo)
        try:
            template = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            template = expand_template_policies(template, registered_names(repo))
            holders = [(template.get("Metadata") or {}).get("Sluice") or {}]
            holders += [
                r.get("Properties") or {}
                for r in (template.get("Resources") or {}).values()
                if r.get("Type") == "AWS::SNS::Subscription"
            ]
            for holder in holders:
                policy = holder.get("FilterPolicy")
                scope = holder.get("FilterPolicyScope") or "MessageAttributes"
                if policy is None or scope != "MessageAttributes":
                    continue
                policy = json.loads(policy) if isinstance(policy, str) else policy
                if not isinstance(policy, Mapping):
                    raise TypeError(f"a filter policy is a JSON object, not {policy!r}")
                found.append((where, policy))
        except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as exc:
            raise ScaffoldError(f"cannot read the filter policy of {where}: {exc}") from None
    return found


def attributes_read(policy: Mapping[str, Any]) -> set[str]:
    """The message attributes a filter policy reads (`$or` branches included)."""
    names: set[str] = set()
    for name, conditions in policy.items():
        if name == "$or" and isinstance(conditions, list):
            for branch in conditions:
                names |= attributes_read(branch) if isinstance(branch, Mapping) else set()
        else:
            names.add(str(name))
    return names


def unread_attributes(repo: Path) -> list[str]:
    """Routing attributes routing.json declares that no consumer's filter policy reads.

    Each one only multiplies the messages per chunk (the router publishes one chunk per
    combination of values), so it is worth declaring only once a subscription filters on it.
    """
    read: set[str] = set()
    for _path, policy in consumer_filter_policies(repo):
        read |= attributes_read(policy)
    routing = [name for name in declared_attributes(repo) if name not in BASE_ATTRIBUTES]
    return [name for name in routing if name not in read]


def unread_attribute_warnings(repo: Path) -> list[str]:
    """One line per unread routing attribute (empty: every declared attribute is read)."""
    try:
        unread = unread_attributes(repo)
    except ScaffoldError as exc:
        return [f"cannot check which routing attributes consumers read: {exc}"]
    return [
        f"routing attribute {name!r} ({ROUTING_JSON.as_posix()}) is read by no consumer's "
        "filter policy; each declared attribute multiplies the messages per chunk, so remove "
        "it unless a consumer filters on it"
        for name in unread
    ]


def parse_filter_policy(text: str) -> dict[str, Any]:
    """The policy JSON object of `--filter`; `ScaffoldError` if it is not one."""
    try:
        policy = json.loads(text)
    except ValueError as exc:
        raise ScaffoldError(f"--filter is not valid JSON: {exc}") from None
    if not isinstance(policy, dict) or not policy:
        raise ScaffoldError("--filter must be a non-empty JSON object (an SNS filter policy)")
    return policy


def check_filter_policy(
    policy: Mapping[str, Any], declared: Mapping[str, list[str] | None]
) -> None:
    """Refuse a policy naming an attribute (or value) the router never sets."""
    for name, conditions in policy.items():
        if name == "$or":
            if not isinstance(conditions, list) or not conditions:
                raise ScaffoldError("filter policy: '$or' must be a non-empty list of policies")
            for branch in conditions:
                if not isinstance(branch, dict) or not branch:
                    raise ScaffoldError("filter policy: each '$or' branch must be an object")
                check_filter_policy(branch, declared)
            continue
        if name not in declared:
            known = ", ".join(sorted(declared))
            raise ScaffoldError(
                f"filter policy uses attribute {name!r}, which the router never sets "
                f"(it sets: {known})"
            )
        if not isinstance(conditions, list) or not conditions:
            raise ScaffoldError(f"filter policy: {name!r} must map to a non-empty list")
        for condition in conditions:
            _check_condition(name, condition, declared[name])


def _check_condition(name: str, condition: Any, allowed: list[str] | None) -> None:
    if isinstance(condition, str):
        _check_value(name, condition, allowed)
        return
    if not isinstance(condition, dict) or len(condition) != 1:
        raise ScaffoldError(
            f"filter policy: {name!r} condition {json.dumps(condition)} can never match a "
            "string attribute (use strings or one of " + ", ".join(STRING_OPERATORS) + ")"
        )
    ((operator, operand),) = condition.items()
    if operator not in STRING_OPERATORS:
        raise ScaffoldError(
            f"filter policy: operator {operator!r} on {name!r} cannot match; the router's "
            "attributes are strings (use " + ", ".join(STRING_OPERATORS) + ")"
        )
    if operator == "exists":
        if not isinstance(operand, bool):
            raise ScaffoldError(f"filter policy: 'exists' on {name!r} takes true or false")
    elif operator == "anything-but":
        values = [operand] if isinstance(operand, str) else operand
        if isinstance(values, dict):
            for op, sub in values.items():
                _check_condition(name, {op: sub}, allowed)
        elif isinstance(values, list) and all(isinstance(v, str) for v in values):
            for value in values:
                _check_value(name, value, allowed)
        else:
            raise ScaffoldError(f"filter policy: 'anything-but' on {name!r} takes strings")
    elif not isinstance(operand, str):
        raise ScaffoldError(f"filter policy: {operator!r} on {name!r} takes a string")
    elif allowed is not None and operator != "equals-ignore-case":
        match = str.startswith if operator == "prefix" else str.endswith
        if not any(match(v, operand) for v in allowed):
            raise ScaffoldError(
                f"filter policy: {operator} {operand!r} matches no value the router sets for "
                f"{name!r} ({', '.join(allowed)})"
            )
    elif allowed is not None and operand.lower() not in {v.lower() for v in allowed}:
        _check_value(name, operand, allowed)


def _check_value(name: str, value: str, allowed: list[str] | None) -> None:
    if name == ATTR_TYPE and allowed is not None and value not in allowed:
        known = ", ".join(v for v in allowed if v != REGISTERED_TYPES)
        raise ScaffoldError(
            f"filter policy: {value!r} is not a registered record type (registered: {known}; "
            f"{REGISTERED_TYPES!r} admits every one, new ones included)"
        )
    if allowed is not None and value not in allowed:
        raise ScaffoldError(
            f"filter policy: the router never sets {name}={value!r} (allowed: {', '.join(allowed)})"
        )
