"""The warehouse consumer: the chunks of a batch become few gzip JSON Lines objects, once.

Per batch: each message's chunk is decoded and its records turned into rows (bad records
quarantined, failed ones retried or dead-lettered as in every stage); the chunks with rows
are grouped by partition (type, ingestion hour) into objects of at most `MAX_OBJECT_CHUNKS`
chunks and `MAX_OBJECT_BYTES` of rows; each chunk is *placed* into its object's fresh key
(`placements.py`); the object is written with the rows of the chunks placed there and a
manifest of them; then each chunk's ledger entries are written. A chunk found placed before
is not written again: if its object's manifest lists it, it is delivered (its ledger entries
are written, first write wins); if not and its placer's time is over, it is placed anew;
otherwise its message waits until then. Why this is exactly once: docs/decisions.md
(2026-12-04, "Warehouse objects hold several chunks").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from chalicelib.curated import (
    MANIFEST_MAX_CHARS,
    CuratedBucket,
    ObjectWriter,
    compress_lines,
    ingestion_hour,
    manifest_chars,
    manifest_metadata,
    object_key,
    partition,
)
from chalicelib.placements import Placement, Placements
from sluice import batch, jsonx
from sluice.batch import (
    BatchResponse,
    ChunkOutcome,
    ItemFailure,
    SQSMessage,
)
from sluice.delivery import Delivery, current_delivery
from sluice.envelope import Chunk, Record
from sluice.errors import PermanentError, TransientError
from sluice.idempotency import RemainingTime, new_owner, remaining_ms_of
from sluice.observability import add_metric, get_logger, log_context
from sluice.stage import FAILED_FROM, LambdaEvent, StageRuntime, remaining_of

SINK = "warehouse"
STAGE = f"consumer-{SINK}"
# Columns the warehouse adds to each payload; the payload's own fields of these names lose.
META_COLUMNS = ("_record_id", "_ingested_at", "_correlation_id", "_type")
# An object holds at most this many chunks (its manifest stays within S3's 2 KB metadata)...
MAX_OBJECT_CHUNKS = 40
# ...and at most this many bytes of rows before compression (a batch is at most 6 MB of
# compressed messages, so this only bounds a batch of very compressible records).
MAX_OBJECT_BYTES = 64 * 1024 * 1024
# A placement replaced by another invocation a moment ago: retry the message soon.
RACE_RETRY_S = 2.0

log = get_logger(__name__)


class ChunkPlacedElsewhereError(TransientError):
    """Another invocation placed the chunk and may still be writing it: retry after its time."""


@cache
def runtime() -> StageRuntime:
    """The process's stage runtime, built on first use."""
    return StageRuntime(name=STAGE)


@cache
def curated() -> CuratedBucket:
    """The curated bucket, made on first use."""
    return CuratedBucket()


@cache
def placements() -> Placements:
    """The placement store, made on first use."""
    return Placements(STAGE)


def reset() -> None:
    """Forget the runtime, bucket and placements (tests with a fresh AWS mock)."""
    runtime.cache_clear()
    curated.cache_clear()
    placements.cache_clear()


def to_line(record: Record, chunk: Chunk) -> dict[str, Any]:
    """One JSON Lines row: the payload's fields plus the record's metadata columns."""
    if not isinstance(record.payload, dict):
        raise PermanentError(
            f"payload of a {chunk.type} record is a {type(record.payload).__name__}, "
            "not an object: the warehouse stores one row per object"
        )
    ingestion_hour(record.ingested_at)  # a record that cannot be partitioned is bad data
    line = dict(record.payload)
    line.update(
        _record_id=record.id,
        _ingested_at=record.ingested_at,
        _correlation_id=chunk.correlation_id,
        _type=chunk.type,
    )
    return line


@dataclass
class Staged:
    """One message's chunk, its rows made, waiting for its object."""

    message: SQSMessage
    chunk: Chunk
    delivery: Delivery
    rows: list[bytes]
    outcome: ChunkOutcome
    partition: str = ""
    copies: list[SQSMessage] = field(default_factory=list)  # same chunk, other messages

    @property
    def size(self) -> int:
        return sum(len(row) for row in self.rows)


def handle_event(
    event: Mapping[str, Any] | LambdaEvent,
    *,
    remaining_ms: RemainingTime = None,
    bucket: ObjectWriter | None = None,
    store: Placements | None = None,
) -> BatchResponse:
    """The SQS handler: the batch's chunks into objects, with partial batch failures."""
    raw = event if isinstance(event, Mapping) else event.to_dict()
    if remaining_ms is None and not isinstance(event, Mapping):
        remaining_ms = remaining_of(event.context)
    writer = Writer(runtime(), bucket or curated(), store or placements(), remaining_ms)
    return writer.run(raw)


