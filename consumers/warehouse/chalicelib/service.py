"""The warehouse consumer: the chunks of a batch become few gzip JSON Lines objects, once.

Per batch (`StageRuntime.handle_sqs` with `handle_chunk` and, at the batch's end,
`write_objects`): each chunk's records are turned into rows (bad records quarantined, failed
ones retried or dead-lettered as in every stage); the chunks with rows
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

from collections.abc import Sequence
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
from sluice import jsonx
from sluice.batch import ChunkOutcome
from sluice.delivery import current_delivery
from sluice.envelope import Chunk, Record
from sluice.errors import PermanentError, TransientError
from sluice.idempotency import RemainingTime, new_owner, remaining_ms_of
from sluice.observability import add_metric, get_logger, log_context
from sluice.stage import FAILED_FROM, StageRuntime

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
    """The process's stage runtime, built on first use. Chunks are not claimed: placements
    and manifests make each chunk's write happen once (see the module's docstring)."""
    return StageRuntime(name=STAGE, claim=False)


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
class Rows(ChunkOutcome):
    """What `handle_chunk` made of a chunk: its outcome, and the rows waiting for their
    object (`write_objects`, at the batch's end)."""

    rows: list[bytes] = field(default_factory=list)
    partition: str = ""
    retry_of: str | None = None  # the chunk whose failed records these are (a redrive)

    @property
    def size(self) -> int:
        return sum(len(row) for row in self.rows)


def handle_chunk(chunk: Chunk) -> ChunkOutcome:
    """Make the chunk's rows (bad records quarantined, failed ones kept as failures)."""
    results = runtime().run_records(chunk, to_line)
    rows = [jsonx.dumps(line) + b"\n" for _, line in results.outputs]
    delivery = current_delivery()
    made = Rows(
        **vars(results.outcome),
        rows=rows,
        retry_of=delivery.attributes.get(FAILED_FROM) if delivery is not None else None,
    )
    made.out = len(rows)
    if rows:
        made.partition = partition(chunk.type, results.outputs[0][0].ingested_at)
    return made


def write_objects(
    done: Sequence[tuple[Chunk, ChunkOutcome]],
    *,
    bucket: ObjectWriter | None = None,
    store: Placements | None = None,
) -> dict[str, BaseException]:
    """The batch's end (`StageRuntime.handle_sqs`'s `finish`): the chunks' rows into few
    objects; returns the chunks not written, with their errors (their messages are retried,
    hidden until the error's `retry_after_s`)."""
    rt = runtime()
    writer = Writer(rt, bucket or curated(), store or placements(), rt.remaining)
    return writer.run([(chunk, made) for chunk, made in done if isinstance(made, Rows)])


@dataclass
class Staged:
    """One chunk and its rows, waiting for its object."""

    chunk: Chunk
    made: Rows

    @property
    def rows(self) -> list[bytes]:
        return self.made.rows

    @property
    def partition(self) -> str:
        return self.made.partition

    @property
    def size(self) -> int:
        return self.made.size


class Writer:
    """One invocation's objects over its batch (see the module's docstring)."""

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
        self.failed: dict[str, BaseException] = {}
        self.expiries: dict[str, int] = {}  # chunk id → end of our placement (epoch ms)
        self.listed: dict[str, set[str]] = {}  # object key → its chunks (objects never change)

    def run(self, done: Sequence[tuple[Chunk, Rows]]) -> dict[str, BaseException]:
        staged = [Staged(chunk, made) for chunk, made in done]
        for item in staged:
            if not item.rows:
                self.settle(item)
        for group in objects([item for item in staged if item.rows]):
            self.write_object(group)
        return self.failed

    def fail(self, item: Staged, error: BaseException) -> None:
        """The chunk is not written: its messages are retried."""
        self.failed[item.chunk.chunk_id] = error

    def settle(self, item: Staged) -> None:
        """The sink's ledger entry for the chunk (first write wins); the stage runtime writes
        it with the chunk's own at the batch's end."""
        chunk = item.chunk
        self.rt.ledger.record_delivery(
            SINK, chunk, delivered=len(item.rows), retry_of=item.made.retry_of
        )

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
                self.settle(item)
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
        add_metric("RecordsDelivered", sum(len(item.rows) for item in held))
        for item in held:
            self.settle(item)

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
