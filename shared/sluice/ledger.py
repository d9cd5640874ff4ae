"""The ledger's write side: one idempotent item per (stage or sink, chunk) with its counts.

The first write of an entry wins (`attribute_not_exists`), so a retried or redelivered chunk
leaves the counts as they were. `sluice ledger` (tooling) reads and reconciles them.

Entries are written in TransactWriteItems with an ADD of their contributions to the object's
progress item (`sluice.progress`): an entry found there already (an earlier attempt's) is
left out and the rest written again, so a contribution is never added twice. A stage holds
its invocation's entries (`holding`) and writes them with one transaction per object
(`flush`); a consumer's entry and its sink's of the same chunk become one item. After it,
the writer reads the progress item and emits `Object Delivered` if that completed the
object (`sluice.events`, once per object).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.config import get_settings
from sluice.envelope import Chunk
from sluice.errors import TransientError
from sluice.lazy import first_use
from sluice.observability import get_logger
from sluice.progress import (
    CONSUMER_PREFIX,
    DONE_CHUNK,
    PROGRESS_ENTRY,
    contribution,
    update_expression,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from sluice.batch import ChunkOutcome
    from sluice.events import ProgressEvents

log = get_logger(__name__)

# The table's schema (infra/platform.yaml, LedgerTable), and an entry item's attributes:
# written here, read by `sluice ledger` (`sluice_tools.ledger.reconcile.LedgerEntry`).
PARTITION_KEY = "correlation_id"
SORT_KEY = "entry"
CHUNK_ID_ATTR, TYPE_ATTR, SOURCE_ATTR = "chunk_id", "type", "source"
RECORDED_AT_ATTR = "recorded_at"  # ISO 8601, milliseconds, Z
STAGE_ATTR, SINK_ATTR = "stage", "sink"  # the stage that wrote the entry; the sink delivering
# A stage's counts of its chunk (`ChunkOutcome.as_dict`); a sink's are records_in, delivered.
COUNT_ATTRS = ("records_in", "out", "quarantined", "duplicate", "failed")
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
# A sink's records delivered (on a sink's entry, or on its consumer's entry merged with it).
DELIVERED_ATTR = "delivered"
# Entries of one object written in one transaction (TransactWriteItems takes 100 items: these
# and the object's progress update).
MAX_GROUP_ENTRIES = 99
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


# What a sink's delivery entry holds of the consumer entry it was merged into.
_DELIVERY_ATTRS = (
    PARTITION_KEY,
    CHUNK_ID_ATTR,
    TYPE_ATTR,
    SOURCE_ATTR,
    RECORDED_AT_ATTR,
    EXPIRES_AT_ATTR,
    "records_in",
    RETRY_OF_ATTR,
)


def split_item(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The entries one ledger item holds, each as an item of its own (DynamoDB's typed
    values): a consumer's entry written with its sink's delivery (`sink` and `delivered` on a
    `consumer-<c>#<chunk>` item, `merge_deliveries`) is the consumer's entry and the sink's
    `sink:<c>#<chunk>` entry, as they were before they were merged. Readers use this."""
    sink = str((item.get(SINK_ATTR) or {}).get("S", ""))
    entry = str((item.get(SORT_KEY) or {}).get("S", ""))
    if not sink or DELIVERED_ATTR not in item or entry.startswith(SINK_PREFIX):
        return [dict(item)]
    stage = {k: v for k, v in item.items() if k not in (SINK_ATTR, DELIVERED_ATTR)}
    delivery = {k: item[k] for k in _DELIVERY_ATTRS if k in item}
    chunk_id = str((item.get(CHUNK_ID_ATTR) or {}).get("S", "")) or entry.partition("#")[2]
    delivery.update(
        {
            SORT_KEY: {"S": sink_entry(sink, chunk_id)},
            SINK_ATTR: {"S": sink},
            DELIVERED_ATTR: item[DELIVERED_ATTR],
        }
    )
    return [stage, delivery]


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

    client: first_use[DynamoDBClient] = first_use(lambda self: aws.dynamodb())
    table_name: first_use[str] = first_use(lambda self: get_settings().names.ledger_table)


