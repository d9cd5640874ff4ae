"""Ledger: one write per (stage or sink, chunk); the first one's counts stand."""

from __future__ import annotations

from typing import Any

import pytest

from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import ResourceNames
from sluice.envelope import Chunk, Record
from sluice.errors import TransientError
from sluice.ledger import (
    DEFAULT_TTL_SECONDS,
    EXPIRES_AT_ATTR,
    PARTITION_KEY,
    SORT_KEY,
    LedgerWriteError,
    LedgerWriter,
    is_entry,
    split_item,
)

AT = "2026-11-27T06:00:00.000Z"
CHUNK = Chunk(
    "c-1", "order", "s3://landing/k", "corr-1", tuple(Record(f"r-{i}", i, AT, i) for i in range(5))
)


def entries(names: ResourceNames, correlation_id: str = "corr-1") -> dict[str, dict[str, Any]]:
    found = aws.dynamodb().query(
        TableName=names.ledger_table,
        KeyConditionExpression="#c = :c",
        ExpressionAttributeNames={"#c": PARTITION_KEY},
        ExpressionAttributeValues={":c": {"S": correlation_id}},
    )
    return {
        i[SORT_KEY]["S"]: i
        for whole in found["Items"]
        if is_entry(whole[SORT_KEY]["S"])
        for i in split_item(whole)
    }


def numbers(item: dict[str, Any], *names: str) -> dict[str, int]:
    return {n: int(item[n]["N"]) for n in names}


COUNTS = ("records_in", "out", "quarantined", "duplicate", "failed")


def test_chunk_outcome_is_recorded_under_stage_and_chunk(platform: ResourceNames) -> None:
    now = 1_795_759_200.75  # 2026-11-27T06:00:00.750Z
    writer = LedgerWriter(clock=lambda: now)
    writer.record_chunk("cleanse", CHUNK, ChunkOutcome(records_in=5, out=4, quarantined=1))
    item = entries(platform)["cleanse#c-1"]
    assert numbers(item, *COUNTS) == {
        "records_in": 5,
        "out": 4,
        "quarantined": 1,
        "duplicate": 0,
        "failed": 0,
    }
    assert item["stage"] == {"S": "cleanse"}
    assert item["chunk_id"] == {"S": "c-1"}
    assert item["type"] == {"S": "order"}
    assert item["recorded_at"]["S"] == "2026-11-27T06:00:00.750Z"
    assert int(item[EXPIRES_AT_ATTR]["N"]) == 1_795_759_200 + DEFAULT_TTL_SECONDS


def test_second_write_of_an_entry_leaves_the_first_counts(platform: ResourceNames) -> None:
    writer = LedgerWriter()
    writer.record_chunk("cleanse", CHUNK, ChunkOutcome(records_in=5, out=5))
    first = entries(platform)["cleanse#c-1"]
    writer.record_chunk("cleanse", CHUNK, ChunkOutcome(records_in=5, out=3, quarantined=2))
    assert entries(platform)["cleanse#c-1"] == first


def test_sink_deliveries_are_recorded_apart_from_stages(platform: ResourceNames) -> None:
    writer = LedgerWriter()
    writer.record_chunk("router", CHUNK, ChunkOutcome(records_in=5, out=5))
    writer.record_delivery("warehouse", CHUNK, 5)
    writer.record_delivery("warehouse", CHUNK, 2)  # a retry: ignored
    found = entries(platform)
    assert set(found) == {"router#c-1", "sink:warehouse#c-1"}
    sink = found["sink:warehouse#c-1"]
    assert numbers(sink, "records_in", "delivered") == {"records_in": 5, "delivered": 5}
    assert sink["sink"] == {"S": "warehouse"}


def test_ledger_write_failure_is_transient(platform: ResourceNames) -> None:
    with pytest.raises(LedgerWriteError) as raised:
        LedgerWriter(table_name="no-such-table").record_chunk("cleanse", CHUNK, ChunkOutcome())
    assert isinstance(raised.value, TransientError)


def test_one_write_per_chunk(platform: ResourceNames, dynamodb_calls: Any) -> None:
    LedgerWriter().record_chunk("cleanse", CHUNK, ChunkOutcome(records_in=5, out=5))
    # The entry and the object's progress in one transaction; the progress read back (is the
    # object complete?).
    assert dynamodb_calls.operations == ["TransactWriteItems", "GetItem"]


def test_a_ledger_write_whose_answer_was_lost_stands_once_with_its_counts(
    platform: ResourceNames,
) -> None:
    from support.calls import lose_answers

    with lose_answers(aws.dynamodb(), "TransactWriteItems") as lost:
        LedgerWriter().record_chunk("cleanse", CHUNK, ChunkOutcome(records_in=5, out=5))

    assert lost.lost == ["TransactWriteItems"]  # the retry met the written entry: not an error
    assert list(entries(platform)) == ["cleanse#c-1"]
    assert numbers(entries(platform)["cleanse#c-1"], "records_in", "out") == {
        "records_in": 5,
        "out": 5,
    }
