"""The ledger's write side: one idempotent item per (stage or sink, chunk) with its counts.

The first write of an entry wins (`attribute_not_exists`), so a retried or redelivered chunk
leaves the counts as they were. `sluice ledger` (tooling) reads and reconciles them.

Each entry is written in one TransactWriteItems with an ADD of its contribution to the
object's progress item (`sluice.progress`): a retry finds the entry there, the transaction
is cancelled and the contribution is never added twice. After it, the writer reads the
progress item and emits `Object Delivered` if that entry completed the object
(`sluice.events`, once per object).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.config import get_settings
from sluice.envelope import Chunk
from sluice.errors import TransientError
from sluice.observability import get_logger
from sluice.progress import DONE_CHUNK, PROGRESS_ENTRY, contribution, update_expression

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from sluice.batch import ChunkOutcome
    from sluice.events import ProgressEvents

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
# Ingest's "done" entry (`ingest#done`): how many records (items) it read of the object.
RECORDS_ATTR = "records"
# Transactions cancelled by a concurrent writer of the same progress item (TransactionConflict)
# are tried again this many times, with jitter, before the chunk is retried.
CONFLICT_ATTEMPTS = 5
STUCK_AFTER_ENV = "SLUICE_STUCK_AFTER_SECONDS"
DEFAULT_STUCK_AFTER_S = 1800
# The router's answer: records per consumer whose subscription passes them, from its routes.
RouteSinks = Callable[[Mapping[str, int], str, str], Mapping[str, int]]


class LedgerWriteError(TransientError):
    """The ledger could not be written; the chunk is retried and the write is idempotent."""


def stage_entry(stage: str, chunk_id: str) -> str:
    return f"{stage}#{chunk_id}"


def sink_entry(sink: str, chunk_id: str) -> str:
    return f"{SINK_PREFIX}{sink}#{chunk_id}"


def is_entry(entry: str) -> bool:
    """False for the items that are not a stage's or sink's chunk: the object's progress
    item and ingest's "done" marker (`sluice ledger` reads entries only)."""
    return entry != PROGRESS_ENTRY and entry != stage_entry("ingest", DONE_CHUNK)


def stuck_after_s() -> int:
    """How long an object may stay open before `Object Stuck` (SLUICE_STUCK_AFTER_SECONDS)."""
    raw = get_settings().extra.get(STUCK_AFTER_ENV, "")
    try:
        return max(1, int(raw)) if raw.strip() else DEFAULT_STUCK_AFTER_S
    except ValueError:
        return DEFAULT_STUCK_AFTER_S


class LedgerTable:
    """The ledger table and the client that reaches it, both found on first use."""

    def __init__(self, client: DynamoDBClient | None = None, table_name: str | None = None):
        self._client = client
        self._table_name = table_name

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


