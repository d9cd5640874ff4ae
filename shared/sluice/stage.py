"""The one consumption core: what every stage gets without writing code for it.

An app's handler is one call: `StageRuntime.handle_sqs`, `handle_sns`, `handle_s3` or
`handle_schedule`, with what the stage does with one unit (a chunk; or ingest's object or
checkpoint, an event consumer's pipeline event). The runtime owns the rest: decoding and the
quarantine of what cannot be decoded, the log context, span and delivery of each unit, its
claim (once per stage), records that fail, partial batch failures and retries, the ledger
(held, written once per invocation and object, before the claims complete) and metrics. The
parts are built on first use (nothing at import) and can all be passed in.

Records that fail in the handler (not bad data, not an AWS fault; see `sluice.batch`) are
isolated: the chunk's other records are delivered; the chunk is retried while its message
has attempts left (`SLUICE_RECORD_ATTEMPTS`, default 3, below the queues' maxReceiveCount
of 5), and on the last attempt the failed records alone go, as a chunk of their own
(`derive_chunk_id(chunk, "failed")`), to the dead-letter queue of the queue they came from
(SQS) or to the function's failures queue (direct SNS), with their error in the message
attributes `failed_from`, `error_type`, `error_message`, `failed_stage`, `attempt`. The
ledger entry then counts them as `failed`. Ledger entries a handler writes while its chunk
is still to be retried are dropped, so the first entry written is the settled one.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sluice import aws, batch
from sluice.batch import (
    BatchResponse,
    ChunkHandler,
    ChunkOutcome,
    RecordResults,
    SQSMessage,
    Unit,
)
from sluice.claimcheck import ClaimCheck
from sluice.config import get_settings
from sluice.delivery import Delivery, current_delivery
from sluice.envelope import (
    BASE_ATTRIBUTES,
    Chunk,
    Record,
    chunk_from_sns_record,
    derive_chunk_id,
    utc_now_iso,
)
from sluice.errors import OversizeRecordError, PermanentError, TransientError
from sluice.idempotency import (
    Claim,
    ClaimInProgressError,
    IdempotencyPayloadMismatchError,
    IdempotencyStore,
    RemainingTime,
    remaining_ms_of,
    run_once,
)
from sluice.lazy import first_use
from sluice.ledger import LedgerWriter
from sluice.observability import add_metric, get_logger, log_context
from sluice.quarantine import Quarantine

T = TypeVar("T")
U = TypeVar("U", bound=Unit)
R = TypeVar("R")
log = get_logger(__name__)
UNKNOWN_TYPE = "_unknown"
RECORD_ATTEMPTS_ENV = "SLUICE_RECORD_ATTEMPTS"
# The message attribute naming the chunk a chunk of failed records came from.
FAILED_FROM = "failed_from"
DEFAULT_RECORD_ATTEMPTS = 3
# A chunk's claim is a lease, renewed per record (`run_records`): a killed invocation blocks
# its chunk for this long, not for its whole timeout. The claim only saves redoing effects
# that are idempotent anyway, so an invocation slower than its lease costs repeated work,
# never a doubled record.
CHUNK_CLAIM_LEASE_MS = 20_000
# A wait for a claim held elsewhere must end this long before the invocation's own time does.
CLAIM_WAIT_MARGIN_MS = 3_000
# What `_run` returns for a unit other than a chunk that was done before.
_DUPLICATE: Any = type("_Duplicate", (), {"__repr__": lambda self: "<done before>"})()
# Polling a claim held elsewhere: first after 1 s, then doubling up to 15 s.
CLAIM_POLL_FIRST_S = 1.0
CLAIM_POLL_MAX_S = 15.0
# SQS hides a message for at most 12 hours.
MAX_VISIBILITY_S = 12 * 3600


class RecordsFailedError(TransientError):
    """Records of a chunk failed in the handler and the message has attempts left."""


def failed_chunk_id(chunk_id: str) -> str:
    """The id of the chunk holding a chunk's failed records (deterministic, for redrives)."""
    return derive_chunk_id(chunk_id, "failed")


