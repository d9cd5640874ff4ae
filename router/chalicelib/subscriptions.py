"""Which consumers a route reaches: the records topic's subscriptions and their filter policies.

Read from SNS (ListSubscriptionsByTopic, GetSubscriptionAttributes) and kept for a minute
per container; the ledger's progress counts, per consumer, the records each route owes it
(`sluice.progress`). A subscription added or removed while an object is in flight makes its
counts disagree with what the consumers record: the object is reported stuck, never
delivered early (docs/decisions.md, 2026-12-04).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sluice import aws
from sluice.config import ResourceNames, get_settings
from sluice.envelope import ATTR_CORRELATION_ID, ATTR_TYPE
from sluice.errors import TransientError
from sluice.filters import FilterPolicy, FilterPolicyError, check_scope
from sluice.lazy import first_use
from sluice.observability import get_logger

log = get_logger(__name__)
CACHE_S = 60.0
CONSUMER_APP_PREFIX = "sluice-consumer-"


class SubscriptionsError(TransientError):
    """The topic's subscriptions could not be read (the chunk is retried)."""


@dataclass(frozen=True)
class Subscriber:
    consumer: str
    policy: FilterPolicy


def consumer_of(endpoint: str, protocol: str, names: ResourceNames) -> str | None:
    """The consumer a subscription belongs to: its queue `<prefix>-<stage>-consumer-<c>` or
    its function `sluice-consumer-<c>-<stage>-<handler>`; None for anything else (the local
    runtime's own queues, someone's test queue)."""
    resource = endpoint.rsplit(":", 1)[-1]
    if protocol == "sqs":
        head = names.consumer_queue("")
        return resource.removeprefix(head) or None if resource.startswith(head) else None
    if protocol == "lambda":
        pattern = rf"^{re.escape(CONSUMER_APP_PREFIX)}(.+)-{re.escape(names.stage)}-[A-Za-z0-9_]+$"
        found = re.match(pattern, resource)
        return found.group(1) if found else None
    return None


class TopicSubscriptions:
    """The records topic's consumers and their policies, cached for `cache_s`."""

    def __init__(
        self,
        topic_arn: Callable[[], str],
        client: Any = None,
        *,
        names: ResourceNames | None = None,
        cache_s: float = CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._topic_arn = topic_arn
        self._client = client
        self._names = names
        self.cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Subscriber]] | None = None

    client: first_use[Any] = first_use(lambda self: aws.sns())
    names: first_use[ResourceNames] = first_use(lambda self: get_settings().names)

    def subscribers(self) -> list[Subscriber]:
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._cached[0] >= self.cache_s:
                self._cached = (now, self._read())
            return self._cached[1]

    def _read(self) -> list[Subscriber]:
        found: dict[str, Subscriber] = {}
        try:
            args: dict[str, Any] = {"TopicArn": self._topic_arn()}
            while True:
                page = self.client.list_subscriptions_by_topic(**args)
                for sub in page.get("Subscriptions") or []:
                    consumer = consumer_of(
                        str(sub.get("Endpoint") or ""), str(sub.get("Protocol") or ""), self.names
                    )
                    arn = str(sub.get("SubscriptionArn") or "")
                    if consumer is None or not arn.startswith("arn:"):
                        continue  # not a consumer's, or still pending confirmation
                    attributes = self.client.get_subscription_attributes(SubscriptionArn=arn)
                    found[consumer] = _subscriber(consumer, attributes.get("Attributes") or {})
                token = page.get("NextToken")
                if not token:
                    break
                args["NextToken"] = token
        except aws.client_errors() as exc:
            raise SubscriptionsError(f"could not read the topic's subscriptions: {exc}") from exc
        log.info("consumers of the records topic", extra={"consumers": sorted(found)})
        return list(found.values())

    def route_sinks(
        self, routes: Mapping[str, int], record_type: str, correlation_id: str
    ) -> dict[str, int]:
        """Records per consumer: each route (canonical JSON of its routing attributes → count)
        counted for every consumer whose policy passes its message attributes."""
        subscribers = self.subscribers()
        out: dict[str, int] = {}
        for attributes, count in routes.items():
            message = {str(k): str(v) for k, v in json.loads(attributes).items()}
            message.update({ATTR_TYPE: record_type, ATTR_CORRELATION_ID: correlation_id})
            for s in subscribers:
                if count and s.policy.matches(message):
                    out[s.consumer] = out.get(s.consumer, 0) + count
        return out


def _subscriber(consumer: str, attributes: Mapping[str, Any]) -> Subscriber:
    try:
        check_scope(attributes.get("FilterPolicyScope"))
        return Subscriber(consumer, FilterPolicy.parse(attributes.get("FilterPolicy")))
    except FilterPolicyError as exc:
        # A policy this evaluator cannot judge: counted as owed by nobody would complete
        # objects early; as owed everything it might over-count (stuck, honest).
        log.warning(
            "filter policy not evaluated; counted as passing",
            extra={"consumer": consumer, "error": str(exc)},
        )
        return Subscriber(consumer, FilterPolicy())
