"""Pipeline events on the stage's EventBridge bus, each emitted once per object.

`ProgressEvents` reads an object's progress item (`sluice.progress`) and, when an event is
due, takes an emit lease on the item (a conditional UpdateItem), puts the event, then marks
it sent:

    writer A: lease(delivered) ok ──▶ PutEvents ──▶ SET delivered_sent, REMOVE lease, open keys
    writer B: lease(delivered) ConditionalCheckFailed (A's live lease, or sent): nothing
    A dies after the lease: the lease lapses (LEASE_MS); the next writer or the scheduled
    check takes it over and emits.

Bound: a PutEvents whose answer was lost (or a lease that lapsed while its holder was still
putting) can put an event twice; every event's `detail.event_id` is the same for both
(a hash of correlation id and detail-type), so a target deduplicates on it. Emitting never
fails the data path: an error is logged and the scheduled check (`check_objects`) emits
what is still due. The client is made on first use; nothing happens at import.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.config import get_settings
from sluice.lazy import first_use
from sluice.observability import add_metric, get_logger
from sluice.progress import (
    FIRST_AT,
    OPEN_DEADLINE,
    OPEN_SHARD,
    PROGRESS_ENTRY,
    SOURCE,
    TYPE,
    Progress,
    iso,
    split_source,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = get_logger(__name__)

SCHEMA_VERSION = "1"
LANDED = "Object Landed"
DELIVERED = "Object Delivered"
QUARANTINED = "Records Quarantined"
STUCK = "Object Stuck"
DETAIL_TYPES = (LANDED, DELIVERED, QUARANTINED, STUCK)
# An emit lease lapses after this long (a holder that died); PutEvents takes well under 1 s.
LEASE_MS = 60_000
# The kinds of emission, each with its own `<kind>_sent` and `<kind>_emitting` attributes.
KIND_LANDED, KIND_DELIVERED, KIND_STUCK = "landed", "delivered", "stuck"


def event_id(correlation_id: str, detail_type: str) -> str:
    """The same for every emission of one event of one object: targets dedupe on it."""
    digest = hashlib.sha256(f"{correlation_id}\n{detail_type}".encode()).hexdigest()
    return digest[:32]


def sent_attr(kind: str) -> str:
    return f"{kind}_sent"


def lease_attr(kind: str) -> str:
    return f"{kind}_emitting"


def holder_attr(kind: str) -> str:
    """Who holds the lease (a token per attempt): a retried lease write recognises itself."""
    return f"{kind}_holder"


class EventsError(Exception):
    """PutEvents failed or refused an entry (logged by callers; the check emits it later)."""


@dataclass(frozen=True)
class Event:
    detail_type: str
    detail: dict[str, Any]


def base_detail(progress: Progress, detail_type: str) -> dict[str, Any]:
    bucket, key = split_source(progress.source)
    return {
        "version": SCHEMA_VERSION,
        "event_id": event_id(progress.correlation_id, detail_type),
        "correlation_id": progress.correlation_id,
        "bucket": bucket,
        "key": key,
        "record_type": progress.record_type,
        "landed_at": progress.first_at,
    }


def landed_events(progress: Progress, now: float) -> list[Event]:
    detail = base_detail(progress, LANDED)
    detail["counts"] = {}
    return [Event(LANDED, detail)]


def delivered_events(progress: Progress, now: float) -> list[Event]:
    """`Object Delivered`, and `Records Quarantined` with it when any record was."""
    detail = base_detail(progress, DELIVERED)
    detail["counts"] = progress.counts()
    detail["delivered_at"] = iso(now)
    events = [Event(DELIVERED, detail)]
    if progress.quarantined:
        q = base_detail(progress, QUARANTINED)
        q["counts"] = {"quarantined": progress.quarantined, "by_reason": progress.quarantined_by}
        q["quarantined_at"] = iso(now)
        events.append(Event(QUARANTINED, q))
    return events


def stuck_events(reason: str) -> Callable[[Progress, float], list[Event]]:
    def build(progress: Progress, now: float) -> list[Event]:
        detail = base_detail(progress, STUCK)
        detail["counts"] = progress.counts()
        detail["reason"] = reason
        detail["owed"] = progress.owed
        detail["stuck_at"] = iso(now)
        return [Event(STUCK, detail)]

    return build


class EventBus:
    """PutEvents to the stage's bus (`<prefix>-<stage>-events`), source `sluice.<stage>`."""

    def __init__(
        self, client: Any = None, *, bus_name: str | None = None, source: str | None = None
    ) -> None:
        self._client = client
        self._bus_name = bus_name
        self._source = source

    client: first_use[Any] = first_use(lambda self: aws.client("events"))
    bus_name: first_use[str] = first_use(lambda self: get_settings().names.events_bus)
    source: first_use[str] = first_use(lambda self: f"sluice.{get_settings().stage}")

    def put(self, events: Iterable[Event]) -> None:
        entries = [
            {
                "Source": self.source,
                "DetailType": e.detail_type,
                "Detail": json.dumps(e.detail, separators=(",", ":"), sort_keys=True),
                "EventBusName": self.bus_name,
            }
            for e in events
        ]
        if not entries:
            return
        try:
            response = self.client.put_events(Entries=entries)
        except aws.client_errors() as exc:
            raise EventsError(f"PutEvents to {self.bus_name} failed: {exc}") from exc
        if int(response.get("FailedEntryCount") or 0):
            failed = [e for e in response.get("Entries") or [] if e.get("ErrorCode")]
            raise EventsError(f"PutEvents to {self.bus_name} refused entries: {failed}")


