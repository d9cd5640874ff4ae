"""The alerts consumer: an alert per high-priority record on the alerts topic, at least once.

Direct SNS subscription (filter policy in resources.yaml Metadata, applied by the deploy).
A per-record claim (namespace "alerts", key record id) makes a retried or redelivered chunk
publish only the alerts it has not published yet. The claims of a chunk's records are taken
together (`run_batch_once`: one transaction per 100 records) and the alerts go out with
PublishBatch, 10 a call, so a chunk of 50 alerts costs ~10 requests, not 150.

What a subscriber gets (the delivery contract, README): every high-priority record is
alerted at least once, and every copy of its alert carries the same `alert_id` message
attribute (the record id). A second copy is published only when SNS accepted a PublishBatch
whose answer was lost (the SDK's retry publishes it again) or when an invocation died
between publishing and completing its claims; the alerts topic is a standard topic (email,
HTTPS, Lambda and SQS subscribers all work), and standard topics cannot deduplicate, so
subscribers that must page once deduplicate on `alert_id`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.message import alert_subject, alert_text
from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import get_settings
from sluice.envelope import Chunk, Record
from sluice.errors import TransientError
from sluice.idempotency import RemainingTime, run_batch_once
from sluice.observability import add_metric, get_logger
from sluice.stage import StageRuntime, remaining_of

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

SINK = "alerts"
STAGE = f"consumer-{SINK}"
CLAIM_NAMESPACE = "alerts"
TOPIC_ARN_ENV = "SLUICE_ALERTS_TOPIC_ARN"
PUBLISH_BATCH_MAX = 10  # SNS PublishBatch entries per call
# Alert claims hold 10 s (plus the claim margin), not the invocation's 30: publishing 100
# alerts takes well under a second, and a killed invocation's claims then lapse soon enough
# for its retry to wait for them (`StageRuntime.handle_sns`) instead of giving up the event.
# An invocation still publishing after that may see its claims taken over: a repeated alert,
# within the at-least-once contract.
CLAIM_LEASE_MS = 10_000

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
    """Where alerts go (`AlertPublisher`, or a fake in tests).

    `publish` returns the ids of the records whose alert was accepted; it raises only when it
    cannot tell (then none counts as published).
    """

    def publish(self, records: Sequence[Record], chunk: Chunk) -> set[str]: ...


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

    def publish(self, records: Sequence[Record], chunk: Chunk) -> set[str]:
        """One alert per record, with PublishBatch (10 a call); the ids accepted by SNS.

        Entries SNS reports as failed are left out (their claims are released and the chunk
        retried); a call that fails outright raises `AlertPublishError` for the records not
        yet accepted.
        """
        published: set[str] = set()
        for start in range(0, len(records), PUBLISH_BATCH_MAX):
            batch = records[start : start + PUBLISH_BATCH_MAX]
            try:
                response = self.client.publish_batch(
                    TopicArn=self.topic_arn,
                    PublishBatchRequestEntries=[
                        _entry(str(i), record, chunk) for i, record in enumerate(batch)
                    ],
                )
            except aws.client_errors() as exc:
                if not published:
                    raise AlertPublishError(
                        f"could not publish {len(batch)} alert(s): {exc}"
                    ) from exc
                log.warning("alerts publish failed part-way", extra={"error": str(exc)})
                return published
            for ok in response.get("Successful") or []:
                record = batch[int(ok["Id"])]
                published.add(record.id)
                # One line per alert (alerts are few): what `sluice trace` shows of it.
                log.info(
                    "alert published",
                    extra={
                        "record_id": record.id,
                        "sns_message_id": ok.get("MessageId"),
                        "subject": alert_subject(record, chunk),
                        "alert": alert_text(record, chunk),
                    },
                )
            for failed in response.get("Failed") or []:
                log.warning(
                    "alert not accepted by SNS",
                    extra={
                        "record_id": batch[int(failed["Id"])].id,
                        "reason": f"{failed.get('Code')}: {failed.get('Message')}",
                    },
                )
        return published


def _entry(entry_id: str, record: Record, chunk: Chunk) -> Any:
    return {
        "Id": entry_id,
        "Subject": alert_subject(record, chunk),
        "Message": alert_text(record, chunk),
        "MessageAttributes": {
            "record_type": {"DataType": "String", "StringValue": chunk.type},
            "correlation_id": {"DataType": "String", "StringValue": chunk.correlation_id},
            "record_id": {"DataType": "String", "StringValue": record.id},
            # Stable across retries and redeliveries: subscribers deduplicate on it.
            "alert_id": {"DataType": "String", "StringValue": record.id},
        },
    }


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
    """Publish one alert per record unless that record was alerted before.

    Alerts SNS did not accept are retried with the chunk (`AlertPublishError`); the ones it
    did accept are claimed as done, so the retry publishes only the rest.
    """
    # Each alert's text is made per record first: a record the message code cannot handle
    # fails alone (dead-lettered with its error by the runtime), not the chunk's other alerts.
    results = rt.run_records(chunk, _alertable)  # claim-checked payloads resolved
    records = {record.id: record for record, _ in results.outputs}
    done = run_batch_once(
        rt.idempotency,
        CLAIM_NAMESPACE,
        list(records),
        lambda ids: publisher.publish([records[i] for i in ids], chunk),
        remaining_ms=remaining_ms,
        lease_ms=CLAIM_LEASE_MS,
    )
    add_metric("AlertsPublished", len(done.done))
    if done.failed:
        raise AlertPublishError(
            f"{len(done.failed)} alert(s) not accepted by SNS; the chunk is retried"
        )
    outcome = results.outcome
    outcome.out = len(done.done)
    outcome.duplicate = len(results.outputs) - outcome.out
    rt.ledger.record_delivery(SINK, chunk, delivered=len(results.outputs))
    return outcome


def _alertable(record: Record, chunk: Chunk) -> Record:
    """The record, once its alert's subject and text could be made."""
    alert_subject(record, chunk)
    alert_text(record, chunk)
    return record
