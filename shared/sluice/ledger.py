"""The ledger's write side: one idempotent item per (stage or sink, chunk) with its counts.

The first write of an entry wins (`attribute_not_exists`), so a retried or redelivered chunk
leaves the counts as they were. `sluice ledger` (tooling) reads and reconciles them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.config import get_settings
from sluice.envelope import Chunk
from sluice.errors import TransientError
from sluice.observability import get_logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from sluice.batch import ChunkOutcome

log = get_logger(__name__)

# The table's schema (infra/platform.yaml, LedgerTable).
PARTITION_KEY = "correlation_id"
SORT_KEY = "entry"
EXPIRES_AT_ATTR = "expires_at"  # the table's TTL attribute, epoch seconds
DEFAULT_TTL_SECONDS = 30 * 24 * 3600
SINK_PREFIX = "sink:"
# The router's records per set of routing attributes (canonical JSON → count), a map.
ROUTES_ATTR = "routes"
# On the entries of a chunk of failed records being processed again: the chunk whose entry
# counted them as `failed` (the reconcile moves them from failed to their new outcome).
RETRY_OF_ATTR = "retry_of"
# Why a stage skipped an object or chunk without reading records (records_in 0).
SKIPPED_ATTR = "skipped"


class LedgerWriteError(TransientError):
    """The ledger could not be written; the chunk is retried and the write is idempotent."""


def stage_entry(stage: str, chunk_id: str) -> str:
    return f"{stage}#{chunk_id}"


def sink_entry(sink: str, chunk_id: str) -> str:
    return f"{SINK_PREFIX}{sink}#{chunk_id}"


class LedgerWriter:
    """Writes ledger entries; `record_chunk` bound to a stage is a `sluice.batch.AfterChunk`."""

    def __init__(
        self,
        client: DynamoDBClient | None = None,
        *,
        table_name: str | None = None,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._client = client
        self._table_name = table_name
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    @property
    def client(self) -> DynamoDBClient:
        if self._client is None:
            self._client = aws.dynamodb()
        return self._client

    @property
    def table_name(self) -> str:
        if self._table_name is None:
            self._table_name = get_settings().names.ledger_table
        return self._table_name

    def record_chunk(
        self, stage: str, chunk: Chunk, outcome: ChunkOutcome, *, retry_of: str | None = None
    ) -> None:
        """What `stage` did with `chunk`: records in, out, quarantined, duplicate, failed
        (and the router's records per set of routing attributes, when it has them).

        `retry_of`: `chunk` holds records that failed in chunk `retry_of` (counted there as
        `failed`) and are processed again."""
        counts = outcome.as_dict()
        routes = {k: {"N": str(v)} for k, v in outcome.routes.items() if v}
        extra = {ROUTES_ATTR: {"M": routes}} if routes else None
        names = _names("stage", stage, retry_of)
        self._put(chunk, stage_entry(stage, chunk.chunk_id), names, counts, extra)

    def record_delivery(
        self, sink: str, chunk: Chunk, delivered: int, *, retry_of: str | None = None
    ) -> None:
        """How many records of `chunk` the sink `sink` delivered (wrote, published, indexed);
        `retry_of` as in `record_chunk`."""
        counts = {"records_in": len(chunk.records), "delivered": delivered}
        names = _names("sink", sink, retry_of)
        self._put(chunk, sink_entry(sink, chunk.chunk_id), names, counts)

    def record_skipped(self, stage: str, chunk: Chunk, reason: str) -> None:
        """`stage` skipped `chunk` (for ingest: the chunk standing for a whole object) without
        reading records, for `reason` (e.g. the object version is gone): an entry with
        records_in 0, so the object is accounted for and the reason visible."""
        if not reason:
            raise ValueError("a skipped entry needs a reason")
        names = {"stage": stage, SKIPPED_ATTR: reason}
        self._put(chunk, stage_entry(stage, chunk.chunk_id), names, {"records_in": 0})

    def _put(
        self,
        chunk: Chunk,
        entry: str,
        names: Mapping[str, str],
        counts: Mapping[str, int],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        now = self._clock()
        item: dict[str, Any] = {
            PARTITION_KEY: {"S": chunk.correlation_id},
            SORT_KEY: {"S": entry},
            "chunk_id": {"S": chunk.chunk_id},
            "type": {"S": chunk.type},
            "source": {"S": chunk.source},
            "recorded_at": {"S": _iso(now)},
            EXPIRES_AT_ATTR: {"N": str(int(now) + self.ttl_seconds)},
        }
        item.update({k: {"S": v} for k, v in names.items()})
        item.update({k: {"N": str(v)} for k, v in counts.items()})
        item.update(extra or {})
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression="attribute_not_exists(#entry)",
                ExpressionAttributeNames={"#entry": SORT_KEY},
            )
        except aws.client_errors() as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                # Recorded by an earlier attempt of this chunk: its counts stand.
                log.debug("ledger entry already recorded", extra={"entry": entry})
                return
            raise LedgerWriteError(f"could not write ledger entry {entry}: {exc}") from exc


def _names(kind: str, name: str, retry_of: str | None) -> dict[str, str]:
    names = {kind: name}
    if retry_of:
        names[RETRY_OF_ATTR] = retry_of
    return names


def _iso(epoch: float) -> str:
    at = datetime.fromtimestamp(epoch, UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
