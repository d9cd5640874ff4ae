"""The alerts consumer: an alert per high-priority record on the alerts topic, at least once.

Direct SNS subscription (filter policy in resources.yaml Metadata, applied by the deploy).
ONE claim per chunk (namespace "alerts", key chunk id; `IdempotencyStore.claim_with_progress`,
a conditional UpdateItem with a 10 s lease) carries a progress mark: the positions in the
chunk of the records whose alert SNS accepted (a number set). The alerts go out with
PublishBatch, 10 a call, and after each call one UpdateItem adds its positions to the mark
and renews the lease (`record_progress`); the last call's positions go with the completion.
So a chunk of N alerts costs 1 + ceil(N/10) small writes, not a transaction and a batch write
per alert. A retry, a redelivery, or an invocation taking over a lapsed claim reads the
mark and publishes only the rest; a claim held by a live invocation defers the chunk
(`ClaimInProgressError`, waited for by the runtime); a completed claim makes the chunk's
alerts duplicates. When SNS refuses some entries or a call fails, the claim is let go with
its mark (expiry 0) so that the retry takes it over at once.

What a subscriber gets (the delivery contract, README): every high-priority record is
alerted at least once, and every copy of its alert carries the same `alert_id` message
attribute (the record id). A second copy is published only when SNS accepted a PublishBatch
whose answer was lost (the SDK's retry publishes it again) or when an invocation died
between publishing a PublishBatch and marking it (at most one PublishBatch, 10 alerts, per
such event; an invocation slower than its lease may also see its claim taken over and its
last batch repeated); the alerts topic is a standard topic (email,
HTTPS, Lambda and SQS subscribers all work), and standard topics cannot deduplicate, so
subscribers that must page once deduplicate on `alert_id`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.message import alert_subject, alert_text
from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import get_settings
from sluice.delivery import current_delivery
from sluice.envelope import Chunk, Record
from sluice.errors import TransientError
from sluice.idempotency import Claim, IdempotencyStore, RemainingTime
from sluice.lazy import first_use
from sluice.observability import add_metric, get_logger
from sluice.stage import StageRuntime

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

SINK = "alerts"
STAGE = f"consumer-{SINK}"
CLAIM_NAMESPACE = "alerts"
TOPIC_ARN_ENV = "SLUICE_ALERTS_TOPIC_ARN"
PUBLISH_BATCH_MAX = 10  # SNS PublishBatch entries per call
# Alert claims hold 10 s (plus the claim margin), renewed at each PublishBatch, not the
# invocation's 30: a PublishBatch takes well under a second, and a killed invocation's claim
# then lapses soon enough
# for its retry to wait for them (`StageRuntime.handle_sns`) instead of giving up the event.
# An invocation stuck in one call after that may see its claim taken over: a repeated alert,
# within the at-least-once contract.
CLAIM_LEASE_MS = 10_000

log = get_logger(__name__)


class AlertPublishError(TransientError):
    """The alerts topic could not be published to: the invocation is retried."""


@cache
def runtime() -> StageRuntime:
    """The process's stage runtime, made on first use. The runtime does not claim chunks:
    each chunk's alerts claim is taken in `alert_chunk`, with its progress."""
    return StageRuntime(name=STAGE, claim=False)