class LedgerWriter(LedgerTable):
    """Writes ledger entries; `record_chunk` bound to a stage is a `sluice.batch.AfterChunk`."""

    def __init__(
        self,
        client: DynamoDBClient | None = None,
        *,
        table_name: str | None = None,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
        route_sinks: RouteSinks | None = None,
        events: ProgressEvents | None = None,
        deadline_s: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`route_sinks`: the router's (records per consumer of its routes); `events`: what
        emits the object's events (built on first use); `deadline_s`: how long an object may
        stay open before it is stuck (default SLUICE_STUCK_AFTER_SECONDS, 1800)."""
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        super().__init__(client, table_name)
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self.route_sinks = route_sinks
        self._events = events
        self._deadline_s = deadline_s
        self._sleep = sleep

    @property
    def events(self) -> ProgressEvents:
        if self._events is None:
            from sluice.events import ProgressEvents

            self._events = ProgressEvents(self.client, table_name=self.table_name)
        return self._events

    @property
    def deadline_s(self) -> int:
        if self._deadline_s is None:
            self._deadline_s = stuck_after_s()
        return self._deadline_s

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
        routed: Mapping[str, int] | None = None
        unresolved = 0
        if outcome.routes:
            if self.route_sinks is None:
                # Nothing says which consumers these records reach: the object never
                # completes (it is reported stuck), rather than complete too early.
                log.warning("routes recorded without consumers; the object cannot complete")
                unresolved = sum(outcome.routes.values())
            else:
                routed = self.route_sinks(outcome.routes, chunk.type, chunk.correlation_id)
        add = contribution(stage, counts, routed=routed, unresolved=unresolved)
        self._put(chunk, stage_entry(stage, chunk.chunk_id), names, counts, add, extra)

    def record_done(self, stage: str, chunk: Chunk, records: int) -> None:
        """`stage` (ingest) has read the whole object: `records` items in all (the sum of
        its entries' records_in). Written after every other entry of the object's read."""
        if records < 0:
            raise ValueError("records must not be negative")
        add = contribution(stage, {}, done_total=records)
        names = {"stage": stage}
        self._put(chunk, stage_entry(stage, DONE_CHUNK), names, {RECORDS_ATTR: records}, add)

    def record_delivery(
        self, sink: str, chunk: Chunk, delivered: int, *, retry_of: str | None = None
    ) -> None:
        """How many records of `chunk` the sink `sink` delivered (wrote, published, indexed);
        `retry_of` as in `record_chunk`."""
        counts = {"records_in": len(chunk.records), "delivered": delivered}
        names = _names("sink", sink, retry_of)
        add = contribution("", counts, sink=sink)
        self._put(chunk, sink_entry(sink, chunk.chunk_id), names, counts, add)

    def record_skipped(self, stage: str, chunk: Chunk, reason: str) -> None:
        """`stage` skipped `chunk` (for ingest: the chunk standing for a whole object) without
        reading records, for `reason` (e.g. the object version is gone): an entry with
        records_in 0, so the object is accounted for and the reason visible."""
        if not reason:
            raise ValueError("a skipped entry needs a reason")
        names = {"stage": stage, SKIPPED_ATTR: reason}
        self._put(chunk, stage_entry(stage, chunk.chunk_id), names, {"records_in": 0}, {})

    def _put(
        self,
        chunk: Chunk,
        entry: str,
        names: Mapping[str, str],
        counts: Mapping[str, int],
        add: Mapping[str, int],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        now = self._clock()
        expires_at = int(now) + self.ttl_seconds
        item: dict[str, Any] = {
            PARTITION_KEY: {"S": chunk.correlation_id},
            SORT_KEY: {"S": entry},
            "chunk_id": {"S": chunk.chunk_id},
            "type": {"S": chunk.type},
            "source": {"S": chunk.source},
            "recorded_at": {"S": _iso(now)},
            EXPIRES_AT_ATTR: {"N": str(expires_at)},
        }
        item.update({k: {"S": v} for k, v in names.items()})
        item.update({k: {"N": str(v)} for k, v in counts.items()})
        item.update(extra or {})
        update = update_expression(
            add,
            source=chunk.source,
            record_type=chunk.type,
            now=now,
            expires_at=expires_at,
            deadline_s=self.deadline_s,
        )
        items: list[Any] = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(#entry)",
                    "ExpressionAttributeNames": {"#entry": SORT_KEY},
                }
            },
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": {
                        PARTITION_KEY: {"S": chunk.correlation_id},
                        SORT_KEY: {"S": PROGRESS_ENTRY},
                    },
                    "UpdateExpression": update["expression"],
                    "ExpressionAttributeNames": update["names"],
                    "ExpressionAttributeValues": update["values"],
                }
            },
        ]
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                self.client.transact_write_items(TransactItems=items)
                break
            except aws.client_errors() as exc:
                reasons = _cancellation_codes(exc)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    # Recorded by an earlier attempt of this chunk: its counts (and its
                    # contribution) stand. That attempt may have died before emitting.
                    log.debug("ledger entry already recorded", extra={"entry": entry})
                    break
                if "TransactionConflict" in reasons and attempt < CONFLICT_ATTEMPTS:
                    self._sleep(random.uniform(0.02, 0.1) * attempt)
                    continue
                raise LedgerWriteError(f"could not write ledger entry {entry}: {exc}") from exc
        self.events.after_write(chunk.correlation_id)


def _cancellation_codes(exc: BaseException) -> list[str]:
    """The per-item codes of a cancelled transaction ("" for an item that was fine)."""
    if aws.error_code(exc) != "TransactionCanceledException":
        return []
    response = getattr(exc, "response", None) or {}
    reasons = response.get("CancellationReasons") or []
    codes = [str((r or {}).get("Code") or "") for r in reasons]
    if not codes:
        # No reasons in the answer: read them from the message ("[ConditionalCheckFailed, None]").
        message = str((response.get("Error") or {}).get("Message") or "")
        inside = message.partition("[")[2].partition("]")[0]
        codes = [c.strip() if c.strip() != "None" else "" for c in inside.split(",")]
    return codes


def _names(kind: str, name: str, retry_of: str | None) -> dict[str, str]:
    names = {kind: name}
    if retry_of:
        names[RETRY_OF_ATTR] = retry_of
    return names


def _iso(epoch: float) -> str:
    at = datetime.fromtimestamp(epoch, UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