class Writer:
    """One invocation's work over its batch (see the module's docstring)."""

    def __init__(
        self,
        rt: StageRuntime,
        bucket: ObjectWriter,
        store: Placements,
        remaining_ms: RemainingTime,
    ) -> None:
        self.rt = rt
        self.bucket = bucket
        self.store = store
        self.remaining_ms = remaining_ms
        self.owner = new_owner()
        self.failures: list[ItemFailure] = []
        self.expiries: dict[str, int] = {}  # chunk id → end of our placement (epoch ms)
        self.listed: dict[str, set[str]] = {}  # object key → its chunks (objects never change)
        self.settled: list[tuple[Staged, bool]] = []  # entries held, and whether delivered now

    def run(self, event: Mapping[str, Any]) -> BatchResponse:
        records = {str(r.get("messageId")): r for r in event.get("Records") or []}
        staged: dict[str, Staged] = {}

        def stage(chunk: Chunk) -> ChunkOutcome:
            """Make the chunk's rows (the first pass over the batch, per message)."""
            results = self.rt.run_records(chunk, to_line)
            outcome = results.outcome
            if outcome.failures:
                # Retried while attempts are left (raises), else the failed records are
                # dead-lettered and the rest delivered.
                self.rt._settle_failures(chunk, outcome)
            delivery = current_delivery()
            assert delivery is not None  # process_sqs_batch sets it
            message = SQSMessage.from_event_record(records[delivery.message_id])
            first = staged.get(chunk.chunk_id)
            if first is not None:  # the same chunk twice in one batch: it goes once
                first.copies.append(message)
                return outcome
            rows = [jsonx.dumps(line) + b"\n" for _, line in results.outputs]
            outcome.out = len(rows)
            item = Staged(message, chunk, delivery, rows, outcome)
            if rows:
                item.partition = partition(chunk.type, results.outputs[0][0].ingested_at)
            staged[chunk.chunk_id] = item
            return outcome

        # Decoding, quarantine of what is no envelope, spans and retries of failed chunks
        # are every stage's; the chunks staged there are written below. Their ledger
        # entries are held and written at the end, one transaction per object (`settled`).
        with self.rt.writer.holding():
            first_pass = batch.process_sqs_batch(
                event, stage, reject_message=self.rt.quarantine.reject_message, defer=self.rt._defer
            )
            self.failures.extend(first_pass["batchItemFailures"])
            for item in staged.values():
                if not item.rows:
                    self.settle(item, delivered=False)
            for group in objects([s for s in staged.values() if s.rows]):
                self.write_object(group)
            failed = self.rt.writer.flush()
        for item, delivered in self.settled:
            error = failed.get(item.chunk.chunk_id)
            if error is not None:
                log.error(
                    "ledger entries not written; the chunk will be retried",
                    extra={"chunk_id": item.chunk.chunk_id, "error": str(error)},
                )
                self.fail(item, error)
            elif delivered:
                add_metric("RecordsDelivered", len(item.rows))
        return {"batchItemFailures": self.failures}

    def fail(self, item: Staged, error: BaseException) -> None:
        """Report the chunk's messages as failed; hide them until a retry can succeed."""
        for message in [item.message, *item.copies]:
            self.failures.append({"itemIdentifier": message.message_id})
            retry_after = getattr(error, "retry_after_s", None)
            if retry_after:
                self.rt._defer(message, float(retry_after))
        add_metric("ChunksFailed")

    def settle(self, item: Staged, *, delivered: bool) -> None:
        """Hold the chunk's ledger entries (first write wins), written at the batch's end."""
        chunk = item.chunk
        retry_of = item.delivery.attributes.get(FAILED_FROM)
        self.rt.ledger.record_delivery(SINK, chunk, delivered=len(item.rows), retry_of=retry_of)
        self.rt.ledger.record_chunk(STAGE, chunk, item.outcome, retry_of=retry_of)
        self.settled.append((item, delivered))

    # ------------------------------------------------------------------ per object

    def write_object(self, group: Sequence[Staged]) -> None:
        """Place the group's chunks into one fresh key, write the ones placed there, settle."""
        key = object_key(group[0].partition, group[0].chunk.chunk_id)
        held: list[Staged] = []
        for item in group:
            chunk = item.chunk
            with log_context(correlation_id=chunk.correlation_id, chunk_id=chunk.chunk_id):
                try:
                    placed = self.place(item, key)
                except Exception as error:
                    log.warning("chunk not placed; it will be retried", exc_info=True)
                    self.fail(item, error)
                    continue
            if placed is None:
                held.append(item)
            else:
                log.info("chunk was written before", extra={"key": placed})
                self.settle(item, delivered=False)
        if not held:
            return
        body = compress_lines(b"".join(row for item in held for row in item.rows))
        metadata = manifest_metadata([(i.chunk.chunk_id, len(i.rows)) for i in held])
        try:
            self.bucket.put(key, body, metadata)
        except Exception as error:
            if not self.landed(key, held):
                # The placements stay: the object may still land until this invocation is
                # over, so the chunks wait for that (their placements' expiry), never
                # placed elsewhere before.
                log.warning("object not written; its chunks will be retried", exc_info=True)
                for item in held:
                    expiry = self.expiries.get(item.chunk.chunk_id, 0)
                    self.fail(item, _waiting(error, self.store, expiry))
                return
        log.info(
            "object written",
            extra={
                "key": key,
                "chunk_ids": [i.chunk.chunk_id for i in held],
                "records": sum(len(i.rows) for i in held),
            },
        )
        add_metric("ObjectsWritten")
        for item in held:
            self.settle(item, delivered=True)

    def landed(self, key: str, held: Sequence[Staged]) -> bool:
        """Whether a write that answered with an error landed after all (its answer lost)."""
        try:
            manifest = self.bucket.manifest(key)
        except Exception:
            log.warning("could not check whether the object landed", exc_info=True)
            return False
        listed = {entry.chunk_id for entry in manifest or []}
        return all(item.chunk.chunk_id in listed for item in held)

    def chunks_in(self, key: str) -> set[str]:
        """The chunks object `key` holds (none if there is no such object yet)."""
        if key in self.listed:
            return self.listed[key]
        manifest = self.bucket.manifest(key) if key else None
        if manifest is None:
            return set()  # not remembered: the object may still be written
        self.listed[key] = {entry.chunk_id for entry in manifest}
        return self.listed[key]

    def place(self, item: Staged, key: str) -> str | None:
        """Place the chunk into `key`: None if we hold it there, else the key it is in.

        Raises `ChunkPlacedElsewhereError` if another invocation placed it and may still be
        writing it, or `PlacementStoreError` / `CuratedWriteError` (AWS faults).
        """
        chunk_id = item.chunk.chunk_id
        remaining = remaining_ms_of(self.remaining_ms) if self.remaining_ms is not None else None
        found = self.store.place(chunk_id, key, self.owner, remaining)
        if not found.held:
            if chunk_id in self.chunks_in(found.key):
                return found.key
            if found.in_progress_expiry > self.store.now_ms():
                raise _waiting(None, self.store, found.in_progress_expiry, found)
            log.warning(
                "taking over a chunk whose placer's time is over and whose object lacks it",
                extra={"key": found.key},
            )
            found = self.store.take_over(found, key, self.owner, remaining)
            if not found.held:
                raise ChunkPlacedElsewhereError(
                    f"chunk {chunk_id} was placed by another invocation a moment ago",
                    retry_after_s=RACE_RETRY_S,
                )
        self.expiries[chunk_id] = found.in_progress_expiry
        return None