def record_attempts() -> int:
    """Attempts a message gets before its failed records are dead-lettered (at least 1)."""
    raw = os.environ.get(RECORD_ATTEMPTS_ENV, "")
    try:
        return max(1, int(raw)) if raw.strip() else DEFAULT_RECORD_ATTEMPTS
    except ValueError:
        return DEFAULT_RECORD_ATTEMPTS


class _DeferredLedger:
    """The ledger as a handler sees it while its chunk is not settled: writes are held.

    `flush()` writes them (the chunk is settled); dropping the object forgets them (the
    chunk is retried, and the retry writes its own). Other attributes are the writer's.
    """

    def __init__(self, writer: LedgerWriter, retry_of: str | None) -> None:
        self._writer = writer
        self._retry_of = retry_of
        self._held: list[tuple[str, Chunk, int]] = []

    def record_delivery(
        self, sink: str, chunk: Chunk, delivered: int, *, retry_of: str | None = None
    ) -> None:
        self._held.append((sink, chunk, delivered))

    def flush(self) -> None:
        for sink, chunk, delivered in self._held:
            self._writer.record_delivery(sink, chunk, delivered, retry_of=self._retry_of)
        self._held.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


@dataclass
class _Invocation:
    """One invocation until its units settle: the deliveries that carried each unit, the
    claims to complete once its entries are written, the chunks' entries to write, and the
    chunks handled (for `finish`)."""

    remaining_ms: RemainingTime
    claim: bool
    deliveries: dict[str, list[Delivery]] = field(default_factory=dict)
    claims: dict[str, Claim] = field(default_factory=dict)
    entries: dict[str, Callable[[], None]] = field(default_factory=dict)
    done: list[tuple[Chunk, ChunkOutcome]] = field(default_factory=list)


# What the warehouse does at the end of a batch with the chunks its `work` prepared: returns
# the chunks (by id) it failed, with their errors; their entries are not written.
Finish = Callable[[Sequence[tuple[Chunk, ChunkOutcome]]], Mapping[str, BaseException]]


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class LambdaEvent(Protocol):
    """A Chalice event object (`SQSEvent`): the raw dict and the Lambda context."""

    @property
    def context(self) -> Any: ...

    def to_dict(self) -> dict[str, Any]: ...


# The scheme of `chunk_payload_hash`, its prefix: hashes of other schemes (older claims,
# bare hex) are not compared with it (see `IdempotencyStore._refused`). "j2" hashed the
# records re-encoded as sorted JSON (~3 us a record); a claim taken with it still makes a
# redelivered chunk a duplicate, as the claim's key is the chunk id alone.
CHUNK_HASH_SCHEME = "r1"


