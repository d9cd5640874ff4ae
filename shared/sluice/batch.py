"""Run handlers over an SQS batch: a chunk handler per message, a record handler per record.

Returns `{"batchItemFailures": [...]}` with exactly the messages to retry. Per record:
- a permanent error (bad data) quarantines that record and the rest of its chunk goes on;
- a transient error (an AWS fault, an I/O error, a claim held elsewhere: see
  `is_transient`) fails the whole chunk, whose effects are idempotent, so the retry is safe;
- any other exception (the handler's own bug, or data it did not expect) is isolated: the
  record is set aside as a `RecordFailure` with its error, the rest of the chunk goes on,
  and the stage runtime retries or dead-letters the failed records alone (`sluice.stage`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypedDict, TypeVar

from sluice.delivery import Delivery, delivering
from sluice.envelope import Chunk, Record, chunk_from_sqs_body
from sluice.errors import PermanentError, SluiceError
from sluice.idempotency import renew_lease
from sluice.observability import add_metric, bind, get_logger, get_tracer, log_context
from sluice.observability.tracing import record_error

T = TypeVar("T")
log = get_logger(__name__)


class ItemFailure(TypedDict):
    itemIdentifier: str


class BatchResponse(TypedDict):
    batchItemFailures: list[ItemFailure]


@dataclass(frozen=True)
class SQSMessage:
    """One SQS message of a Lambda event; the raw dict stays reachable as `raw`."""

    message_id: str
    body: str
    receive_count: int
    raw: Mapping[str, Any]

    @classmethod
    def from_event_record(cls, record: Mapping[str, Any]) -> SQSMessage:
        attributes = record.get("attributes") or {}
        return cls(
            message_id=str(record["messageId"]),
            body=str(record.get("body", "")),
            receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
            raw=record,
        )


@dataclass(frozen=True)
class RecordFailure:
    """One record whose handler raised an error that is neither bad data nor transient."""

    record: Record
    error_type: str
    message: str


@dataclass
class ChunkOutcome:
    """What a stage did with one chunk's records (the ledger's unit).

    `routes` (the router's) maps the canonical JSON of a set of routing attributes to the
    records published with them, so `sluice ledger` can tell which sinks each record must
    reach. `failures` are the records counted in `failed`, with their errors. Neither is one
    of the counts of `as_dict()`.
    """

    records_in: int = 0
    out: int = 0
    quarantined: int = 0
    duplicate: int = 0
    failed: int = 0
    routes: dict[str, int] = field(default_factory=dict)
    failures: list[RecordFailure] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "records_in": self.records_in,
            "out": self.out,
            "quarantined": self.quarantined,
            "duplicate": self.duplicate,
            "failed": self.failed,
        }


@dataclass
class RecordResults(Generic[T]):
    """Outputs of a record handler over one chunk, and the counts for its outcome."""

    outputs: list[tuple[Record, T]] = field(default_factory=list)
    outcome: ChunkOutcome = field(default_factory=ChunkOutcome)


class RejectRecord(Protocol):
    """Where a record that failed permanently goes (the quarantine writer)."""

    def __call__(self, record: Record, chunk: Chunk, error: PermanentError) -> None: ...


class RejectMessage(Protocol):
    """Where an SQS message that is not a usable envelope goes."""

    def __call__(self, message: SQSMessage, error: PermanentError) -> None: ...


class Unit(Protocol):
    """What one message (or event record) carries, as claims, logs and traces name it: a
    `Chunk`, or a stage's own (ingest's checkpoints and objects)."""

    @property
    def unit_id(self) -> str: ...

    @property
    def correlation_id(self) -> str: ...

    @property
    def type(self) -> str: ...


ChunkHandler = Callable[[Chunk], ChunkOutcome]


def run_records(
    chunk: Chunk,
    handler: Callable[[Record, Chunk], T | None],
    *,
    reject: RejectRecord,
    resolve: Callable[[Record], Record] | None = None,
) -> RecordResults[T]:
    """Call `handler` on each record of `chunk`; a `PermanentError` goes to `reject`.

    `resolve` turns a claim-checked record back into one with its payload, so handlers never
    see `payload_ref`. A handler returning None produced nothing for the next hop (filtered).
    A transient error propagates: the chunk is retried as a whole. Any other exception is
    the record's alone: it is counted in `failed` and kept in `outcome.failures`.
    """
    results: RecordResults[T] = RecordResults()
    results.outcome.records_in = len(chunk.records)
    outputs = results.outputs
    # One context for the chunk's records, its record_id rebound per record (a context
    # entered and left per record cost ~1.5 us a record); left, it restores what was there.
    with log_context():
        for record in chunk.records:
            renew_lease()  # the chunk's claim, if held as a lease: a clock read, rarely a write
            bind(record_id=record.id)
            try:
                full = resolve(record) if resolve is not None and record.payload_ref else record
                output = handler(full, chunk)
            except PermanentError as error:
                log.warning("record rejected", extra={"reason": error.reason})
                reject(record, chunk, error)
                results.outcome.quarantined += 1
                continue
            except Exception as error:
                if is_transient(error):
                    raise
                log.exception("record failed in the handler; the rest of its chunk goes on")
                failure = RecordFailure(record, type(error).__name__, str(error)[:1000])
                results.outcome.failures.append(failure)
                results.outcome.failed += 1
                continue
            if output is not None:
                outputs.append((record, output))
    return results


def is_transient(error: BaseException) -> bool:
    """Whether a retry may succeed: any Sluice error that is not bad data (`TransientError`,
    and `ConfigError` or `UnsupportedVersionError`, which a deploy fixes before a redrive),
    an I/O error (`OSError`: timeouts, refused connections), or botocore's own errors."""
    if isinstance(error, SluiceError | OSError) and not isinstance(error, PermanentError):
        return True
    from sluice import aws  # botocore is imported by then if it raised

    return isinstance(error, aws.client_errors())


