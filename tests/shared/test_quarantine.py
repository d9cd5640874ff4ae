"""Quarantine: one JSON object per rejection, under a key that a retry reproduces."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from support.events import sqs_record

from sluice import aws
from sluice.batch import SQSMessage
from sluice.config import ResourceNames
from sluice.envelope import Chunk, Record
from sluice.errors import MalformedEnvelopeError, PermanentError, TransientError
from sluice.quarantine import Quarantine, QuarantineWriteError, record_key

INGESTED_AT = "2026-11-26T23:59:59.500Z"
RECORD = Record("r-1", 0, INGESTED_AT, {"name": "Zoë Ångström", "city": "東京", "emoji": "🚚"})
CHUNK = Chunk("c-1", "order", "s3://landing/in/ä.jsonl", "corr-1", (RECORD,))


def read(bucket: str, key: str) -> tuple[dict[str, Any], str]:
    obj = aws.s3().get_object(Bucket=bucket, Key=key)
    return json.loads(obj["Body"].read().decode("utf-8")), obj["ContentType"]


def keys(bucket: str) -> list[str]:
    listed = aws.s3().list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_rejected_record_round_trips_with_non_ascii(platform: ResourceNames) -> None:
    Quarantine("cleanse").reject_record(RECORD, CHUNK, PermanentError("name: not a number ✗"))
    key = "cleanse/order/2026-11-26/r-1.json"
    assert keys(platform.quarantine_bucket) == [key]
    doc, content_type = read(platform.quarantine_bucket, key)
    assert content_type == "application/json"
    assert doc["stage"] == "cleanse"
    assert doc["reason"] == "name: not a number ✗"
    assert doc["error_class"] == "PermanentError"
    assert doc["record_type"] == "order"
    assert doc["source"] == "s3://landing/in/ä.jsonl"
    assert doc["correlation_id"] == "corr-1"
    assert doc["chunk_id"] == "c-1"
    assert doc["record_id"] == "r-1"
    assert doc["record"] == RECORD.to_wire()
    assert doc["quarantined_at"].endswith("Z")


def test_non_ascii_is_stored_as_utf8_not_escaped(platform: ResourceNames) -> None:
    Quarantine("cleanse").reject_record(RECORD, CHUNK, PermanentError("bad"))
    body = (
        aws.s3()
        .get_object(
            Bucket=platform.quarantine_bucket,
            Key=record_key("cleanse", "order", INGESTED_AT, "r-1"),
        )["Body"]
        .read()
    )
    assert "東京".encode() in body
    assert b"\\u" not in body


def test_same_rejection_twice_writes_one_object(platform: ResourceNames) -> None:
    times = iter(["2026-11-27T01:00:00.000Z", "2026-11-28T05:00:00.000Z"])
    quarantine = Quarantine("cleanse", clock=lambda: next(times))
    quarantine.reject_record(RECORD, CHUNK, PermanentError("bad"))
    quarantine.reject_record(RECORD, CHUNK, PermanentError("bad"))
    # The date in the key is the record's ingestion date, not the day it was rejected.
    assert keys(platform.quarantine_bucket) == ["cleanse/order/2026-11-26/r-1.json"]


def test_undecodable_message_is_kept_whole_under_its_sent_date(platform: ResourceNames) -> None:
    raw = sqs_record("{not json, ünïcode", "m-42")
    raw["messageAttributes"] = {"record_type": {"stringValue": "order", "dataType": "String"}}
    sent = datetime(2026, 11, 26, 23, 59, 59, tzinfo=UTC)
    raw["attributes"]["SentTimestamp"] = str(int(sent.timestamp() * 1000))
    message = SQSMessage.from_event_record(raw)
    Quarantine("router").reject_message(message, MalformedEnvelopeError("message body is not JSON"))
    key = "router/_messages/2026-11-26/m-42.json"
    assert keys(platform.quarantine_bucket) == [key]
    doc, _ = read(platform.quarantine_bucket, key)
    assert doc["raw"] == "{not json, ünïcode"
    assert doc["message_id"] == "m-42"
    assert doc["error_class"] == "MalformedEnvelopeError"
    assert doc["message_attributes"]["record_type"]["stringValue"] == "order"


def test_raw_line_that_never_parsed_is_kept_exactly(platform: ResourceNames) -> None:
    line = b'{"id": 7, "name": "caf\xe9"'  # Latin-1, truncated: not UTF-8, not JSON
    key = Quarantine("ingest").reject_raw(
        record_type="order",
        source="s3://landing/in/orders.jsonl",
        correlation_id="corr-1",
        raw=line,
        reason="line 7: not JSON",
        error_class="MalformedRecordError",
        ref_id="r-7",
        ingested_at=INGESTED_AT,
    )
    assert key == "ingest/order/2026-11-26/r-7.json"
    doc, _ = read(platform.quarantine_bucket, key)
    assert base64.b64decode(doc["raw_base64"]) == line
    assert doc["raw"].startswith('{"id": 7, "name": "caf')
    assert doc["reason"] == "line 7: not JSON"
    assert doc["error_class"] == "MalformedRecordError"
    assert doc["correlation_id"] == "corr-1"


def test_claim_checked_record_keeps_a_copy_of_its_payload(platform: ResourceNames) -> None:
    aws.s3().put_object(
        Bucket=platform.payload_bucket, Key="payloads/r-1/abc.json", Body='{"big":"ü"}'.encode()
    )
    ref = f"s3://{platform.payload_bucket}/payloads/r-1/abc.json"
    record = Record("r-1", 0, INGESTED_AT, None, ref)
    Quarantine("cleanse").reject_record(record, CHUNK, PermanentError("bad"))
    doc, _ = read(platform.quarantine_bucket, "cleanse/order/2026-11-26/r-1.json")
    assert doc["record"]["payload_ref"] == ref
    copy = doc["payload_copy"].removeprefix(f"s3://{platform.quarantine_bucket}/")
    assert copy == "cleanse/order/2026-11-26/r-1.payload.json"
    body = aws.s3().get_object(Bucket=platform.quarantine_bucket, Key=copy)["Body"].read()
    assert json.loads(body) == {"big": "ü"}


def test_unwritable_quarantine_is_a_transient_error(platform: ResourceNames) -> None:
    with pytest.raises(QuarantineWriteError) as raised:
        Quarantine("cleanse", bucket="no-such-bucket").reject_record(
            RECORD, CHUNK, PermanentError("bad")
        )
    assert isinstance(raised.value, TransientError)
