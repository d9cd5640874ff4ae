"""The scheduled check of open objects: stuck past the deadline or dead-lettered, and the
backstop for an Object Delivered whose emission failed (issue 22)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.check import ObjectCheck
from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.envelope import Chunk, Record
from sluice.events import DELIVERED, LANDED, QUARANTINED, STUCK, ProgressEvents
from sluice.ledger import LedgerWriter

AT = "2026-12-04T06:00:00.000Z"
T0 = 1_796_000_000.0
SOURCE = "s3://sluice-test-landing/incoming/order/a.jsonl"
ALL = json.dumps({"source": ["sluice.test"]})


def chunk(corr: str, chunk_id: str, n: int) -> Chunk:
    records = tuple(Record(f"r{i}", i, AT, i) for i in range(n))
    return Chunk(
        chunk_id, "order", "s3://sluice-test-landing/incoming/order/a.jsonl", corr, records
    )


def everyone(routes: Any, record_type: str, correlation_id: str) -> dict[str, int]:
    return {"warehouse": sum(routes.values())}


def bus_to_queue(platform: Any) -> str:
    events, sqs = aws.client("events"), aws.sqs()
    bus = platform.names.events_bus
    events.create_event_bus(Name=bus)
    url = sqs.create_queue(QueueName="events-target")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="r", EventBusName=bus, EventPattern=json.dumps({"source": ["sluice.test"]})
    )
    events.put_targets(Rule="r", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
    return str(url)


def received(url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while (
        messages := aws.sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages")
    ):
        found += [json.loads(m["Body"]) for m in messages]
    return found


@pytest.fixture
def clock() -> list[float]:
    return [T0]


def writer(clock: list[float]) -> LedgerWriter:
    events = ProgressEvents(clock=lambda: clock[0])
    return LedgerWriter(clock=lambda: clock[0], route_sinks=everyone, events=events, deadline_s=600)


def delivered_object(w: LedgerWriter, corr: str) -> None:
    w.record_chunk("ingest", chunk(corr, "i", 3), ChunkOutcome(records_in=3, out=2, quarantined=1))
    w.record_done("ingest", chunk(corr, "tail", 0), 3)
    w.record_chunk("cleanse", chunk(corr, "i", 2), ChunkOutcome(records_in=2, out=2))
    w.record_chunk(
        "router", chunk(corr, "i", 2), ChunkOutcome(records_in=2, out=2, routes={"{}": 2})
    )
    w.record_delivery("warehouse", chunk(corr, "w", 2), 2)
    w.record_chunk("consumer-warehouse", chunk(corr, "w", 2), ChunkOutcome(records_in=2, out=2))


def routed_and_delivered(w: LedgerWriter, corr: str) -> None:
    routed = ChunkOutcome(records_in=2, out=2, routes={"{}": 2})
    w.record_chunk("router", chunk(corr, "i", 2), routed)
    w.record_delivery("warehouse", chunk(corr, "w", 2), 2)
    w.record_chunk("consumer-warehouse", chunk(corr, "w", 2), ChunkOutcome(records_in=2, out=2))


def check(clock: list[float]) -> ObjectCheck:
    return ObjectCheck(ProgressEvents(clock=lambda: clock[0]), clock=lambda: clock[0])


def test_the_check_emits_what_a_failed_emission_left_and_only_once(
    platform: Any, clock: list[float]
) -> None:
    w = writer(clock)
    delivered_object(w, "corr-late")  # no bus yet: PutEvents fails, the data path goes on
    url = bus_to_queue(platform)
    assert received(url) == []

    first = check(clock).run()
    second = check(clock).run()

    events = received(url)
    assert sorted(e["detail-type"] for e in events) == [DELIVERED, LANDED, QUARANTINED]
    assert first.delivered == ["corr-late"]
    assert first.landed == ["corr-late"]
    assert second.summary()["delivered"] == 0
    assert second.open == 0  # delivered: out of the open index


def test_an_object_open_past_its_deadline_is_stuck_once_with_what_is_owed(
    platform: Any, clock: list[float]
) -> None:
    url = bus_to_queue(platform)
    w = writer(clock)
    corr = "corr-slow"
    w.record_chunk("ingest", chunk(corr, "i", 2), ChunkOutcome(records_in=2, out=2))
    w.record_done("ingest", chunk(corr, "tail", 0), 2)
    w.record_chunk("cleanse", chunk(corr, "i", 2), ChunkOutcome(records_in=2, out=1, failed=1))
    clock[0] += 599
    assert check(clock).run().stuck == []  # not yet past its 600 s
    clock[0] += 2
    assert check(clock).run().stuck == [corr]
    assert check(clock).run().stuck == []  # once
    (stuck,) = [e for e in received(url) if e["detail-type"] == STUCK]
    assert stuck["detail"]["reason"] == "deadline"
    assert stuck["detail"]["owed"] == {"cleanse": 1, "router": 1}

    # It can still be delivered afterwards: then Object Delivered follows.
    w.record_chunk("cleanse", chunk(corr, "f", 1), ChunkOutcome(records_in=1, out=1), retry_of="i")
    w.record_chunk(
        "router", chunk(corr, "i", 2), ChunkOutcome(records_in=2, out=2, routes={"{}": 2})
    )
    w.record_delivery("warehouse", chunk(corr, "w", 2), 2)
    w.record_chunk("consumer-warehouse", chunk(corr, "w", 2), ChunkOutcome(records_in=2, out=2))
    assert [e["detail-type"] for e in received(url)] == [DELIVERED]


def test_records_in_a_dead_letter_queue_make_their_object_stuck(
    platform: Any, clock: list[float]
) -> None:
    url = bus_to_queue(platform)
    w = writer(clock)
    corr = "corr-dead"
    w.record_chunk("ingest", chunk(corr, "i", 2), ChunkOutcome(records_in=2, out=2))
    w.record_done("ingest", chunk(corr, "tail", 0), 2)
    sqs = aws.sqs()
    dlq = sqs.create_queue(QueueName=platform.names.dlq_of(platform.names.raw_queue))["QueueUrl"]
    attributes: Any = {"correlation_id": {"DataType": "String", "StringValue": corr}}
    sqs.send_message(QueueUrl=dlq, MessageBody="{}", MessageAttributes=attributes)

    result = check(clock).run()

    assert result.dead_lettered == [corr]
    (stuck,) = [e for e in received(url) if e["detail-type"] == STUCK]
    assert stuck["detail"]["reason"] == "dead-lettered"
    assert stuck["detail"]["owed"] == {"cleanse": 2}
    # Read, not taken: the message is still there for `sluice dlq`.
    left = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])
    assert left["Attributes"]["ApproximateNumberOfMessages"] == "1"
    assert check(clock).run().dead_lettered == []


# ---------------------------------------------------------------------- ingest's own part


def progress_of(platform: Any, corr: str) -> dict[str, Any]:
    item = aws.dynamodb().get_item(
        TableName=platform.names.ledger_table,
        Key={"correlation_id": {"S": corr}, "entry": {"S": "object"}},
        ConsistentRead=True,
    )["Item"]
    return {k: int(v["N"]) if "N" in v else v.get("S") for k, v in item.items()}


@pytest.mark.parametrize(
    ("body", "total", "quarantined"),
    [
        (b'{"id": 1}\n{not json\n{"id": 3}\n', 3, 1),  # read to the end
        (b"", 1, 1),  # the whole object quarantined: one item
        (b'{"id": 1}\n\xff\xfe{"id": 2}\n', 2, 1),  # a line that is not UTF-8
    ],
)
def test_ingest_records_how_many_items_the_object_held_and_says_it_landed_once(
    platform: Any, make_ingestor: Any, body: bytes, total: int, quarantined: int
) -> None:
    url = bus_to_queue(platform)
    event = platform.put("incoming/order/a.jsonl", body)
    ingestor = make_ingestor()
    ingestor.handle_s3_event(event)
    ingestor.handle_s3_event(event)  # S3 delivers at least once

    [corr] = {e["correlation_id"] for e in platform.ledger()}
    progress = progress_of(platform, corr)
    assert progress["ingest_total"] == total
    assert progress["read"] == total
    assert progress["owed_ingest"] == 0
    assert progress["quarantined_unreadable"] == quarantined
    landed = [e for e in received(url) if e["detail-type"] == LANDED]
    assert [e["detail"]["correlation_id"] for e in landed] == [corr]
    assert landed[0]["detail"]["key"] == "incoming/order/a.jsonl"
