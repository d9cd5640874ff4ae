"""Run a chunk handler over a direct SNS → Lambda event: `handle_sqs`'s twin for SNS.

SNS invokes asynchronously with one message and has no partial batch response: a transient
error is raised (Lambda retries, then the on-failure queue), a message that is not an
envelope is quarantined. Same file in every direct consumer (scaffold template).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sluice.batch import ChunkHandler, ChunkOutcome, emit_chunk_metrics
from sluice.envelope import Chunk, chunk_from_sns_record, utc_now_iso
from sluice.errors import PermanentError
from sluice.idempotency import IdempotencyPayloadMismatchError, RemainingTime, run_once
from sluice.observability import add_metric, get_logger, get_tracer, log_context
from sluice.stage import StageRuntime, chunk_payload_hash

log = get_logger(__name__)
UNKNOWN_TYPE = "_unknown"


def handle_sns(
    rt: StageRuntime,
    event: Mapping[str, Any],
    handle_chunk: ChunkHandler,
    *,
    remaining_ms: RemainingTime = None,
    claim: bool = True,
) -> list[ChunkOutcome]:
    """`handle_chunk` once per chunk of the event, then the stage's ledger entry.

    `claim=True` claims the chunk id first (a redelivered message is skipped); `False` for
    handlers whose effects dedupe themselves. Any non-permanent error propagates.
    """
    outcomes: list[ChunkOutcome] = []
    for record in event.get("Records") or []:
        sns = record.get("Sns") or {}
        try:
            chunk = chunk_from_sns_record(record)
        except PermanentError as error:
            log.error("undecodable SNS message quarantined", extra={"reason": error.reason})
            message_id = str(sns.get("MessageId") or "no-message-id")
            rt.quarantine.reject_raw(
                record_type=UNKNOWN_TYPE,
                source=str(sns.get("TopicArn") or "sns"),
                correlation_id=message_id,
                raw=str(sns.get("Message") or ""),
                reason=error.reason,
                error_class=type(error).__name__,
                ref_id=message_id,
                ingested_at=str(sns.get("Timestamp") or utc_now_iso()),
            )
            add_metric("MessagesMalformed")
            continue
        outcomes.append(_run_chunk(rt, chunk, handle_chunk, remaining_ms, claim))
    return outcomes


def _run_chunk(
    rt: StageRuntime,
    chunk: Chunk,
    handle_chunk: ChunkHandler,
    remaining_ms: RemainingTime,
    claim: bool,
) -> ChunkOutcome:
    def effects() -> ChunkOutcome:
        outcome = handle_chunk(chunk)
        rt.ledger.record_chunk(rt.name, chunk, outcome)
        return outcome

    with (
        log_context(correlation_id=chunk.correlation_id, chunk_id=chunk.chunk_id),
        get_tracer().chunk_span(chunk.chunk_id, chunk.correlation_id, chunk.type),
    ):
        n = len(chunk.records)
        if claim:
            try:
                done = run_once(
                    rt.idempotency,
                    rt.name,
                    chunk.chunk_id,
                    effects,
                    payload_hash=chunk_payload_hash(chunk),
                    remaining_ms=remaining_ms,
                )
            except IdempotencyPayloadMismatchError as error:
                # Same chunk id, other records: keep the chunk in quarantine (as handle_sqs).
                rt.quarantine.reject_chunk(chunk, error)
                return ChunkOutcome(records_in=n, quarantined=n)
            outcome = done.value or ChunkOutcome(records_in=n, duplicate=n)
        else:
            outcome = effects()
        emit_chunk_metrics(chunk, outcome)
    return outcome


def remaining_of(context: Any) -> RemainingTime:
    """The Lambda context's remaining time as a callable (None outside Lambda)."""
    getter = getattr(context, "get_remaining_time_in_millis", None)
    return (lambda: int(getter())) if callable(getter) else None