Builder = Callable[[Progress, float], list[Event]]


class ProgressEvents:
    """Emits an object's events once, from its progress item in the ledger table."""

    client: first_use[DynamoDBClient] = first_use(lambda self: aws.dynamodb())
    table_name: first_use[str] = first_use(lambda self: get_settings().names.ledger_table)

    def __init__(
        self,
        client: DynamoDBClient | None = None,
        *,
        table_name: str | None = None,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.time,
        lease_ms: int = LEASE_MS,
    ) -> None:
        self._client = client
        self._table_name = table_name
        self.bus = bus or EventBus()
        self._clock = clock
        self.lease_ms = lease_ms

    def key(self, correlation_id: str) -> dict[str, Any]:
        return {"correlation_id": {"S": correlation_id}, "entry": {"S": PROGRESS_ENTRY}}

    def read(self, correlation_id: str) -> Progress | None:
        """The object's progress item (strongly consistent), None if there is none.

        Raises `EventsError` if DynamoDB cannot be read.
        """
        try:
            item = self.client.get_item(
                TableName=self.table_name, Key=self.key(correlation_id), ConsistentRead=True
            ).get("Item")
        except aws.client_errors() as exc:
            raise EventsError(f"could not read the progress of {correlation_id}: {exc}") from exc
        return Progress.from_item(item) if item else None

    def after_write(self, correlation_id: str) -> bool:
        """After a ledger entry of `correlation_id` is in: emit `Object Delivered` (and
        `Records Quarantined`) if that completed the object. Never raises; True if emitted."""

        def emit() -> bool:
            progress = self.read(correlation_id)
            if progress is None or not progress.complete or progress.has(sent_attr(KIND_DELIVERED)):
                return False
            return self.emit_once(correlation_id, KIND_DELIVERED, delivered_events)

        return _never_raising("the object's events", emit)

    def landed(self, correlation_id: str, source: str, record_type: str) -> bool:
        """`Object Landed`, once per object version (ingest accepted it). Never raises."""
        return _never_raising(
            "Object Landed",
            lambda: self.emit_once(
                correlation_id, KIND_LANDED, landed_events, source=source, record_type=record_type
            ),
        )

    def emit_once(
        self,
        correlation_id: str,
        kind: str,
        build: Builder,
        *,
        source: str = "",
        record_type: str = "",
        close: bool | None = None,
    ) -> bool:
        """Take `kind`'s lease, put `build(progress)`, mark it sent. False if it was sent or
        another holder's lease is live. `EventsError` if putting failed (the lease is let go).
        `close`: also take the object out of the open index (default: for delivered).

        Raises `EventsError` if the lease cannot be taken (DynamoDB fault).
        """
        now = self._clock()
        now_ms = int(now * 1000)
        sent, lease, holder = sent_attr(kind), lease_attr(kind), holder_attr(kind)
        me = uuid.uuid4().hex
        try:
            item = self.client.update_item(
                TableName=self.table_name,
                Key=self.key(correlation_id),
                UpdateExpression=(
                    "SET #lease = :now, #holder = :me, #first = if_not_exists(#first, :first), "
                    "#src = if_not_exists(#src, :src), #type = if_not_exists(#type, :type)"
                ),
                ConditionExpression=(
                    "attribute_not_exists(#sent) AND "
                    "(attribute_not_exists(#lease) OR #lease < :lapsed)"
                ),
                ExpressionAttributeNames={
                    "#lease": lease,
                    "#holder": holder,
                    "#sent": sent,
                    "#first": FIRST_AT,
                    "#src": SOURCE,
                    "#type": TYPE,
                },
                ExpressionAttributeValues={
                    ":now": {"N": str(now_ms)},
                    ":me": {"S": me},
                    ":lapsed": {"N": str(now_ms - self.lease_ms)},
                    ":first": {"S": iso(now)},
                    ":src": {"S": source},
                    ":type": {"S": record_type},
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )["Attributes"]
        except aws.client_errors() as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise EventsError(f"could not take the {kind} emit lease: {exc}") from exc
            old = (getattr(exc, "response", None) or {}).get("Item") or {}
            if (old.get(holder) or {}).get("S") != me or sent in old:
                return False  # sent already, or another holder's lease is live
            item = old  # our own lease: the SDK's retry of a write whose answer was lost
        progress = Progress.from_item(item)
        events = build(progress, now)
        try:
            self.bus.put(events)
        except EventsError:
            self._release(correlation_id, kind, me)
            raise
        closing = kind == KIND_DELIVERED if close is None else close
        remove = ", ".join(["#lease", "#holder", *(["#shard", "#deadline"] if closing else [])])
        names = {"#lease": lease, "#holder": holder, "#sent": sent}
        if closing:
            names.update({"#shard": OPEN_SHARD, "#deadline": OPEN_DEADLINE})
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self.key(correlation_id),
                UpdateExpression=f"SET #sent = :id REMOVE {remove}",
                ConditionExpression="#holder = :me",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    ":id": {"S": events[0].detail["event_id"]},
                    ":me": {"S": me},
                },
            )
        except aws.client_errors() as exc:
            # Lapsed and taken over (the new holder marks it sent), or a fault: the event is
            # out; at worst it is put once more, with the same event_id.
            log.warning("could not mark the event sent", extra={"kind": kind, "error": str(exc)})
        add_metric("EventsEmitted", len(events))
        log.info(
            "pipeline event emitted",
            extra={"detail_types": [e.detail_type for e in events], "kind": kind},
        )
        return True

    def _release(self, correlation_id: str, kind: str, me: str) -> None:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self.key(correlation_id),
                UpdateExpression="REMOVE #lease, #holder",
                ConditionExpression="#holder = :me",
                ExpressionAttributeNames={"#lease": lease_attr(kind), "#holder": holder_attr(kind)},
                ExpressionAttributeValues={":me": {"S": me}},
            )
        except aws.client_errors():
            log.warning("could not let the emit lease go; it lapses", exc_info=True)


def _never_raising(what: str, emit: Callable[[], bool]) -> bool:
    """Emitting never fails the data path: an error is logged and counted, and the scheduled
    check emits what is still due."""
    try:
        return emit()
    except Exception as exc:
        log.warning(
            f"could not emit {what}; the scheduled check emits it",
            extra={"error": f"{type(exc).__name__}: {exc}"},
        )
        add_metric("EventsFailed")
        return False


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "KIND_DELIVERED",
    "KIND_LANDED",
    "KIND_STUCK",
    "ProgressEvents",
    "delivered_events",
    "landed_events",
    "sent_attr",
    "stuck_events",
]