def chunk_payload_hash(chunk: Chunk) -> str:
    """What a chunk's claim compares: its records as they travel (ids, times, payloads): the
    SHA-256 of their JSON array as the chunk arrived (`Chunk.records_json`, nothing encoded
    again; ~0.8 us a KB). The same message, and the same chunk sent again by the same
    deterministic producer, give the same bytes."""
    digest = hashlib.sha256(chunk.records_json())
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
        lazy_payloads: bool = False,
        claim: bool = True,
        lease_ms: int = CHUNK_CLAIM_LEASE_MS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`lazy_payloads`: chunks are decoded with each payload left as its JSON until read
        (`Chunk.decode`), for a stage that passes most of a payload on as it came.
        `claim=False`: units are not claimed (a stage whose effects dedupe themselves).
        `lease_ms`: how long a claim lasts unless renewed (`renew_lease`)."""
        if not name:
            raise ValueError("a stage runtime needs the stage name")
        self.name = name
        self.claim = claim
        self.lease_ms = lease_ms
        self.sleep = sleep
        # How long before the invocation's end a wait for a claim held elsewhere gives up
        # (ingest keeps the time to read the object it would take over).
        self.claim_wait_margin_ms = CLAIM_WAIT_MARGIN_MS
        self._invocation: _Invocation | None = None
        self._quarantine = quarantine
        self._writer = ledger
        self._idempotency = idempotency
        self._claims = claims
        self._deferred: _DeferredLedger | None = None
        self._sqs: Any = None
        self.lazy_payloads = lazy_payloads

    sqs: first_use[Any] = first_use(lambda self: aws.sqs())
    quarantine: first_use[Quarantine] = first_use(lambda self: Quarantine(self.name))

    @property
    def ledger(self) -> LedgerWriter:
        if self._deferred is not None:
            return self._deferred  # type: ignore[return-value]  # a LedgerWriter to callers
        return self.writer

    # The ledger writer itself (`ledger` is what a handler sees while its chunk runs).
    writer: first_use[LedgerWriter] = first_use(lambda self: LedgerWriter())

    idempotency: first_use[IdempotencyStore] = first_use(lambda self: IdempotencyStore())
    claims: first_use[ClaimCheck] = first_use(lambda self: ClaimCheck())

    # ------------------------------------------------------------------ entry points
    #
    # One per kind of Lambda invocation; an app's handler is one call to one of them, with
    # what the stage does with one unit (`work`). Everything else is here: decoding and the
    # quarantine of what cannot be decoded, the log context, the span and the delivery of
    # each unit, its claim, partial failures, retries and dead letters, the ledger (held
    # and written once per invocation and object), metrics.

    def handle_sqs(
        self,
        event: Mapping[str, Any] | LambdaEvent,
        work: Callable[[Any], Any],
        *,
        decode: Callable[[str], Unit] | None = None,
        finish: Finish | None = None,
        claim: bool | None = None,
        remaining_ms: RemainingTime = None,
    ) -> BatchResponse:
        """Run `work` once per unit of an SQS event; return `batchItemFailures`.

        Units are chunks (`work(chunk) -> ChunkOutcome`) unless `decode` turns message
        bodies into something else (ingest's checkpoints). Per new chunk: claim → `work`
        (effects) → ledger entries held; at the batch's end, `finish` (if given) does what
        the batch's chunks share (the warehouse's objects) and names the chunks it failed;
        then the held entries are written, one transaction per object, and only then are
        the claims completed. A crash before that redoes the (idempotent) effects and the
        (conditional) ledger write, so no entry is lost. A duplicate chunk costs one
        DynamoDB call and counts as `duplicate` without a ledger entry. A unit of another
        kind is its own ledger unit: its entries are written before its claim completes.
        `remaining_ms` defaults to the event's Lambda context; `claim` to the stage's.

        Raises nothing for a unit's failure: its messages are reported, and hidden until a
        retry can succeed when the error says when (`retry_after_s`); an error escaping
        `finish` fails all the batch's chunks so.
        """
        raw, remaining = _unpack(event, remaining_ms)
        inv = _Invocation(remaining, self.claim if claim is None else claim)

        def once(unit: Unit) -> Any:
            delivery = current_delivery()
            assert delivery is not None  # process_sqs_batch sets it
            copies = inv.deliveries.get(unit.unit_id)
            if copies is not None:
                # The same unit twice in one batch: handled once, settled with the first.
                copies.append(delivery)
                n = len(unit.records) if isinstance(unit, Chunk) else 0
                return ChunkOutcome(records_in=n, duplicate=n)
            result = self._run(unit, work, inv)
            inv.deliveries[unit.unit_id] = [delivery]
            return result

        with self._during(inv), self.writer.holding():
            response = batch.process_sqs_batch(
                raw,
                once,
                reject_message=self.quarantine.reject_message,
                defer=self._defer_message,
                lazy_payloads=self.lazy_payloads,
                decode=decode,
            )
            failed: dict[str, BaseException] = {}
            if finish is not None and inv.done:
                try:
                    failed.update(finish(inv.done))
                except Exception as broke:  # its chunks are retried; their claims let go
                    log.exception("the batch's end failed; its chunks will be retried")
                    failed.update((chunk.chunk_id, broke) for chunk, _ in inv.done)
            failed = self._settle(inv, failed)
        failures = response["batchItemFailures"]
        for unit_id, error in failed.items():
            for delivery in inv.deliveries.get(unit_id, []):
                failures.append({"itemIdentifier": delivery.message_id})
                retry_after = getattr(error, "retry_after_s", None)
                if retry_after:
                    self._defer(delivery.source_arn, delivery.receipt_handle, float(retry_after))
            add_metric("ChunksFailed")
        return response

    def handle_sns(
        self,
        event: Mapping[str, Any] | LambdaEvent,
        work: ChunkHandler,
        *,
        claim: bool | None = None,
        remaining_ms: RemainingTime = None,
    ) -> list[ChunkOutcome]:
        """`handle_sqs`'s twin for a direct SNS → Lambda event (an asynchronous invocation).

        SNS has no partial batch response: a transient error propagates, so Lambda retries
        the invocation and then sends it to the function's on-failure destination. A message
        that is not an envelope is quarantined; each chunk is claimed and ledgered as in
        `handle_sqs`, and a claim held elsewhere is waited for while time allows.

        Raises the first chunk's error (`TransientError`, an AWS error) after the chunks
        before it are settled.
        """
        raw, remaining = _unpack(event, remaining_ms)
        inv = _Invocation(remaining, self.claim if claim is None else claim)
        outcomes: list[ChunkOutcome] = []
        with self._during(inv), self.writer.holding():
            for record in raw.get("Records") or []:
                try:
                    chunk = chunk_from_sns_record(record, lazy_payloads=self.lazy_payloads)
                except PermanentError as error:
                    self._reject_sns_message(record, error)
                    continue
                with batch.handling(chunk, _sns_delivery(record)):
                    try:
                        outcome = self._waiting_for_claims(
                            functools.partial(self._run, chunk, work, inv), remaining
                        )
                    except BaseException:
                        self._settle(inv, {})  # what went before is done: keep it
                        raise
                    batch.emit_chunk_metrics(chunk, outcome)
                outcomes.append(outcome)
            failed = self._settle(inv, {})
        if failed:
            # No partial response: Lambda retries the invocation; done chunks are duplicates.
            raise next(iter(failed.values()))
        return outcomes

    def handle_s3(
        self,
        event: Mapping[str, Any] | LambdaEvent,
        work: Callable[[U], object],
        *,
        decode: Callable[[Mapping[str, Any]], U | None],
        remaining_ms: RemainingTime = None,
    ) -> dict[str, int]:
        """Run `work` once per object of an S3 event (an asynchronous invocation); return
        how many objects it named and how many of them were done before.

        `decode` turns one event record into the unit to claim (None: not one to handle).
        Each object is claimed by its `unit_id`: a second notification finds the claim,
        waits for its holder while time allows, and counts as a duplicate. An object's
        ledger entries are written before its claim completes. The other objects go on when
        one fails.

        Raises the first object's error once all are done, so Lambda retries the event
        (the done ones are then duplicates).
        """
        raw, remaining = _unpack(event, remaining_ms)
        inv = _Invocation(remaining, self.claim)
        summary = {"objects": 0, "duplicates": 0}
        errors: list[Exception] = []
        with self._during(inv):
            for record in raw.get("Records") or []:
                try:
                    unit = decode(record)
                    if unit is None:
                        continue
                    summary["objects"] += 1
                    add_metric("ObjectsIn")
                    with log_context(correlation_id=unit.correlation_id):
                        done = self._waiting_for_claims(
                            functools.partial(self._run, unit, work, inv), remaining
                        )
                        if done is _DUPLICATE:
                            summary["duplicates"] += 1
                            add_metric("ObjectsDuplicate")
                            log.info("object done before", extra={"unit": unit.unit_id})
                except Exception as error:
                    log.exception("object failed; the event will be retried")
                    errors.append(error)
        if errors:
            raise errors[0]
        return summary

    def handle_schedule(
        self,
        event: Mapping[str, Any] | LambdaEvent,
        work: Callable[[Mapping[str, Any]], R],
        *,
        remaining_ms: RemainingTime = None,
    ) -> R:
        """Run `work` on a scheduled event (EventBridge), its ledger entries written at its
        end (`LedgerWriter.holding`) and `remaining_ms()` set for it.

        Raises what `work` raises, and `LedgerWriteError` if its entries were not written
        (Lambda retries the invocation; what `work` does must be safe to redo).
        """
        raw, remaining = _unpack(event, remaining_ms)
        with self._during(_Invocation(remaining, False)), self.writer.holding():
            result = work(raw)
            self.writer.flush_or_raise()
        log.info("scheduled run done", extra={"rule": _rule_of(raw)})
        return result

    @property
    def remaining(self) -> RemainingTime:
        """The invocation's remaining time as a callable (None outside Lambda)."""
        return self._invocation.remaining_ms if self._invocation is not None else None

    @contextmanager
    def _during(self, inv: _Invocation) -> Iterator[None]:
        outer, self._invocation = self._invocation, inv
        try:
            yield
        finally:
            self._invocation = outer

    # ------------------------------------------------------------------ one unit

    def _run(self, unit: Unit, work: Callable[[Any], Any], inv: _Invocation) -> Any:
        """Claim the unit (unless the stage does not) and run `work` on it.

        A chunk's ledger entries (its handler's and the stage's own) and its claim's
        completion wait for the invocation's end (`_settle`); any other unit's entries are
        written before its claim completes, here.
        """
        chunk = unit if isinstance(unit, Chunk) else None
        effects: Callable[[], Any]
        if chunk is not None:
            effects = functools.partial(self._chunk_effects, chunk, work, inv)
        else:
            effects = functools.partial(self._written, work, unit)
        if not inv.claim:
            return effects()
        try:
            done = run_once(
                self.idempotency,
                self.name,
                unit.unit_id,
                effects,
                payload_hash=chunk_payload_hash(chunk) if chunk is not None else None,
                remaining_ms=inv.remaining_ms,
                lease_ms=self.lease_ms,
                # A chunk's claim completes once its ledger entries are written (`_settle`):
                # a crash between the two must not leave a completed claim and no entry.
                complete=chunk is None,
            )
        except IdempotencyPayloadMismatchError as error:
            if chunk is None:
                raise
            # Same chunk id, other records: bad data from this stage's point of view. Keep the
            # whole chunk in quarantine and acknowledge it; the ledger entry belongs to the
            # chunk that holds the claim, so none is written here.
            log.error(
                "chunk id reused for other content; quarantined", extra={"reason": error.reason}
            )
            self.quarantine.reject_chunk(chunk, error)
            return ChunkOutcome(records_in=len(chunk.records), quarantined=len(chunk.records))
        if done.claim is not None:
            inv.claims[unit.unit_id] = done.claim
        if done.duplicate:
            if chunk is None:
                return _DUPLICATE
            return ChunkOutcome(records_in=len(chunk.records), duplicate=len(chunk.records))
        return done.value

    def _written(self, work: Callable[[Any], Any], unit: Unit) -> Any:
        """`work(unit)` with the entries it writes held and written at its end (one
        transaction per 99 entries); a failed write fails the unit, whose retry writes
        them again (idempotent)."""
        with self.writer.holding():
            result = work(unit)
            self.writer.flush_or_raise()
        return result

    def _chunk_effects(self, chunk: Chunk, work: ChunkHandler, inv: _Invocation) -> ChunkOutcome:
        # A chunk of records that failed before (redriven from a DLQ) says so: its ledger
        # entries move them from `failed` to their new outcome.
        delivery = current_delivery()
        retry_of = delivery.attributes.get(FAILED_FROM) if delivery is not None else None
        deferred = _DeferredLedger(self.writer, retry_of)
        self._deferred = deferred
        try:
            outcome = work(chunk)
        finally:
            self._deferred = None
        if outcome.failures:
            self._settle_failures(chunk, outcome)

        def entries() -> None:
            deferred.flush()
            self.writer.record_chunk(self.name, chunk, outcome, retry_of=retry_of)

        # Written when the invocation settles, with the others of its object (`_settle`).
        inv.entries[chunk.chunk_id] = entries
        inv.done.append((chunk, outcome))
        return outcome

    def _settle(
        self, inv: _Invocation, failed: Mapping[str, BaseException]
    ) -> dict[str, BaseException]:
        """The invocation's end: hand the entries of the chunks not `failed` to the writer
        and write them (one transaction per object), then complete the claims of the chunks
        written and release the others (retried). Returns the units that failed."""
        result: dict[str, BaseException] = dict(failed)
        entries, inv.entries = inv.entries, {}
        for chunk_id, write in entries.items():
            if chunk_id not in result:
                write()
        result.update(self.writer.flush())
        claims, inv.claims = inv.claims, {}
        for unit_id, claim in claims.items():
            if unit_id in result:
                self.idempotency.release(claim)
                continue
            try:
                self.idempotency.complete(claim)
            except Exception as error:
                # As `run_once` does: let the claim go and retry the chunk, which redoes its
                # (idempotent) effects, finds its entries written and completes the claim.
                log.warning("claim not completed; the chunk will be retried", exc_info=True)
                self.idempotency.release(claim)
                result[unit_id] = error
        return result

    def _defer_message(self, message: SQSMessage, seconds: float) -> None:
        raw = message.raw
        self._defer(
            str(raw.get("eventSourceARN") or ""), str(raw.get("receiptHandle") or ""), seconds
        )

    def _defer(self, source_arn: str, receipt: str, seconds: float) -> None:
        """Hide a failed message until a retry can succeed (a claim held elsewhere lapses)."""
        queue_url = _queue_url(source_arn)
        if not queue_url or not receipt:
            return
        timeout = min(MAX_VISIBILITY_S, int(seconds) + 1)
        try:
            self.sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=receipt, VisibilityTimeout=timeout
            )
        except Exception:
            log.warning("could not defer the message; it keeps its visibility", exc_info=True)
            return
        log.info("message deferred until the claim lapses", extra={"visibility_s": timeout})

    def _waiting_for_claims(self, run: Callable[[], T], remaining_ms: RemainingTime) -> T:
        """Run; while a claim held elsewhere may be let go within this invocation's time,
        poll it (1 s, doubling up to 15 s, never past the claim's end) and run again.

        An asynchronous invocation has no message to hide: failing would spend one of
        Lambda's two retries (and then the event) on a claim whose holder is about to
        complete it (a second S3 notification of an object being read) or died (the claim
        lapses). Without a Lambda context there is no time to bound the wait: it raises.
        """
        delay = CLAIM_POLL_FIRST_S
        while True:
            try:
                return run()
            except ClaimInProgressError as held:
                if remaining_ms is None:
                    raise
                wait_s = delay
                if held.retry_after_s is not None:
                    wait_s = min(wait_s, held.retry_after_s + 0.2)
                if wait_s * 1000 + self.claim_wait_margin_ms >= remaining_ms_of(remaining_ms):
                    raise
                add_metric("ClaimWaits")
                log.info("waiting for a claim held elsewhere", extra={"wait_s": wait_s})
                self.sleep(wait_s)
                delay = min(delay * 2, CLAIM_POLL_MAX_S)

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

    def _settle_failures(self, chunk: Chunk, outcome: ChunkOutcome) -> None:
        """Retry the chunk while its message has attempts left; else dead-letter the failed
        records alone, with their error (the rest of the chunk is delivered)."""
        delivery = current_delivery()
        first = outcome.failures[0]
        attempt = delivery.attempt if delivery is not None else 1
        if delivery is not None and delivery.kind == "sqs" and attempt < record_attempts():
            raise RecordsFailedError(
                f"{len(outcome.failures)} record(s) failed in the handler (first: "
                f"{first.error_type}: {first.message}); attempt {attempt} of {record_attempts()}"
            )
        target = self._dead_letter_url(chunk, delivery)
        failed = chunk.derive(
            [f.record for f in outcome.failures], chunk_id=failed_chunk_id(chunk.chunk_id)
        )
        # The base attributes only (type, correlation id, chunk id): routing attributes stay in
        # the envelope, and with the five below they could pass SQS's ten per message.
        base = failed.message_attributes()
        attributes = {
            **{name: base[name] for name in BASE_ATTRIBUTES},
            **_strings(
                **{FAILED_FROM: chunk.chunk_id},
                error_type=first.error_type,
                error_message=first.message or "(no message)",
                failed_stage=self.name,
                attempt=str(attempt),
            ),
        }
        body = failed.encode()
        try:
            self.sqs.send_message(QueueUrl=target, MessageBody=body, MessageAttributes=attributes)
        except aws.client_errors() as exc:
            raise TransientError(
                f"could not dead-letter failed records to {target}: {exc}"
            ) from exc
        log.error(
            "records failed in the handler; dead-lettered with their error",
            extra={
                "records": len(outcome.failures),
                "failed_chunk_id": failed.chunk_id,
                "error_type": first.error_type,
                "reason": first.message,
                "queue": target,
            },
        )
        add_metric("RecordsDeadLettered", len(outcome.failures))

    def _dead_letter_url(self, chunk: Chunk, delivery: Delivery | None) -> str:
        """The DLQ of the queue the chunk came from, or this function's failures queue."""
        names = get_settings().names
        if delivery is not None and delivery.kind == "sqs" and delivery.source_arn:
            region, account, queue = _arn_parts(delivery.source_arn)
            return _url_of(region, account, names.dlq_of(queue))
        if delivery is not None and delivery.source_arn:
            region, account, _ = _arn_parts(delivery.source_arn)
            return _url_of(region, account, names.async_failure_queue(self.name))
        raise TransientError(
            f"{len(chunk.records)} record(s) failed and there is no queue to dead-letter them to"
        )

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


