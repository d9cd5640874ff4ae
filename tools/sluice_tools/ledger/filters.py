"""Each consumer's filter policy, read from its `resources.yaml`; the evaluator itself is
`sluice.filters` (the router evaluates the same policies at runtime).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice.filters import SUPPORTED, Attributes, FilterPolicy, FilterPolicyError, check_scope
from sluice.registry import expand_template_policies, load_registry


@dataclass(frozen=True)
class SinkPolicy:
    """A consumer (its sink name), its subscription's filter policy, and how it subscribes."""

    sink: str
    policy: FilterPolicy
    direct: bool = False


def consumer_policies(consumers_dir: Path) -> dict[str, SinkPolicy]:
    """Each `consumers/<name>/resources.yaml`'s policy: the subscription's, or, for a direct
    consumer, `Metadata.Sluice.FilterPolicy` (the deploy applies it)."""
    import yaml

    found: dict[str, SinkPolicy] = {}
    types = consumers_dir.parent / "types"  # the registry: what the deploy renders policies with
    names = load_registry(types).names() if types.is_dir() else ()
    for path in sorted(consumers_dir.glob("*/resources.yaml")):
        sink = path.parent.name
        with path.open(encoding="utf-8") as f:
            template = expand_template_policies(yaml.safe_load(f) or {}, names)
        if _event_consumer(template):
            continue  # fed by the events bus (new-consumer --on-event): it is no records' sink
        try:
            found[sink] = _policy_of(sink, template)
        except FilterPolicyError as exc:
            raise FilterPolicyError(f"{path}: {exc}") from None
    return found


def _event_consumer(template: Mapping[str, Any]) -> bool:
    """A consumer fed by a rule on the events bus and subscribed to no topic."""
    types = {r.get("Type") for r in (template.get("Resources") or {}).values()}
    direct = ((template.get("Metadata") or {}).get("Sluice") or {}).get("Direct")
    return "AWS::Events::Rule" in types and "AWS::SNS::Subscription" not in types and not direct


def _policy_of(sink: str, template: Mapping[str, Any]) -> SinkPolicy:
    meta = (template.get("Metadata") or {}).get("Sluice") or {}
    if meta.get("Direct"):
        check_scope(meta.get("FilterPolicyScope"))
        return SinkPolicy(sink, FilterPolicy.parse(meta.get("FilterPolicy")), direct=True)
    subscriptions = [
        r.get("Properties") or {}
        for r in (template.get("Resources") or {}).values()
        if r.get("Type") == "AWS::SNS::Subscription"
    ]
    if not subscriptions:
        raise FilterPolicyError(f"consumer {sink!r} declares no subscription")
    props = subscriptions[0]
    check_scope(props.get("FilterPolicyScope"))
    return SinkPolicy(sink, FilterPolicy.parse(props.get("FilterPolicy")))


__all__ = [
    "SUPPORTED",
    "Attributes",
    "FilterPolicy",
    "FilterPolicyError",
    "SinkPolicy",
    "check_scope",
    "consumer_policies",
]