def reset() -> None:
    """Forget the runtime and publishers (tests that start a fresh AWS mock call this)."""
    runtime.cache_clear()
    alerts_publisher.cache_clear()


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

    client: first_use[SNSClient] = first_use(lambda self: aws.sns())

    def publish(self, records: Sequence[Record], chunk: Chunk) -> set[str]:
        """One alert per record, with PublishBatch (10 a call); the ids accepted by SNS.

        Entries SNS reports as failed are left out (not marked published; the chunk is
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


def handle_chunk(chunk: Chunk) -> ChunkOutcome:
    """The alerts of one chunk (`StageRuntime.handle_sns`'s work), on the alerts topic next
    to the records topic the chunk came from."""
    rt = runtime()
    delivery = current_delivery()
    topic = delivery.source_arn if delivery is not None else ""
    return alert_chunk(chunk, rt, alerts_publisher(alerts_topic_arn(topic)), rt.remaining)


@cache
def alerts_publisher(topic_arn: str) -> AlertPublisher:
    """The alerts topic's publisher, made on first use."""
    return AlertPublisher(topic_arn)


def alert_chunk(
    chunk: Chunk, rt: StageRuntime, publisher: Publisher, remaining_ms: RemainingTime = None
) -> ChunkOutcome:
    """Publish one alert per alertable record of the chunk that was not alerted before.

    The chunk's claim marks which alerts went out (their records' positions in the chunk),
    once per PublishBatch: a retry, a redelivery or a takeover publishes only the rest.
    Alerts SNS did not accept are retried with the chunk (`AlertPublishError`).
    """
    # Each alert's text is made per record first: a record the message code cannot handle
    # fails alone (dead-lettered with its error by the runtime), not the chunk's other alerts.
    results = rt.run_records(chunk, _alertable)  # claim-checked payloads resolved
    first: dict[str, int] = {}
    for i, record in enumerate(chunk.records):
        first.setdefault(record.id, i)
    # An alert per record id, marked by the position of its first record in the chunk.
    alertable = sorted({first[record.id]: record for record, _ in results.outputs}.items())
    published = _publish_once(chunk, alertable, rt.idempotency, publisher, remaining_ms)
    add_metric("AlertsPublished", published)
    outcome = results.outcome
    outcome.out = published
    outcome.duplicate = len(results.outputs) - published  # done before, or a repeated id
    rt.ledger.record_delivery(SINK, chunk, delivered=len(results.outputs))
    return outcome


def _publish_once(
    chunk: Chunk,
    alertable: Sequence[tuple[int, Record]],
    store: IdempotencyStore,
    publisher: Publisher,
    remaining_ms: RemainingTime,
) -> int:
    """Publish the alerts the chunk's claim does not mark as published; how many went out.

    Writes: the claim (one UpdateItem; none for a chunk without alerts), one UpdateItem per
    PublishBatch but the last (marks the batch, renews the lease), and the completion with
    the last batch's mark. Raises `AlertPublishError` if SNS did not take them all (the
    claim is let go with its marks, so the retry takes it over at once).
    """
    if not alertable:
        return 0
    if not store.enabled:
        return _publish_all(chunk, alertable, publisher, None)
    claim = store.claim_with_progress(
        CLAIM_NAMESPACE, chunk.chunk_id, remaining_ms=remaining_ms, lease_ms=CLAIM_LEASE_MS
    )
    if claim.duplicate:
        log.info("chunk's alerts were published before", extra={"chunk_id": chunk.chunk_id})
        return 0
    todo = [(i, record) for i, record in alertable if i not in claim.progress]
    return _publish_all(chunk, todo, publisher, _Marks(store, claim))


class _Marks:
    """Where a held claim's progress goes: one write per PublishBatch."""

    def __init__(self, store: IdempotencyStore, claim: Claim) -> None:
        self.store, self.claim = store, claim

    def published(self, positions: list[int], *, last: bool, complete: bool) -> None:
        if complete:
            self.store.complete(self.claim, positions)
        elif last:
            self.store.record_progress(self.claim, positions, release=True)
        elif positions:
            self.claim = self.store.record_progress(self.claim, positions, lease_ms=CLAIM_LEASE_MS)

    def let_go(self) -> None:
        """After a failed call: free the claim at once, keeping its marks (best effort: if
        this fails, the claim lapses at its lease)."""
        try:
            self.store.record_progress(self.claim, (), release=True)
        except Exception:
            log.warning("could not let the alerts claim go; it lapses", exc_info=True)


def _publish_all(
    chunk: Chunk,
    todo: Sequence[tuple[int, Record]],
    publisher: Publisher,
    marks: _Marks | None,
) -> int:
    published = missed = 0
    batches = [todo[i : i + PUBLISH_BATCH_MAX] for i in range(0, len(todo), PUBLISH_BATCH_MAX)]
    for n, batch in enumerate(batches, 1):
        try:
            accepted = publisher.publish([record for _, record in batch], chunk)
        except Exception:  # not a kill (BaseException): the claim then lapses at its lease
            if marks is not None:
                marks.let_go()
            raise
        positions = [i for i, record in batch if record.id in accepted]
        published += len(positions)
        missed += len(batch) - len(positions)
        last = n == len(batches)
        if marks is not None:
            marks.published(positions, last=last, complete=last and not missed)
    if marks is not None and not batches:
        marks.published([], last=True, complete=True)
    if missed:
        raise AlertPublishError(f"{missed} alert(s) not accepted by SNS; the chunk is retried")
    return published


def _alertable(record: Record, chunk: Chunk) -> Record:
    """The record, once its alert's subject and text could be made."""
    alert_subject(record, chunk)
    alert_text(record, chunk)
    return record
