"""Happy paths: every format, plain and gzipped, lands its records in the raw queue."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from ingest_support import Platform

from chalicelib.service import Ingestor
from sluice.envelope import chunk_id, record_id

ORDERS = [
    {"order_id": "o-1", "amount": 12.5, "note": "café"},
    {"order_id": "o-2", "amount": 3, "note": None},
    {"order_id": "o-3", "amount": 7.25, "note": "a,b"},
]


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def json_array(records: list[dict[str, Any]]) -> bytes:
    return json.dumps(records, ensure_ascii=False, indent=2).encode()


CSV = 'order_id,amount,note\r\no-1,12.5,café\r\no-2,3,\r\no-3,7.25,"a,b"\r\n'.encode()
CSV_ROWS = [
    {"order_id": "o-1", "amount": "12.5", "note": "café"},
    {"order_id": "o-2", "amount": "3", "note": ""},
    {"order_id": "o-3", "amount": "7.25", "note": "a,b"},
]

CASES = [
    ("orders.jsonl", jsonl(ORDERS), ORDERS),
    ("orders.ndjson", jsonl(ORDERS), ORDERS),
    ("orders.json", json_array(ORDERS), ORDERS),
    ("orders.csv", CSV, CSV_ROWS),
]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(("name", "body", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_format_sends_exactly_its_records_to_the_raw_queue(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    name: str,
    body: bytes,
    expected: list[dict[str, Any]],
    gz: bool,
) -> None:
    key = f"incoming/order/2026/11/{name}" + (".gz" if gz else "")
    event = platform.put(key, body, gz=gz)
    etag = event["Records"][0]["s3"]["object"]["eTag"]

    make_ingestor().handle_s3_event(event)

    chunks = platform.raw_chunks()
    source = f"s3://{platform.names.landing_bucket}/{key}"
    assert [c.chunk_id for c in chunks] == [chunk_id(source, etag, 0)]
    chunk = chunks[0]
    assert (chunk.type, chunk.source) == ("order", source)
    assert [r.payload for r in chunk.records] == expected
    assert [r.id for r in chunk.records] == [record_id(source, etag, i) for i in range(3)]
    assert [r.ordinal for r in chunk.records] == [0, 1, 2]
    assert platform.quarantined() == []
    assert platform.ledger_totals() == {"records_in": 3, "out": 3, "quarantined": 0}


def test_message_attributes_carry_type_correlation_id_and_chunk_id(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/customer/c.jsonl", b'{"customer_id": "c-1"}\n')
    make_ingestor().handle_s3_event(event)

    from sluice import aws

    message = aws.sqs().receive_message(QueueUrl=platform.raw_url, MessageAttributeNames=["All"])[
        "Messages"
    ][0]
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    body = json.loads(message["Body"])
    assert attributes == {
        "record_type": "customer",
        "correlation_id": body["correlation_id"],
        "chunk_id": body["chunk_id"],
    }
    assert body["correlation_id"].startswith("ingest-")


def test_the_same_object_version_always_gets_the_same_ids(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/a.jsonl", jsonl(ORDERS))
    make_ingestor().handle_s3_event(event)
    first = platform.raw_chunks()
    # A fresh idempotency table: the object is read again from scratch.
    from sluice import aws

    table = platform.names.idempotency_table
    for item in aws.dynamodb().scan(TableName=table)["Items"]:
        aws.dynamodb().delete_item(TableName=table, Key={"pk": item["pk"]})
    make_ingestor().handle_s3_event(event)
    second = platform.raw_chunks()

    assert [c.encode() for c in first] == [c.encode() for c in second]


def test_records_are_cut_into_chunks_of_the_configured_size(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_CHUNK_MAX_RECORDS", "4")
    records = [{"order_id": f"o-{i}"} for i in range(10)]
    event = platform.put("incoming/order/ten.jsonl", jsonl(records))

    make_ingestor().handle_s3_event(event)

    chunks = sorted(platform.raw_chunks(), key=lambda c: c.records[0].ordinal)
    assert [len(c.records) for c in chunks] == [4, 4, 2]
    assert [r.payload for c in chunks for r in c.records] == records
    assert len({c.correlation_id for c in chunks}) == 1
    assert platform.ledger_totals() == {"records_in": 10, "out": 10, "quarantined": 0}


def test_a_utf8_bom_at_the_start_is_not_part_of_the_first_record(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    body = b"\xef\xbb\xbfid,name\nc-1,Ann\n"
    event = platform.put("incoming/customer/bom.csv", body)

    make_ingestor().handle_s3_event(event)

    [chunk] = platform.raw_chunks()
    assert [r.payload for r in chunk.records] == [{"id": "c-1", "name": "Ann"}]


def test_a_multi_member_gzip_object_is_read_to_its_end(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    import gzip

    body = gzip.compress(jsonl(ORDERS[:2])) + gzip.compress(jsonl(ORDERS[2:]))
    event = platform.put("incoming/order/members.jsonl.gz", body)

    make_ingestor().handle_s3_event(event)

    [chunk] = platform.raw_chunks()
    assert [r.payload for r in chunk.records] == ORDERS