def _waiting(
    error: BaseException | None,
    store: Placements,
    expiry_ms: int,
    found: Placement | None = None,
) -> ChunkPlacedElsewhereError:
    wait_s = max(1.0, (expiry_ms - store.now_ms()) / 1000)
    where = f" (placed into {found.key})" if found is not None else ""
    waiting = ChunkPlacedElsewhereError(
        f"chunk may still be written until its placement ends{where}", retry_after_s=wait_s
    )
    if error is not None:
        waiting.__cause__ = error
    return waiting


def objects(items: Sequence[Staged]) -> list[list[Staged]]:
    """The chunks grouped into objects: by partition, in batch order, within the limits."""
    by_partition: dict[str, list[list[Staged]]] = {}
    for item in items:
        groups = by_partition.setdefault(item.partition, [[]])
        group = groups[-1]
        chars = sum(manifest_chars(i.chunk.chunk_id, len(i.rows)) for i in group)
        if group and (
            len(group) >= MAX_OBJECT_CHUNKS
            or chars + manifest_chars(item.chunk.chunk_id, len(item.rows)) > MANIFEST_MAX_CHARS
            or sum(i.size for i in group) + item.size > MAX_OBJECT_BYTES
        ):
            groups.append(group := [])
        group.append(item)
    return [group for groups in by_partition.values() for group in groups]
