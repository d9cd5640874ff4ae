"""The index consumer: the latest state of each entity in the records table.

One item per (type, natural key); a conditional put keeps the newest record whatever the
delivery order, and makes redelivery harmless (idempotent by construction, no claim).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from chalicelib.store import RecordsTable, item_key, to_attribute
from sluice.batch import BatchResponse, ChunkOutcome
from sluice.envelope import Chunk, Record
from sluice.errors import PermanentError
from sluice.observability import add_metric, get_logger
from sluice.stage import LambdaEvent, StageRuntime

SINK = "index"
STAGE = f"consumer-{SINK}"
KEYS_FILE = Path(__file__).with_name("keys.json")

log = get_logger(__name__)
_runtime: StageRuntime | None = None
_table: RecordsTable | None = None


@cache
def natural_keys() -> Mapping[str, str]:
    """The natural key field of each record type (chalicelib/keys.json), read once."""
    declared = json.loads(KEYS_FILE.read_text(encoding="utf-8"))["natural_keys"]
    return {str(t): str(f) for t, f in declared.items()}


def runtime() -> StageRuntime:
    """The process's stage runtime, built on first use."""
    global _runtime
    if _runtime is None:
        _runtime = StageRuntime(name=STAGE)
    return _runtime


def records_table() -> RecordsTable:
    global _table
    if _table is None:
        _table = RecordsTable()
    return _table


def reset() -> None:
    """Forget the cached runtime and table (tests that start a fresh AWS mock call this)."""
    global _runtime, _table
    _runtime = _table = None


def handle_event(event: Mapping[str, Any] | LambdaEvent) -> BatchResponse:
    """The SQS handler: every chunk of the batch, with partial batch failures."""
    rt, table = runtime(), records_table()
    return rt.handle_sqs(event, lambda chunk: handle_chunk(chunk, rt, table), claim=False)


def natural_key_of(record: Record, record_type: str) -> str:
    """The record's natural key value; `PermanentError` if the type or the value is missing."""
    field = natural_keys().get(record_type)
    if field is None:
        raise PermanentError(f"the index declares no natural key for type {record_type!r}")
    payload = record.payload
    value = payload.get(field) if isinstance(payload, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise PermanentError(f"{record_type} record has no natural key {field!r}")
    return str(value)


def handle_chunk(chunk: Chunk, rt: StageRuntime, table: RecordsTable) -> ChunkOutcome:
    """Put each record as its entity's latest state unless a newer one is stored."""

    def index(record: Record, chunk: Chunk) -> bool:
        key = natural_key_of(record, chunk.type)
        attributes = {
            "type": {"S": chunk.type},
            "natural_key": {"S": key},
            "record_id": {"S": record.id},
            "ingested_at": {"S": record.ingested_at},
            "correlation_id": {"S": chunk.correlation_id},
            "chunk_id": {"S": chunk.chunk_id},
            "payload": to_attribute(record.payload),
        }
        return table.put_latest(item_key(chunk.type, key), attributes)

    results = rt.run_records(chunk, index)
    written = sum(1 for _, stored in results.outputs if stored)
    superseded = len(results.outputs) - written
    outcome = results.outcome
    outcome.out, outcome.duplicate = written, superseded
    if superseded:
        log.info("stale or duplicate records skipped", extra={"records": superseded})
    # Delivered: the index now reflects the record (stored, or already superseded by a newer
    # or identical one), so the ledger reconciles a stale record as handled, not lost.
    rt.ledger.record_delivery(SINK, chunk, delivered=len(results.outputs))
    add_metric("RecordsDelivered", written)
    add_metric("RecordsSuperseded", superseded)
    return outcome
