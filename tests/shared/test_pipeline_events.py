"""Per-object progress and its events: each contribution once, completion never early,
each event once (issue 22)."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import ResourceNames
from sluice.envelope import Chunk, Record
from sluice.events import (
    DELIVERED,
    KIND_DELIVERED,
    LANDED,
    QUARANTINED,
    EventBus,
    ProgressEvents,
    delivered_events,
    event_id,
    lease_attr,
)
from sluice.ledger import LedgerWriteError, LedgerWriter
from sluice.progress import PROGRESS_ENTRY, Progress

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "events"
AT = "2026-12-04T06:00:00.000Z"
SOURCE = "s3://sluice-test-landing/incoming/order/a.jsonl"
HIGH, LOW = '{"priority":"high"}', '{"priority":"low"}'


class RecordingBus(EventBus):
    """The bus, with every put kept (and optionally something run during the put)."""

    def __init__(self, during: Callable[[], None] | None = None) -> None:
        super().__init__(client=object(), bus_name="bus", source="sluice.test")
        self.puts: list[list[Any]] = []
        self.during = during

    def put(self, events: Iterable[Any]) -> None:
        batch = list(events)
        if self.during is not None:
            during, self.during = self.during, None
            during()
        self.puts.append(batch)

    @property
    def detail_types(self) -> list[str]:
        return [e.detail_type for batch in self.puts for e in batch]


def chunk(corr: str, chunk_id: str, n: int = 0) -> Chunk:
    return Chunk(
        chunk_id, "order", SOURCE, corr, tuple(Record(f"r{i}", i, AT, i) for i in range(n))
    )


def routed(routes: Any, record_type: str, correlation_id: str) -> dict[str, int]:
    """Warehouse takes every record, alerts only the high-priority ones."""
    return {
        "warehouse": sum(routes.values()),
        **({"alerts": routes[HIGH]} if routes.get(HIGH) else {}),
    }


def writer(bus: RecordingBus, clock: Callable[[], float] | None = None) -> LedgerWriter:
    kwargs: dict[str, Any] = {"clock": clock} if clock else {}
    events = ProgressEvents(bus=bus, **kwargs)
    return LedgerWriter(route_sinks=routed, events=events, deadline_s=600, **kwargs)


# A small object: 5 items read; ingest quarantines 1, cleanse 1; the router sends 2 high and
# 1 low; warehouse gets 3 (quarantines 1), alerts gets 2.
def entries_of(corr: str) -> dict[str, Callable[[LedgerWriter], None]]:
    return {
        "ingest": lambda w: w.record_chunk(
            "ingest", chunk(corr, "i1", 4), ChunkOutcome(records_in=5, out=4, quarantined=1)
        ),
        "ingest-done": lambda w: w.record_done("ingest", chunk(corr, "tail"), 5),
        "cleanse": lambda w: w.record_chunk(
            "cleanse", chunk(corr, "i1", 4), ChunkOutcome(records_in=4, out=3, quarantined=1)
        ),
        "router": lambda w: w.record_chunk(
            "router",
            chunk(corr, "i1", 3),
            ChunkOutcome(records_in=3, out=3, routes={HIGH: 2, LOW: 1}),
        ),
        "consumer-warehouse-high": lambda w: w.record_chunk(
            "consumer-warehouse",
            chunk(corr, "rh", 2),
            ChunkOutcome(records_in=2, out=1, quarantined=1),
        ),
        "sink-warehouse-high": lambda w: w.record_delivery("warehouse", chunk(corr, "rh", 2), 1),
        "consumer-warehouse-low": lambda w: w.record_chunk(
            "consumer-warehouse", chunk(corr, "rl", 1), ChunkOutcome(records_in=1, out=1)
        ),
        "sink-warehouse-low": lambda w: w.record_delivery("warehouse", chunk(corr, "rl", 1), 1),
        "consumer-alerts": lambda w: w.record_chunk(
            "consumer-alerts", chunk(corr, "rh", 2), ChunkOutcome(records_in=2, out=2)
        ),
        "sink-alerts": lambda w: w.record_delivery("alerts", chunk(corr, "rh", 2), 2),
    }


def progress_of(corr: str) -> Progress:
    item = aws.dynamodb().get_item(
        TableName=ResourceNames(stage="test").ledger_table,
        Key={"correlation_id": {"S": corr}, "entry": {"S": PROGRESS_ENTRY}},
        ConsistentRead=True,
    )["Item"]
    return Progress.from_item(item)


def orders() -> list[tuple[str, ...]]:
    names = tuple(entries_of("x"))
    chosen = [
        names,  # the pipeline's own order, ingest done after ingest's entries
        names[::-1],  # sinks first, ingest's done marker before its last entry
        ("ingest-done", *(n for n in names if n != "ingest-done")),
        (*(n for n in names if n != "ingest-done"), "ingest-done"),  # done last
        (
            "sink-alerts",
            "consumer-alerts",
            "router",
            "cleanse",
            *names[4:8],
            "ingest-done",
            "ingest",
        ),
    ]
    every = list(itertools.permutations(names))
    chosen += random.Random(22).sample(every, 15)
    return chosen


def test_completion_comes_with_the_last_entry_in_every_arrival_order(
    platform: ResourceNames,
) -> None:
    for n, order in enumerate(orders()):
        corr = f"corr-order-{n}"
        bus = RecordingBus()
        w = writer(bus)
        steps = entries_of(corr)
        for i, name in enumerate(order):
            steps[name](w)
            last = i == len(order) - 1
            assert progress_of(corr).complete is last, (order, name, progress_of(corr).owed)
            assert bus.detail_types == ([DELIVERED, QUARANTINED] if last else []), (order, name)


def test_a_retried_entry_adds_its_contribution_once(platform: ResourceNames) -> None:
    from support.calls import lose_answers

    bus = RecordingBus()
    w = writer(bus)
    steps = entries_of("corr-retry")
    steps["ingest"](w)
    before = dict(progress_of("corr-retry").counters)
    steps["ingest"](w)  # a redelivered chunk writes its entry again
    w.record_chunk(  # a retry that counted differently: the first entry stands
        "ingest", chunk("corr-retry", "i1", 4), ChunkOutcome(records_in=5, out=5)
    )
    with lose_answers(aws.dynamodb(), "TransactWriteItems") as lost:
        steps["ingest-done"](w)  # the answer lost: botocore sends the transaction again
    assert lost.lost == ["TransactWriteItems"]
    after = progress_of("corr-retry").counters
    assert {k: v for k, v in after.items() if k != "ingest_total" and k != "owed_ingest"} == {
        k: v for k, v in before.items() if k != "owed_ingest"
    }
    assert after["ingest_total"] == 5
    assert after["owed_ingest"] == 5 - 5  # total 5 owed, 4 out + 1 quarantined settled
    assert after["owed_cleanse"] == 4


def test_the_whole_object_emits_delivered_once_even_if_every_entry_is_written_twice(
    platform: ResourceNames,
) -> None:
    bus = RecordingBus()
    w = writer(bus)
    steps = entries_of("corr-twice")
    for step in [*steps.values(), *steps.values()]:
        step(w)
    assert bus.detail_types == [DELIVERED, QUARANTINED]
    assert progress_of("corr-twice").complete


def test_two_writers_completing_together_emit_once(platform: ResourceNames) -> None:
    corr = "corr-race"
    second_bus = RecordingBus()
    second = ProgressEvents(bus=second_bus)
    answers: list[bool] = []
    # While the first writer puts its events, the second one read the item complete and
    # unsent, and tries too: the first one's lease stops it.
    first_bus = RecordingBus(during=lambda: answers.append(second.after_write(corr)))
    w = writer(first_bus)
    for step in entries_of(corr).values():
        step(w)
    assert first_bus.detail_types == [DELIVERED, QUARANTINED]
    assert answers == [False]
    assert second_bus.puts == []
    # And afterwards it is sent: nobody emits again.
    assert second.after_write(corr) is False
    assert second.emit_once(corr, KIND_DELIVERED, delivered_events) is False


def test_a_lease_left_by_a_crashed_writer_is_taken_over_once_it_lapses(
    platform: ResourceNames,
) -> None:
    corr = "corr-crash"
    now = [1_796_000_000.0]
    quiet = RecordingBus()
    w = LedgerWriter(route_sinks=routed, events=ProgressEvents(bus=quiet, clock=lambda: now[0]))
    steps = list(entries_of(corr).values())
    # The last entry's writer took the lease and died before PutEvents.
    for step in steps[:-1]:
        step(w)
    aws.dynamodb().update_item(
        TableName=ResourceNames(stage="test").ledger_table,
        Key={"correlation_id": {"S": corr}, "entry": {"S": PROGRESS_ENTRY}},
        UpdateExpression="SET #l = :now",
        ExpressionAttributeNames={"#l": lease_attr(KIND_DELIVERED)},
        ExpressionAttributeValues={":now": {"N": str(int(now[0] * 1000))}},
    )
    steps[-1](w)
    assert quiet.puts == []  # the dead writer's lease is live
    now[0] += 30
    assert w.events.after_write(corr) is False
    now[0] += 31  # past the 60 s lease
    assert w.events.after_write(corr) is True
    assert quiet.detail_types == [DELIVERED, QUARANTINED]
    assert w.events.after_write(corr) is False


def test_a_lease_write_whose_answer_was_lost_still_emits_once(platform: ResourceNames) -> None:
    from support.calls import lose_answers

    bus = RecordingBus()
    w = writer(bus)
    steps = list(entries_of("corr-lost-lease").values())
    for step in steps[:-1]:
        step(w)
    # The lease is taken, its answer lost: the SDK's retry meets its own lease.
    with lose_answers(aws.dynamodb(), "UpdateItem") as lost:
        steps[-1](w)
    assert lost.lost == ["UpdateItem"]
    assert bus.detail_types == [DELIVERED, QUARANTINED]
    assert progress_of("corr-lost-lease").has("delivered_sent")


def test_records_quarantined_counts_them_by_reason(platform: ResourceNames) -> None:
    corr = "corr-quarantine"
    bus = RecordingBus()
    w = writer(bus)
    for step in entries_of(corr).values():
        step(w)
    delivered, quarantined = bus.puts[0]
    assert delivered.detail["counts"] == {
        "read": 5,
        "records": 5,
        "quarantined": 3,
        "delivered": {"alerts": 2, "warehouse": 2},
    }
    assert quarantined.detail["counts"] == {
        "quarantined": 3,
        "by_reason": {"invalid": 1, "rejected": 1, "unreadable": 1},
    }
    assert delivered.detail["event_id"] == event_id(corr, DELIVERED)
    assert quarantined.detail["event_id"] == event_id(corr, QUARANTINED)
    assert (delivered.detail["bucket"], delivered.detail["key"]) == (
        "sluice-test-landing",
        "incoming/order/a.jsonl",
    )


def through_router(w: LedgerWriter, corr: str, n: int) -> None:
    """An object of `n` good records, ingested, cleansed and routed (all low priority)."""
    w.record_chunk("ingest", chunk(corr, "i1", n), ChunkOutcome(records_in=n, out=n))
    w.record_done("ingest", chunk(corr, "tail"), n)
    w.record_chunk("cleanse", chunk(corr, "i1", n), ChunkOutcome(records_in=n, out=n))
    w.record_chunk(
        "router", chunk(corr, "i1", n), ChunkOutcome(records_in=n, out=n, routes={LOW: n})
    )


def test_an_object_without_quarantined_records_emits_delivered_alone(
    platform: ResourceNames,
) -> None:
    corr = "corr-clean"
    bus = RecordingBus()
    w = writer(bus)
    through_router(w, corr, 2)
    assert bus.puts == []
    w.record_delivery("warehouse", chunk(corr, "rl", 2), 2)
    assert bus.puts == []  # the consumer's own entry is not in yet
    w.record_chunk("consumer-warehouse", chunk(corr, "rl", 2), ChunkOutcome(records_in=2, out=2))
    assert bus.detail_types == [DELIVERED]


def test_failed_records_hold_the_object_open_until_their_retry_settles_them(
    platform: ResourceNames,
) -> None:
    corr = "corr-failed"
    bus = RecordingBus()
    w = writer(bus)
    through_router(w, corr, 2)
    w.record_delivery("warehouse", chunk(corr, "rl", 2), 1)
    w.record_chunk(
        "consumer-warehouse", chunk(corr, "rl", 2), ChunkOutcome(records_in=2, out=1, failed=1)
    )
    assert bus.puts == []
    assert progress_of(corr).owed == {"consumer-warehouse": 1}
    retry = chunk(corr, "rl-failed", 1)
    w.record_delivery("warehouse", retry, 1, retry_of="rl")
    w.record_chunk("consumer-warehouse", retry, ChunkOutcome(records_in=1, out=1), retry_of="rl")
    assert bus.detail_types == [DELIVERED]


def test_routes_without_a_consumer_lookup_never_complete(platform: ResourceNames) -> None:
    corr = "corr-unknown-routes"
    bus = RecordingBus()
    w = LedgerWriter(events=ProgressEvents(bus=bus))
    w.record_chunk("ingest", chunk(corr, "i1", 1), ChunkOutcome(records_in=1, out=1))
    w.record_done("ingest", chunk(corr, "tail"), 1)
    w.record_chunk("cleanse", chunk(corr, "i1", 1), ChunkOutcome(records_in=1, out=1))
    w.record_chunk(
        "router", chunk(corr, "i1", 1), ChunkOutcome(records_in=1, out=1, routes={LOW: 1})
    )
    w.record_delivery("warehouse", chunk(corr, "rl", 1), 1)
    w.record_chunk("consumer-warehouse", chunk(corr, "rl", 1), ChunkOutcome(records_in=1, out=1))
    assert bus.puts == []
    assert progress_of(corr).owed == {"routing": 1, "consumer-warehouse": -1}


class ConflictingClient:
    """A DynamoDB client whose first `conflicts` transactions are cancelled by a conflict."""

    def __init__(self, conflicts: int) -> None:
        self.real = aws.dynamodb()
        self.conflicts = conflicts
        self.transactions = 0

    def transact_write_items(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        self.transactions += 1
        if self.conflicts:
            self.conflicts -= 1
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                    "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
                },
                "TransactWriteItems",
            )
        return self.real.transact_write_items(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_transaction_conflict_is_tried_again_then_reported_as_transient(
    platform: ResourceNames,
) -> None:
    client = ConflictingClient(conflicts=2)
    events = ProgressEvents(client=client, bus=RecordingBus())  # type: ignore[arg-type]
    w = LedgerWriter(client=client, events=events, sleep=lambda s: None)  # type: ignore[arg-type]
    w.record_chunk("cleanse", chunk("corr-conflict", "c1", 2), ChunkOutcome(records_in=2, out=2))
    assert client.transactions == 3
    assert progress_of("corr-conflict").counters["owed_router"] == 2

    always = ConflictingClient(conflicts=100)
    w = LedgerWriter(client=always, events=events, sleep=lambda s: None)  # type: ignore[arg-type]
    with pytest.raises(LedgerWriteError):
        w.record_chunk(
            "cleanse", chunk("corr-conflict-2", "c1", 1), ChunkOutcome(records_in=1, out=1)
        )
    assert always.transactions == 5


# ---------------------------------------------------------------------- on a real (moto) bus


@pytest.fixture
def bus_queue(platform: ResourceNames) -> str:
    """The stage's bus with a rule sending sluice.test events to an SQS queue (its URL)."""
    events, sqs = aws.client("events"), aws.sqs()
    events.create_event_bus(Name=platform.events_bus)
    url = sqs.create_queue(QueueName="events-target")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="all-sluice-events",
        EventBusName=platform.events_bus,
        EventPattern=json.dumps({"source": ["sluice.test"]}),
    )
    events.put_targets(
        Rule="all-sluice-events",
        EventBusName=platform.events_bus,
        Targets=[{"Id": "queue", "Arn": arn}],
    )
    return str(url)


