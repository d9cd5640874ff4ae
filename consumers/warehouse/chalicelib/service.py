"""The warehouse consumer: each chunk becomes one gzip JSON Lines object in the curated bucket.

The object's key derives from the chunk id, so a redelivered chunk overwrites the same object:
idempotent by construction, no claim needed. Records the delivery in the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.curated import (
    CuratedBucket,
    ObjectWriter,
    encode_lines,
    ingestion_hour,
    object_key,
)
from sluice.batch import BatchResponse, ChunkOutcome
from sluice.envelope import Chunk, Record
from sluice.errors import PermanentError
from sluice.observability import add_metric, get_logger
from sluice.stage import LambdaEvent, StageRuntime

SINK = "warehouse"
STAGE = f"consumer-{SINK}"
# Columns the warehouse adds to each payload; the payload's own fields of these names lose.
META_COLUMNS = ("_record_id", "_ingested_at", "_correlation_id", "_type")

log = get_logger(__name__)
_runtime: StageRuntime | None = None
_bucket: CuratedBucket | None = None


def runtime() -> StageRuntime:
    """The process's stage runtime, built on first use."""
    global _runtime
    if _runtime is None:
        _runtime = StageRuntime(name=STAGE)
    return _runtime


def curated() -> CuratedBucket:
    global _bucket
    if _bucket is None:
        _bucket = CuratedBucket()
    return _bucket


def reset() -> None:
    """Forget the cached runtime and bucket (tests that start a fresh AWS mock call this)."""
    global _runtime, _bucket
    _runtime = _bucket = None


def handle_event(event: Mapping[str, Any] | LambdaEvent) -> BatchResponse:
    """The SQS handler: every chunk of the batch, with partial batch failures."""
    rt, bucket = runtime(), curated()
    return rt.handle_sqs(event, lambda chunk: handle_chunk(chunk, rt, bucket), claim=False)


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


def handle_chunk(chunk: Chunk, rt: StageRuntime, bucket: ObjectWriter) -> ChunkOutcome:
    """Write the chunk's usable records as one object; quarantine the others."""
    results = rt.run_records(chunk, to_line)
    rows = results.outputs
    if rows:
        # The first written record's hour: deterministic for a chunk, whatever the retry.
        key = object_key(chunk.type, rows[0][0].ingested_at, chunk.chunk_id)
        metadata = {
            "chunk-id": chunk.chunk_id,
            "correlation-id": chunk.correlation_id,
            "records": str(len(rows)),
        }
        bucket.put(key, encode_lines(line for _, line in rows), metadata)
        log.info("chunk written", extra={"key": key, "records": len(rows)})
    outcome = results.outcome
    outcome.out = len(rows)
    rt.ledger.record_delivery(SINK, chunk, delivered=len(rows))
    add_metric("RecordsDelivered", len(rows))
    return outcome