def _strings(**values: str) -> dict[str, Any]:
    return {k: {"DataType": "String", "StringValue": v} for k, v in values.items()}


def _arn_parts(arn: str) -> tuple[str, str, str]:
    """(region, account, resource) of `arn:partition:service:region:account:resource`."""
    parts = arn.split(":", 5)
    if len(parts) != 6:
        raise TransientError(f"not an ARN: {arn!r}")
    return parts[3], parts[4], parts[5]


def _url_of(region: str, account: str, queue: str) -> str:
    """A queue's URL without a GetQueueUrl call (the local emulator's, under an endpoint).

    SQS's JSON protocol sends the request to the client's endpoint and names the queue by
    this URL's last two parts (account, name), so the host only has to be a valid one.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        return f"{endpoint.rstrip('/')}/{account}/{queue}"
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://sqs.{region}.{suffix}/{account}/{queue}"


def _queue_url(arn: str) -> str:
    if not arn:
        return ""
    region, account, queue = _arn_parts(arn)
    return _url_of(region, account, queue)


def _sns_delivery(record: Mapping[str, Any]) -> Delivery:
    sns = record.get("Sns") or {}
    attributes = {
        str(name): str(value.get("Value"))
        for name, value in (sns.get("MessageAttributes") or {}).items()
        if isinstance(value, Mapping) and value.get("Value") is not None
    }
    return Delivery(
        kind="sns",
        attempt=1,
        source_arn=str(sns.get("TopicArn") or ""),
        message_id=str(sns.get("MessageId") or ""),
        attributes=attributes,
    )


def _remaining_of(context: Any) -> RemainingTime:
    """The Lambda context's remaining time as a callable (None outside Lambda)."""
    getter = getattr(context, "get_remaining_time_in_millis", None)
    if callable(getter):
        return lambda: int(getter())
    return None


def _unpack(
    event: Mapping[str, Any] | LambdaEvent, remaining_ms: RemainingTime
) -> tuple[Mapping[str, Any], RemainingTime]:
    """The raw event, and the remaining time (given, or the Lambda context's)."""
    if isinstance(event, Mapping):
        return event, remaining_ms
    if remaining_ms is None:
        remaining_ms = _remaining_of(event.context)
    return event.to_dict(), remaining_ms


def _rule_of(event: Mapping[str, Any]) -> str:
    resources = event.get("resources") or []
    return str(resources[0]).rsplit("/", 1)[-1] if resources else ""


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "FAILED_FROM",
    "LambdaEvent",
    "StageRuntime",
]