def received(url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        got = aws.sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        messages = got.get("Messages") or []
        if not messages:
            return found
        found += [json.loads(m["Body"]) for m in messages]


def validators() -> dict[str, Callable[[Any], Any]]:
    found = {}
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        found[schema["title"]] = fastjsonschema.compile(schema)
    return found


def test_events_reach_a_rule_on_the_stage_bus_and_match_their_schemas(
    bus_queue: str,
) -> None:
    corr = "corr-bus"
    w = LedgerWriter(route_sinks=routed)
    assert w.events.landed(corr, SOURCE, "order") is True
    assert w.events.landed(corr, SOURCE, "order") is False  # once per object
    for step in entries_of(corr).values():
        step(w)
    events = received(bus_queue)
    assert [e["detail-type"] for e in events] == [LANDED, DELIVERED, QUARANTINED]
    assert {e["source"] for e in events} == {"sluice.test"}
    check = validators()
    assert set(check) == {LANDED, DELIVERED, QUARANTINED, "Object Stuck"}
    for e in events:
        check[e["detail-type"]](e["detail"])
        assert e["detail"]["correlation_id"] == corr
    assert events[1]["detail"]["landed_at"] == events[0]["detail"]["landed_at"]


def test_an_emission_that_fails_does_not_fail_the_ledger_write(platform: ResourceNames) -> None:
    corr = "corr-no-bus"  # no bus in this account: PutEvents fails
    w = LedgerWriter(route_sinks=routed)
    for step in entries_of(corr).values():
        step(w)
    progress = progress_of(corr)
    assert progress.complete
    assert not progress.has("delivered_sent")
    assert not progress.has(lease_attr(KIND_DELIVERED))  # let go, for the check to retry
