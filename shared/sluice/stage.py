"""What every stage gets without writing code for it: claim, quarantine, claim check, ledger.

`StageRuntime.handle_sqs` is `sluice.batch.process_sqs_batch` with each chunk claimed once
per stage, undecodable messages quarantined and the ledger written; `handle_sns` is its twin
for direct SNS subscriptions. The parts are built on
first use (nothing at import) and can all be passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from sluice import batch, jsonx
from sluice.batch import BatchResponse, ChunkHandler, ChunkOutcome, RecordResults
from sluice.claimcheck import ClaimCheck
from sluice.envelope import Chunk, Record, chunk_from_sns_record, utc_now_iso
from sluice.errors import OversizeRecordError, PermanentError
from sluice.idempotency import (
    IdempotencyPayloadMismatchError,
    IdempotencyStore,
    RemainingTime,
    run_once,
)
from sluice.ledger import LedgerWriter
from sluice.observability import add_metric, get_logger, get_tracer, log_context
from sluice.quarantine import Quarantine

T = TypeVar("T")
log = get_logger(__name__)
UNKNOWN_TYPE = "_unknown"


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class LambdaEvent(Protocol):
    """A Chalice event object (`SQSEvent`): the raw dict and the Lambda context."""

    @property
    def context(self) -> Any: ...

    def to_dict(self) -> dict[str, Any]: ...


# The scheme of `chunk_payload_hash`, its prefix: hashes of other schemes (older claims,
# bare hex) are not compared with it (see `IdempotencyStore._refused`).
CHUNK_HASH_SCHEME = "j2"


def chunk_payload_hash(chunk: Chunk) -> str:
    """What a chunk's claim compares: its records as they travel (ids, times, payloads),
    as sorted compact JSON (msgspec: ~2 ms a MB, a tenth of the standard library's)."""
    digest = hashlib.sha256(jsonx.dumps([r.to_wire() for r in chunk.records], sort_keys=True))
    return f"{CHUNK_HASH_SCHEME}:{digest.hexdigest()}"


class StageRuntime:
    """The runtime of one stage (`name` is the claim namespace, the ledger's and quarantine's
    stage name: "cleanse", "router", "consumer-index", ...)."""

    def __init__(
        self,
        name: str,
        *,
        quarantine: Quarantine | None = None,
        ledger: LedgerWriter | None = None,
        idempotency: IdempotencyStore | None = None,
        claims: ClaimCheck | None = None,
    ) -> None:
        if not name:
            raise ValueError("a stage runtime needs the stage name")
        self.name = name
        self._quarantine = quarantine
        self._ledger = ledger
        self._idempotency = idempotency
        self._claims = claims

    @property
    def quarantine(self) -> Quarantine:
        if self._quarantine is None:
            self._quarantine = Quarantine(self.name)
        return self._quarantine

    @property
    def ledger(self) -> LedgerWriter:
        if self._ledger is None:
            self._ledger = LedgerWriter()
        return self._ledger

    @property
    def idempotency(self) -> IdempotencyStore:
        if self._idempotency is None:
            self._idempotency = IdempotencyStore()
        return self._idempotency

    @property
    def claims(self) -> ClaimCheck:
        if self._claims is None:
            self._claims = ClaimCheck()
        return self._claims

    def handle_sqs(
        self,
        event: Mapping[str, Any] | LambdaEvent,
        handle_chunk: ChunkHandler,
        *,
        remaining_ms: RemainingTime = None,
        claim: bool = True,
    ) -> BatchResponse:
        """Run `handle_chunk` once per chunk of an SQS event; return `batchItemFailures`.

        Per new chunk: claim → `handle_chunk` (effects) → ledger write → claim COMPLETED. A
        crash before COMPLETED redoes the (idempotent) effects and the (conditional) ledger
        write, so the ledger entry is never lost. A duplicate chunk costs one DynamoDB call
        and counts as `duplicate` without a ledger write. `remaining_ms` defaults to the
        event's Lambda context; `claim=False` for stages whose effects dedupe themselves.
        """
        raw: Mapping[str, Any]
        if isinstance(event, Mapping):
            raw = event
        else:
            raw = event.to_dict()
            if remaining_ms is None:
                remaining_ms = _remaining_of(event.context)

        def once(chunk: Chunk) -> ChunkOutcome:
            return self._handle_chunk(chunk, handle_chunk, remaining_ms, claim)

        return batch.process_sqs_batch(raw, once, reject_message=self.quarantine.reject_message)

    def handle_sns(
        self,
        event: Mapping[str, Any] | LambdaEvent,
        handle_chunk: ChunkHandler,
        *,
        remaining_ms: RemainingTime = None,
        claim: bool = True,
    ) -> list[ChunkOutcome]:
        """`handle_sqs`'s twin for a direct SNS → Lambda event (an asynchronous invocation).

        SNS has no partial batch response: a transient error propagates, so Lambda retries
        the invocation and then sends it to the function's on-failure destination. A message
        that is not an envelope is quarantined; each chunk is claimed and ledgered as in
        `handle_sqs`.
        """
        raw: Mapping[str, Any]
        if isinstance(event, Mapping):
            raw = event
        else:
            raw = event.to_dict()
            if remaining_ms is None:
                remaining_ms = _remaining_of(event.context)
        outcomes: list[ChunkOutcome] = []
        tracer = get_tracer()
        for record in raw.get("Records") or []:
            try:
                chunk = chunk_from_sns_record(record)
            except PermanentError as error:
                self._reject_sns_message(record, error)
                continue
            with (
                log_context(correlation_id=chunk.correlation_id, chunk_id=chunk.chunk_id),
                tracer.chunk_span(chunk.chunk_id, chunk.correlation_id, chunk.type),
            ):
                outcome = self._handle_chunk(chunk, handle_chunk, remaining_ms, claim)
                batch.emit_chunk_metrics(chunk, outcome)
            outcomes.append(outcome)
        return outcomes

    def _reject_sns_message(self, record: Mapping[str, Any], error: PermanentError) -> None:
        log.error("undecodable SNS message quarantined", extra={"reason": error.reason})
        sns = record.get("Sns") or {}
        message_id = str(sns.get("MessageId") or "no-message-id")
        self.quarantine.reject_raw(
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

    def _handle_chunk(
        self,
        chunk: Chunk,
        handle_chunk: ChunkHandler,
        remaining_ms: RemainingTime,
        claim: bool,
    ) -> ChunkOutcome:
        def effects() -> ChunkOutcome:
            outcome = handle_chunk(chunk)
            self.ledger.record_chunk(self.name, chunk, outcome)
            return outcome

        if not claim:
            return effects()
        n = len(chunk.records)
        try:
            done = run_once(
                self.idempotency,
                self.name,
                chunk.chunk_id,
                effects,
                payload_hash=chunk_payload_hash(chunk),
                remaining_ms=remaining_ms,
            )
        except IdempotencyPayloadMismatchError as error:
            # Same chunk id, other records: bad data from this stage's point of view. Keep the
            # whole chunk in quarantine and acknowledge it; the ledger entry belongs to the
            # chunk that holds the claim, so none is written here.
            log.error(
                "chunk id reused for other content; quarantined", extra={"reason": error.reason}
            )
            self.quarantine.reject_chunk(chunk, error)
            return ChunkOutcome(records_in=n, quarantined=n)
        if done.duplicate or done.value is None:
            return ChunkOutcome(records_in=n, duplicate=n)
        return done.value

    def run_records(
        self, chunk: Chunk, handler: Callable[[Record, Chunk], T | None]
    ) -> RecordResults[T]:
        """`sluice.batch.run_records` with this stage's quarantine and claim check."""
        return batch.run_records(
            chunk, handler, reject=self.quarantine.reject_record, resolve=self.claims.resolve
        )

    def on_oversize(
        self, *, record_type: str, source: str, correlation_id: str
    ) -> Callable[[Record], Record | None]:
        """`on_oversize` for `pack_records`: claim-check the record, or quarantine it if it is
        over the hard maximum (SLUICE_RECORD_MAX_BYTES)."""

        def reject(record: Record, error: OversizeRecordError) -> None:
            self.quarantine.reject_unchunked(
                record,
                record_type=record_type,
                source=source,
                correlation_id=correlation_id,
                error=error,
            )

        return self.claims.offload_or_reject(reject)


def remaining_of(context: Any) -> RemainingTime:
    """The Lambda context's remaining time as a callable (None outside Lambda)."""
    return _remaining_of(context)


def _remaining_of(context: Any) -> RemainingTime:
    getter = getattr(context, "get_remaining_time_in_millis", None)
    if callable(getter):
        return lambda: int(getter())
    return None
