"""Chunks as the stages hand them on, for the stage tests (cleanse, router)."""

from __future__ import annotations

from typing import Any

from sluice.envelope import Chunk, Record, chunk_id, record_id

# The landing object the test chunks come from.
SOURCE = "s3://sluice-test-landing/incoming/order/orders.jsonl"


def make_chunk(
    payloads: list[Any],
    *,
    record_type: str = "order",
    ordinal: int = 0,
    source: str = SOURCE,
    correlation_id: str = "corr-1",
) -> Chunk:
    """Chunk `ordinal` of `source`: `payloads` become its records, ids and ordinals as ingest
    derives them (etag `etag-1`)."""
    records = tuple(
        Record(
            id=record_id(source, "etag-1", ordinal * 1000 + i),
            ordinal=ordinal * 1000 + i,
            ingested_at="2026-11-27T06:00:00.000Z",
            payload=payload,
        )
        for i, payload in enumerate(payloads)
    )
    return Chunk(
        chunk_id=chunk_id(source, "etag-1", ordinal),
        type=record_type,
        source=source,
        correlation_id=correlation_id,
        records=records,
    )