DeferMessage = Callable[[SQSMessage, float], None]


def process_sqs_batch(
    event: Mapping[str, Any],
    handle_chunk: Callable[[Any], Any],
    *,
    reject_message: RejectMessage,
    defer: DeferMessage | None = None,
    lazy_payloads: bool = False,
    decode: Callable[[str], Unit] | None = None,
) -> BatchResponse:
    """Run `handle_chunk` on each message's chunk and report the messages that failed.

    `decode` turns a message body into what the handler gets (default: the chunk of an
    envelope; ingest's continuations carry checkpoints). A message it refuses
    (`PermanentError`: not a usable envelope) is handed to `reject_message` and acknowledged.
    A failure
    that says when a retry could succeed (`TransientError.retry_after_s`: a claim held by an
    invocation that may have died) goes to `defer`, which keeps the message hidden until
    then, so its receive count is not spent on retries bound to fail. `lazy_payloads`: see
    `Chunk.decode`.
    """
    failures: list[ItemFailure] = []
    records: Iterable[Mapping[str, Any]] = event.get("Records") or []
    for raw in records:
        message = SQSMessage.from_event_record(raw)
        try:
            chunk = (
                decode(message.body)
                if decode is not None
                else chunk_from_sqs_body(message.body, lazy_payloads=lazy_payloads)
            )
        except PermanentError as error:
            log.error(
                "undecodable message quarantined",
                extra={"message_id": message.message_id, "reason": error.reason},
            )
            try:
                reject_message(message, error)
            except Exception:
                log.exception("could not quarantine message; it will be retried")
                failures.append({"itemIdentifier": message.message_id})
            add_metric("MessagesMalformed")
            continue
        except Exception:
            log.exception("message could not be decoded; it will be retried")
            failures.append({"itemIdentifier": message.message_id})
            add_metric("ChunksFailed")
            continue
        with handling(chunk, sqs_delivery(message)):
            try:
                outcome = handle_chunk(chunk)
            except Exception as error:
                record_error(error)
                log.exception(
                    "chunk failed; it will be retried",
                    extra={"receive_count": message.receive_count},
                )
                failures.append({"itemIdentifier": message.message_id})
                add_metric("ChunksFailed")
                if isinstance(chunk, Chunk):
                    add_metric("RecordsFailed", len(chunk.records))
                retry_after = getattr(error, "retry_after_s", None)
                if defer is not None and retry_after:
                    defer(message, float(retry_after))
                continue
            if isinstance(chunk, Chunk) and isinstance(outcome, ChunkOutcome):
                # One line per chunk (not per record): what `sluice trace` finds a stage's hop
                # by (function, request id) in CloudWatch Logs when no span file is at hand.
                log.info("chunk done", extra=outcome.as_dict())
                emit_chunk_metrics(chunk, outcome)
    return {"batchItemFailures": failures}


@contextmanager
def handling(unit: Unit, delivery: Delivery) -> Iterator[None]:
    """While a unit is handled: its log context, its delivery (`sluice.delivery`), and its
    span, which reads the delivery's trace context for its parent."""
    with (
        log_context(correlation_id=unit.correlation_id, chunk_id=unit.unit_id),
        delivering(delivery),
        get_tracer().chunk_span(unit.unit_id, unit.correlation_id, unit.type),
    ):
        yield


def sqs_delivery(message: SQSMessage) -> Delivery:
    raw = message.raw
    attributes = {
        str(name): str(value.get("stringValue"))
        for name, value in (raw.get("messageAttributes") or {}).items()
        if isinstance(value, Mapping) and value.get("stringValue") is not None
    }
    return Delivery(
        kind="sqs",
        attempt=message.receive_count,
        source_arn=str(raw.get("eventSourceARN") or ""),
        message_id=message.message_id,
        receipt_handle=str(raw.get("receiptHandle") or ""),
        attributes=attributes,
    )


def emit_chunk_metrics(chunk: Chunk, outcome: ChunkOutcome) -> None:
    """Per-chunk counters and the age of the chunk's oldest record."""
    add_metric("ChunksIn")
    add_metric("RecordsIn", outcome.records_in)
    add_metric("RecordsOut", outcome.out)
    add_metric("RecordsQuarantined", outcome.quarantined)
    add_metric("RecordsDuplicate", outcome.duplicate)
    age = oldest_record_age_ms(chunk)
    if age is not None:
        add_metric("RecordAge", age, "Milliseconds")


def oldest_record_age_ms(chunk: Chunk) -> float | None:
    """Now minus the earliest `ingested_at` of the chunk (ISO strings sort by time)."""
    if not chunk.records:
        return None
    oldest = min(r.ingested_at for r in chunk.records)
    try:
        at = datetime.fromisoformat(oldest.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (time.time() - at.timestamp()) * 1000.0)


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "BatchResponse",
    "ChunkOutcome",
    "ItemFailure",
    "SQSMessage",
    "Unit",
]
