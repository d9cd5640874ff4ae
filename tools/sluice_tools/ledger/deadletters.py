"""What the ledger reads of a stage's dead-letter and failures queues: each chunk (or dead
object) in them as a `DeadChunk` for the reconcile.

The DLQ tools (`sluice_tools.dlq`) find, peek and decode the queues; the ledger attributes
what they hold. This module depends on the DLQ tools and never the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sluice.config import ResourceNames
from sluice_tools.dlq.queues import decode, peek, queue_name, receiving_stage
from sluice_tools.ledger.reconcile import DeadChunk


def dlq_records(
    sqs: Any, queue_urls: Iterable[str], *, names: ResourceNames | None = None
) -> list[DeadChunk]:
    """Every chunk (and dead object) in these DLQs, peeked without consuming them."""
    found: list[DeadChunk] = []
    for url in queue_urls:
        name = queue_name(url)
        stage = receiving_stage(name, names)
        for message in peek(sqs, url):
            d = decode(message)
            failed_from = d.failure.failed_from if d.failure else None
            for chunk in d.chunks:
                found.append(
                    DeadChunk(
                        name,
                        stage,
                        chunk.correlation_id,
                        chunk.chunk_id,
                        len(chunk.records),
                        chunk.source,
                        failed_from,
                    )
                )
            if d.chunks:
                continue
            corr = d.correlation_ids[0] if d.correlation_ids else None
            for i, source in enumerate(d.objects):
                known = d.object_correlation_ids[i] if i < len(d.object_correlation_ids) else None
                found.append(DeadChunk(name, stage, known or corr, None, None, source))
            if not d.objects:
                found.append(DeadChunk(name, stage, corr))
    return found
