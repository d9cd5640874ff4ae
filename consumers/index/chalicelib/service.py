"""The index consumer: every version of each entity in the records table; the newest is latest.

Each record becomes one item keyed by (type, natural key) and (ingested_at, record id), so
the newest version wins whatever the delivery order and a redelivered record rewrites its own
item unchanged. Items are built and checked per record (bad data is quarantined), then written
once per chunk with BatchWriteItem. Chunks are not claimed: writing a chunk again changes
nothing, and the ledger keeps the counts of its first write, so a claim (a PutItem and an
UpdateItem per chunk) would only save the rare redelivery its writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from chalicelib.store import Item, RecordsTable, check_item, payload_attribute, version_key
from sluice.batch import ChunkOutcome
from sluice.envelope import Chunk, Record
from sluice.errors import PermanentError
from sluice.observability import add_metric, get_logger
from sluice.registry import load_registry
from sluice.stage import StageRuntime

SINK = "index"
STAGE = f"consumer-{SINK}"

log = get_logger(__name__)


@cache
def natural_keys() -> Mapping[str, str]:
    """The natural key field of each record type: the registry's (shipped with the app)."""
    return load_registry().natural_keys()


@cache
def runtime() -> StageRuntime:
    """The process's stage runtime, built on first use. Chunks are not claimed: a version
    item written twice is the same item (`put_versions`)."""
    return StageRuntime(name=STAGE, claim=False)


@cache
def records_table() -> RecordsTable:
    """The records table, made on first use."""
    return RecordsTable()


def reset() -> None:
    """Forget the runtime and table (tests that start a fresh AWS mock call this)."""
    runtime.cache_clear()
    records_table.cache_clear()


def natural_key_of(record: Record, record_type: str) -> str:
    """The record's natural key value; `PermanentError` if the type or the value is missing."""
    field = natural_keys().get(record_type)
    if field is None:
        raise PermanentError(f"no registered record type {record_type!r}: no natural key for it")
    payload = record.payload
    value = payload.get(field) if isinstance(payload, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise PermanentError(f"{record_type} record has no natural key {field!r}")
    return str(value)


def version_item(record: Record, chunk: Chunk) -> Item:
    """The record's version item, checked; `PermanentError` if DynamoDB could not store it.

    The type, natural key and record id are in the keys (`latest` gives them back), so the
    item carries only what the keys do not: six attributes, a third less for DynamoDB (and
    moto) to handle per record than with those three repeated. The payload is compressed, so
    a 1 KB record's item fits one 1 KB write unit.
    """
    key = natural_key_of(record, chunk.type)
    return check_item(
        {
            **version_key(chunk.type, key, record.ingested_at, record.id, record.ordinal),
            "ingested_at": {"S": record.ingested_at},
            "correlation_id": {"S": chunk.correlation_id},
            "chunk_id": {"S": chunk.chunk_id},
            "payload": payload_attribute(record.payload),
        }
    )


def handle_chunk(chunk: Chunk) -> ChunkOutcome:
    """Write a version item per good record, in batches; quarantine the others.

    `out` counts the items written; `duplicate` the records that repeat another record's
    version within the chunk (written once). The sink delivered both: each is in the index.
    A failed write raises, so SQS redelivers the chunk, which writes the same items again.
    """
    rt = runtime()
    results = rt.run_records(chunk, version_item)
    items = [item for _, item in results.outputs]
    written = records_table().put_versions(items)
    outcome = results.outcome
    outcome.out, outcome.duplicate = written, len(items) - written
    # Record ids and natural keys: `sluice trace` finds a record's item from the logs.
    log.info(
        "chunk indexed",
        extra={
            "records": len(items),
            "record_ids": [record.id for record, _ in results.outputs],
            "natural_keys": [item["pk"]["S"].partition("#")[2] for item in items],
        },
    )
    if outcome.duplicate:
        log.info("repeated records written once", extra={"records": outcome.duplicate})
    rt.ledger.record_delivery(SINK, chunk, delivered=len(items))
    add_metric("RecordsDelivered", len(items))
    return outcome
