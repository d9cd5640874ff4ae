"""SNS filter policies (MessageAttributes scope) evaluated as SNS would, without calling SNS.

The router asks which consumers a set of routing attributes reaches (the ledger's per-object
progress); `sluice ledger` asks the same offline. Implements the operators the shipped and
scaffolded policies use: exact strings, `exists`, `prefix`, `suffix`, `anything-but`,
`equals-ignore-case`; anything else is a clear `FilterPolicyError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Attributes = Mapping[str, str]
SUPPORTED = ("exists", "prefix", "suffix", "anything-but", "equals-ignore-case")


class FilterPolicyError(ValueError):
    """A filter policy this evaluator cannot evaluate (an operator or scope it does not support)."""


@dataclass(frozen=True)
class FilterPolicy:
    """One subscription's policy; an empty policy lets every message through."""

    rules: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, policy: Mapping[str, Any] | str | None) -> FilterPolicy:
        if policy is None or policy == "":
            return cls()
        raw = json.loads(policy) if isinstance(policy, str) else policy
        if not isinstance(raw, Mapping):
            raise FilterPolicyError(f"a filter policy is a JSON object, not {raw!r}")
        rules: dict[str, tuple[Any, ...]] = {}
        for key, conditions in raw.items():
            if key.startswith("$"):
                raise FilterPolicyError(f"filter policy operator {key!r} is not supported")
            values = tuple(conditions) if isinstance(conditions, list) else (conditions,)
            for condition in values:
                _check(key, condition)
            rules[str(key)] = values
        return cls(rules)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.rules)

    def matches(self, attributes: Attributes) -> bool:
        """True if a message with these (string) message attributes passes the policy."""
        return all(
            any(_condition(attributes.get(key), c) for c in conditions)
            for key, conditions in self.rules.items()
        )


def _check(key: str, condition: Any) -> None:
    if isinstance(condition, str):
        return
    if isinstance(condition, bool) or not isinstance(condition, Mapping) or len(condition) != 1:
        raise FilterPolicyError(
            f"filter policy condition {condition!r} on {key!r} is not supported "
            f"(strings and {', '.join(SUPPORTED)} are)"
        )
    ((operator, operand),) = condition.items()
    if operator not in SUPPORTED:
        raise FilterPolicyError(
            f"filter policy operator {operator!r} on {key!r} is not supported "
            f"(supported: {', '.join(SUPPORTED)})"
        )
    if operator == "anything-but" and isinstance(operand, Mapping):
        if set(operand) - {"prefix", "suffix"}:
            raise FilterPolicyError(f"anything-but {operand!r} on {key!r} is not supported")
    elif operator == "anything-but":
        items = operand if isinstance(operand, list) else [operand]
        if not all(isinstance(i, str) for i in items):
            raise FilterPolicyError(f"numeric anything-but on {key!r} is not supported")
    elif operator == "exists" and not isinstance(operand, bool):
        raise FilterPolicyError(f"exists on {key!r} takes true or false")
    elif operator != "exists" and not isinstance(operand, str):
        raise FilterPolicyError(f"{operator} on {key!r} takes a string")


def _condition(value: str | None, condition: Any) -> bool:
    if isinstance(condition, str):
        return value == condition
    ((operator, operand),) = condition.items()
    if operator == "exists":
        return (value is not None) is operand
    if value is None:  # every other operator needs the attribute to be there
        return False
    if operator == "prefix":
        return value.startswith(operand)
    if operator == "suffix":
        return value.endswith(operand)
    if operator == "equals-ignore-case":
        return value.lower() == str(operand).lower()
    # anything-but
    if isinstance(operand, Mapping):
        if "prefix" in operand and value.startswith(operand["prefix"]):
            return False
        return not ("suffix" in operand and value.endswith(operand["suffix"]))
    excluded = operand if isinstance(operand, list) else [operand]
    return value not in excluded


def check_scope(scope: str | None) -> None:
    """Only MessageAttributes-scope policies are evaluated (the pipeline's are all that).

    Raises `FilterPolicyError` for another scope.
    """
    if scope not in (None, "", "MessageAttributes"):
        raise FilterPolicyError(f"filter policy scope {scope!r} is not supported")


__all__ = ["SUPPORTED", "Attributes", "FilterPolicy", "FilterPolicyError", "check_scope"]