class LedgerWriter(LedgerTable):
    """Writes ledger entries (`record_chunk`, `record_delivery`), held and written per
    object inside `holding()`."""

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
        self._held: list[_Entry] | None = None
        self._failed: dict[str, LedgerWriteError] = {}  # of entries written while holding

    @property
    def events(self) -> ProgressEvents:
        if self._events is None:
            from sluice.events import ProgressEvents

            self._events = ProgressEvents(self.client, table_name=self.table_name)
        return self._events

    deadline_s: first_use[int] = first_use(lambda self: stuck_after_s())

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
        names = _names(STAGE_ATTR, stage, retry_of)
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
        its entries' records_in). Written after every other entry of the object's read.

        Raises `ValueError` for a negative count, `LedgerWriteError` if not held and the
        write fails.
        """
        if records < 0:
            raise ValueError("records must not be negative")
        add = contribution(stage, {}, done_total=records)
        names = {STAGE_ATTR: stage}
        self._put(chunk, stage_entry(stage, DONE_CHUNK), names, {RECORDS_ATTR: records}, add)

    def record_delivery(
        self, sink: str, chunk: Chunk, delivered: int, *, retry_of: str | None = None
    ) -> None:
        """How many records of `chunk` the sink `sink` delivered (wrote, published, indexed);
        `retry_of` as in `record_chunk`."""
        counts = {"records_in": len(chunk.records), DELIVERED_ATTR: delivered}
        names = _names(SINK_ATTR, sink, retry_of)
        add = contribution("", counts, sink=sink)
        self._put(chunk, sink_entry(sink, chunk.chunk_id), names, counts, add)

    def record_skipped(self, stage: str, chunk: Chunk, reason: str) -> None:
        """`stage` skipped `chunk` (for ingest: the chunk standing for a whole object) without
        reading records, for `reason` (e.g. the object version is gone): an entry with
        records_in 0, so the object is accounted for and the reason visible.

        Raises `ValueError` without a reason, `LedgerWriteError` if not held and the write fails.
        """
        if not reason:
            raise ValueError("a skipped entry needs a reason")
        names = {STAGE_ATTR: stage, SKIPPED_ATTR: reason}
        self._put(chunk, stage_entry(stage, chunk.chunk_id), names, {"records_in": 0}, {})

    # ------------------------------------------------------------------ holding

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Hold the entries written inside until `flush()`: one transaction per object for
        all of an invocation's entries instead of one per entry (the unit of work of
        `StageRuntime.handle_sqs`, the warehouse's batch and an ingest segment). At most
        `MAX_GROUP_ENTRIES` are held: then they are written and the holding goes on (an
        ingest segment of thousands of chunks keeps its memory flat), their failures kept
        for `flush`. Entries still held when the block ends are dropped (their chunk is
        retried). A block inside another holds its own (an invocation run inside another, as
        tests do)."""
        outer = self._held, self._failed
        self._held, self._failed = [], {}
        try:
            yield
        finally:
            self._held, self._failed = outer

    @property
    def is_holding(self) -> bool:
        return self._held is not None

    def flush(self) -> dict[str, LedgerWriteError]:
        """Write the held entries: per object (correlation id), up to `MAX_GROUP_ENTRIES`
        entries and the object's progress update in one TransactWriteItems. Returns the
        chunks whose entries were not written, with the error (their chunk is retried;
        writing again is idempotent). Then the object's events (`after_write`)."""
        failed, self._failed = self._failed, {}
        failed.update(self._write_held())
        return failed

    def _write_held(self) -> dict[str, LedgerWriteError]:
        if not self._held:
            return {}
        held, self._held = merge_deliveries(self._held), []
        # One write per entry: an entry held twice (first write wins) would make DynamoDB
        # refuse the whole transaction (two operations on one item).
        groups: dict[str, dict[str, _Entry]] = {}
        for e in held:
            groups.setdefault(e.correlation_id, {}).setdefault(e.item[SORT_KEY]["S"], e)
        failed: dict[str, LedgerWriteError] = {}
        for correlation_id, by_entry in groups.items():
            written = False
            group = list(by_entry.values())
            for start in range(0, len(group), MAX_GROUP_ENTRIES):
                part = group[start : start + MAX_GROUP_ENTRIES]
                try:
                    self._write(part)
                    written = True
                except LedgerWriteError as error:
                    log.warning("ledger entries not written", extra={"error": str(error)})
                    failed.update((e.chunk_id, error) for e in part)
            if written:
                self.events.after_write(correlation_id)
        return failed

    def flush_or_raise(self) -> None:
        """`flush()`, raising the first error if any entry was not written.

        Raises the first `LedgerWriteError`.
        """
        failed = self.flush()
        if failed:
            raise next(iter(failed.values()))

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
        item: dict[str, Any] = {
            PARTITION_KEY: {"S": chunk.correlation_id},
            SORT_KEY: {"S": entry},
            CHUNK_ID_ATTR: {"S": chunk.chunk_id},
            TYPE_ATTR: {"S": chunk.type},
            SOURCE_ATTR: {"S": chunk.source},
            RECORDED_AT_ATTR: {"S": _iso(now)},
            EXPIRES_AT_ATTR: {"N": str(int(now) + self.ttl_seconds)},
        }
        item.update({k: {"S": v} for k, v in names.items()})
        item.update({k: {"N": str(v)} for k, v in counts.items()})
        item.update(extra or {})
        pending = _Entry(
            chunk.correlation_id, chunk.chunk_id, chunk.source, chunk.type, item, dict(add), now
        )
        if self._held is not None:
            self._held.append(pending)
            if len(self._held) >= MAX_GROUP_ENTRIES:
                self._failed.update(self._write_held())
            return
        self._write([pending])
        self.events.after_write(chunk.correlation_id)

    def _write(self, entries: list[_Entry]) -> None:
        """One object's entries (at most `MAX_GROUP_ENTRIES`) and the sum of their
        contributions to its progress item, in one transaction. An entry already there (an
        earlier attempt's, whose contribution went in with it) is left out and the rest
        written again; `LedgerWriteError` if the write fails otherwise."""
        pending = list(entries)
        conflicts = 0
        while pending:
            items: list[Any] = [self._put_item(e) for e in pending]
            items.append(self._progress_item(pending))
            try:
                self.client.transact_write_items(TransactItems=items)
                return
            except aws.client_errors() as exc:
                codes = _cancellation_codes(exc)
                if len(codes) == len(items) and "ConditionalCheckFailed" in codes[:-1]:
                    # Recorded by an earlier attempt: its counts (and contribution) stand.
                    # That attempt may have died before emitting; `flush` reads after.
                    log.debug("ledger entries already recorded")
                    kept = zip(pending, codes[:-1], strict=True)
                    pending = [e for e, code in kept if code != "ConditionalCheckFailed"]
                    continue
                if "TransactionConflict" in codes and conflicts < CONFLICT_ATTEMPTS - 1:
                    conflicts += 1
                    self._sleep(random.uniform(0.02, 0.1) * conflicts)
                    continue
                first = pending[0].item[SORT_KEY]["S"]
                raise LedgerWriteError(
                    f"could not write {len(pending)} ledger entries ({first}, ...): {exc}"
                ) from exc

    def _put_item(self, e: _Entry) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": e.item,
                "ConditionExpression": "attribute_not_exists(#entry)",
                "ExpressionAttributeNames": {"#entry": SORT_KEY},
            }
        }

    def _progress_item(self, entries: list[_Entry]) -> dict[str, Any]:
        total: dict[str, int] = {}
        for e in entries:
            for name, n in e.add.items():
                total[name] = total.get(name, 0) + n
        first = entries[0]
        now = max(e.now for e in entries)
        update = update_expression(
            total,
            source=first.source,
            record_type=first.record_type,
            now=now,
            expires_at=int(now) + self.ttl_seconds,
            deadline_s=self.deadline_s,
        )
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": {
                    PARTITION_KEY: {"S": first.correlation_id},
                    SORT_KEY: {"S": PROGRESS_ENTRY},
                },
                "UpdateExpression": update["expression"],
                "ExpressionAttributeNames": update["names"],
                "ExpressionAttributeValues": update["values"],
            }
        }


