"""The alerts consumer: one alert per high-priority record on the alerts topic, never two.

Direct SNS subscription (filter policy in resources.yaml Metadata, applied by the deploy).
A per-record claim (namespace "alerts", key record id) makes a retried or redelivered chunk
publish only the alerts it has not published yet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.message import alert_subject, alert_text
from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import get_settings
from sluice.envelope import Chunk, Record
from sluice.errors import TransientError
from sluice.idempotency import RemainingTime, run_once
from sluice.observability import add_metric, get_logger
from sluice.stage import StageRuntime, remaining_of

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

SINK = "alerts"
STAGE = f"consumer-{SINK}"
CLAIM_NAMESPACE = "alerts"
TOPIC_ARN_ENV = "SLUICE_ALERTS_TOPIC_ARN"

log = get_logger(__name__)
_runtime: StageRuntime | None = None


class AlertPublishError(TransientError):
    """The alerts topic could not be published to: the invocation is retried."""


def runtime() -> StageRuntime:
    global _runtime
    if _runtime is None:
        _runtime = StageRuntime(name=STAGE)
    return _runtime


def reset() -> None:
    """Forget the cached runtime (tests that start a fresh AWS mock call this)."""
    global _runtime
    _runtime = None


def alerts_topic_arn(records_topic_arn: str) -> str:
    """SLUICE_ALERTS_TOPIC_ARN, else the alerts topic next to the topic that invoked us.

    Both topics are in the platform stack (same account and region), so the invoking topic's
    ARN gives the alerts topic's without an API call or a CreateTopic permission.
    """
    configured = os.environ.get(TOPIC_ARN_ENV)
    if configured:
        return configured
    base, sep, _ = records_topic_arn.rpartition(":")
    if not sep or not base.startswith("arn:"):
        raise TransientError(f"cannot derive the alerts topic from {records_topic_arn!r}")
    return f"{base}:{get_settings().names.alerts_topic}"


class Publisher(Protocol):
    """Where alerts go (`AlertPublisher`, or a fake in tests)."""

    def publish(self, record: Record, chunk: Chunk) -> None: ...


class AlertPublisher:
    """Publishes alerts to one topic."""

    def __init__(self, topic_arn: str, client: SNSClient | None = None) -> None:
        self.topic_arn = topic_arn
        self._client = client

    @property
    def client(self) -> SNSClient:
        if self._client is None:
            self._client = aws.sns()
        return self._client

    def publish(self, record: Record, chunk: Chunk) -> None:
        try:
            self.client.publish(
                TopicArn=self.topic_arn,
                Subject=alert_subject(record, chunk),
                Message=alert_text(record, chunk),
                MessageAttributes={
                    "record_type": {"DataType": "String", "StringValue": chunk.type},
                    "correlation_id": {"DataType": "String", "StringValue": chunk.correlation_id},
                    "record_id": {"DataType": "String", "StringValue": record.id},
                },
            )
        except aws.client_errors() as exc:
            raise AlertPublishError(f"could not publish alert for {record.id}: {exc}") from exc


def handle_event(event: Mapping[str, Any], context: Any = None) -> list[ChunkOutcome]:
    """The SNS handler: alerts for every chunk of the event."""
    rt = runtime()
    remaining = remaining_of(context)
    outcomes = []
    for record in event.get("Records") or []:
        topic = str((record.get("Sns") or {}).get("TopicArn") or "")
        publisher = AlertPublisher(alerts_topic_arn(topic))
        outcomes += rt.handle_sns(
            {"Records": [record]},
            partial(handle_chunk, rt=rt, publisher=publisher, remaining_ms=remaining),
            remaining_ms=remaining,
            claim=False,  # claims are per record, below
        )
    return outcomes


def handle_chunk(
    chunk: Chunk, rt: StageRuntime, publisher: Publisher, remaining_ms: RemainingTime = None
) -> ChunkOutcome:
    """Publish one alert per record unless that record was alerted before."""

    def alert(record: Record, chunk: Chunk) -> bool:
        done = run_once(
            rt.idempotency,
            CLAIM_NAMESPACE,
            record.id,
            lambda: publisher.publish(record, chunk),
            remaining_ms=remaining_ms,
        )
        return not done.duplicate

    results = rt.run_records(chunk, alert)
    published = sum(1 for _, new in results.outputs if new)
    outcome = results.outcome
    outcome.out, outcome.duplicate = published, len(results.outputs) - published
    rt.ledger.record_delivery(SINK, chunk, delivered=len(results.outputs))
    add_metric("AlertsPublished", published)
    return outcome