@dataclass
class _Entry:
    """A ledger entry built and not written yet: the item and its progress contribution
    (and what names its chunk, never the chunk itself: a held ingest segment must not keep
    its records alive)."""

    correlation_id: str
    chunk_id: str
    source: str
    record_type: str
    item: dict[str, Any]
    add: dict[str, int]
    now: float

    def text(self, name: str) -> str:
        return str((self.item.get(name) or {}).get("S", ""))


def merge_deliveries(entries: list[_Entry]) -> list[_Entry]:
    """A consumer's entry and its sink's delivery entry of the same chunk become one item:
    the consumer's, with the sink's `sink` and `delivered` (`sluice ledger` reads both back
    from it). Half the items a consumer writes per chunk; the contributions add up."""
    consumers: dict[tuple[str, str, str], _Entry] = {}
    for e in entries:
        stage = e.text(STAGE_ATTR)
        if stage.startswith(CONSUMER_PREFIX):
            key = (e.chunk_id, stage.removeprefix(CONSUMER_PREFIX), e.text(RETRY_OF_ATTR))
            consumers.setdefault(key, e)
    merged: list[_Entry] = []
    for e in entries:
        sink = e.text(SINK_ATTR)
        owner = consumers.get((e.chunk_id, sink, e.text(RETRY_OF_ATTR))) if sink else None
        if owner is None or DELIVERED_ATTR in owner.item:
            merged.append(e)
            continue
        owner.item[SINK_ATTR] = {"S": sink}
        owner.item[DELIVERED_ATTR] = e.item[DELIVERED_ATTR]
        for name, n in e.add.items():
            owner.add[name] = owner.add.get(name, 0) + n
    return merged


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


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "LedgerWriter",
]
