"""An object too large for one invocation continues from a checkpoint: nothing lost, nothing
doubled, and exactly the chunks an unsplit run cuts."""

from __future__ import annotations

import codecs
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ingest_support import FakeContext, Platform
from support.events import sqs_event

from chalicelib.checkpoint import Checkpoint
from chalicelib.service import Ingestor
from sluice import aws
from sluice.observability.tracing import invocation_span, set_tracer


def _jsonl(n: int) -> bytes:
    lines = []
    for i in range(n):
        lines.append("{broken" if i % 17 == 5 else json.dumps({"id": i, "name": f"n-{i}-é"}))
    return ("\n".join(lines) + "\n").encode()


def _json(n: int) -> bytes:
    return json.dumps([{"id": i, "name": f"n-{i}-é"} for i in range(n)], indent=1).encode()


def _csv(n: int) -> bytes:
    rows = ["id,name"]
    for i in range(n):
        rows.append(f"{i},x,y" if i % 13 == 4 else f'{i},"n-{i}, é"')
    return ("\r\n".join(rows) + "\r\n").encode()


def _bom(encoding: str, data: bytes) -> bytes:
    """`data` (UTF-8) re-encoded as UTF-16 or UTF-32 after its byte-order mark."""
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}
    bom |= {"utf-32-le": codecs.BOM_UTF32_LE, "utf-32-be": codecs.BOM_UTF32_BE}
    return bom[encoding] + data.decode("utf-8").encode(encoding)


CASES = {
    "jsonl": ("incoming/order/big.jsonl", _jsonl(83), False),
    "jsonl-gzip": ("incoming/order/big.jsonl.gz", _jsonl(83), True),
    "json": ("incoming/order/big.json", _json(61), False),
    "json-gzip": ("incoming/order/big.json.gz", _json(61), True),
    "csv": ("incoming/customer/big.csv", _csv(71), False),
    "csv-gzip": ("incoming/customer/big.csv.gz", _csv(71), True),
    # Offsets in a derived stream: gzip told by its bytes only, UTF-16/32 re-encoded.
    "jsonl-gzip-bytes": ("incoming/order/packed.jsonl", _jsonl(83), True),
    "jsonl-utf16": ("incoming/order/wide.jsonl", _bom("utf-16-le", _jsonl(83)), False),
    "json-utf32-gzip": ("incoming/order/wide.json.gz", _bom("utf-32-be", _json(61)), True),
    "csv-utf16": ("incoming/customer/wide.csv", _bom("utf-16-be", _csv(71)), False),
}


def _forget(platform: Platform) -> None:
    """Empty the idempotency and ledger tables, so the same object can be read again."""
    ddb = aws.dynamodb()
    for table, keys in (
        (platform.names.idempotency_table, ("pk",)),
        (platform.names.ledger_table, ("correlation_id", "entry")),
    ):
        for item in ddb.scan(TableName=table)["Items"]:
            ddb.delete_item(TableName=table, Key={k: item[k] for k in keys})


def _run_split(platform: Platform, ingestor: Ingestor, event: dict[str, Any], asks: int) -> int:
    """Ingest with a short budget, then run continuations until none is left; hand-offs."""
    ingestor.handle_s3_event(event, FakeContext(calls=asks).get_remaining_time_in_millis)
    handoffs = 0
    while messages := platform.continuations():
        for message in messages:
            handoffs += 1
            ctx = FakeContext(calls=asks)
            response = ingestor.handle_continue(
                sqs_event(message["Body"], prefix=f"h{handoffs}"), ctx.get_remaining_time_in_millis
            )
            assert response == {"batchItemFailures": []}
    return handoffs


@pytest.mark.parametrize("case", list(CASES))
def test_a_split_run_sends_exactly_the_chunks_of_an_unsplit_run(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    monkeypatch.setenv("SLUICE_CHUNK_MAX_RECORDS", "5")
    key, body, gz = CASES[case]
    event = platform.put(key, body, gz=gz)
    ingestor = make_ingestor(read_block_bytes=256)

    ingestor.handle_s3_event(event)
    unsplit = {c.chunk_id: c.encode() for c in platform.raw_chunks()}
    unsplit_ledger = platform.ledger_totals()
    unsplit_quarantine = {d["ref_id"]: d["reason"] for d in platform.quarantined()}
    _forget(platform)

    handoffs = _run_split(platform, make_ingestor(read_block_bytes=256), event, asks=3)
    split = [c for c in platform.raw_chunks()]

    assert handoffs >= 3
    assert len(split) == len({c.chunk_id for c in split})  # nothing doubled
    assert {c.chunk_id: c.encode() for c in split} == unsplit  # same boundaries, same ids
    assert platform.ledger_totals() == unsplit_ledger
    # Same entries, and the same reasons: line numbers go on across hand-offs.
    assert {d["ref_id"]: d["reason"] for d in platform.quarantined()} == unsplit_quarantine
    records = sorted(r.ordinal for c in split for r in c.records)
    assert records == sorted(set(records))


def test_a_redelivered_continuation_is_run_once(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_CHUNK_MAX_RECORDS", "5")
    event = platform.put("incoming/order/again.jsonl", _jsonl(40))
    ingestor = make_ingestor()
    ingestor.handle_s3_event(event, FakeContext(calls=2).get_remaining_time_in_millis)
    first = platform.raw_chunks()
    [message] = platform.continuations()
    checkpoint = Checkpoint.decode(message["Body"])
    assert checkpoint.next_chunk == len(first) == 2

    ingestor.handle_continue(sqs_event(message["Body"], prefix="a"))
    rest = platform.raw_chunks()
    ingestor.handle_continue(sqs_event(message["Body"], prefix="b"))

    assert platform.raw_chunks() == []
    assert len(first) + len(rest) == 8


def test_a_handed_off_object_counts_as_ingested_for_a_duplicate_notification(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_CHUNK_MAX_RECORDS", "5")
    event = platform.put("incoming/order/handed.jsonl", _jsonl(40))
    ingestor = make_ingestor()
    ingestor.handle_s3_event(event, FakeContext(calls=2).get_remaining_time_in_millis)
    platform.raw_chunks()

    assert ingestor.handle_s3_event(event) == {"objects": 1, "duplicates": 1}
    assert platform.raw_chunks() == []
    assert len(platform.continuations()) == 1


def test_a_follow_up_always_sends_at_least_one_chunk_before_handing_off(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_CHUNK_MAX_RECORDS", "5")
    event = platform.put("incoming/order/starved.jsonl.gz", gzip.compress(_jsonl(30)))
    ingestor = make_ingestor()

    handoffs = _run_split(platform, ingestor, event, asks=0)

    assert handoffs == 5  # six chunks, one per invocation
    assert platform.ledger_totals()["records_in"] == 30


def test_a_checkpoint_naming_an_unknown_encoding_is_quarantined_and_acknowledged(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    checkpoint = Checkpoint(
        bucket=platform.names.landing_bucket,
        key="incoming/order/x.jsonl",
        etag="e",
        version_id=None,
        record_type="order",
        format="jsonl",
        gzip=False,
        correlation_id="c",
        ingested_at="2026-11-27T06:00:00.000Z",
        offset=10,
        encoding="ebcdic",
    )

    response = make_ingestor().handle_continue(sqs_event(checkpoint.encode()))

    assert response == {"batchItemFailures": []}
    [doc] = platform.quarantined()
    assert "unknown encoding 'ebcdic'" in doc["reason"]


def test_a_message_that_is_not_a_checkpoint_is_quarantined_and_acknowledged(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    response = make_ingestor().handle_continue(sqs_event('{"hello": "world"}'))

    assert response == {"batchItemFailures": []}
    [doc] = platform.quarantined()
    assert "not a checkpoint" in doc["reason"]


def test_a_continuation_stays_in_the_trace_of_the_invocation_that_handed_off(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    spans = tmp_path / "spans.jsonl"
    for name in ("_X_AMZN_TRACE_ID", "SLUICE_TRACING", "LAMBDA_TASK_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLUICE_TRACE_FILE", str(spans))  # the OpenTelemetry tracer, to a file
    monkeypatch.setenv("SLUICE_CHUNK_MAX_RECORDS", "5")
    set_tracer(None)
    event = platform.put("incoming/order/traced.jsonl", _jsonl(40))
    ingestor = make_ingestor()
    with invocation_span("ingest-on_object_created", "req-first"):
        ingestor.handle_s3_event(event, FakeContext(calls=2).get_remaining_time_in_millis)
    platform.raw_chunks()
    [message] = platform.continuations()
    assert "traceparent" in message["MessageAttributes"]  # the hand-off carries the context

    record = sqs_event(message["Body"], prefix="c")
    record["Records"][0]["messageAttributes"] = {
        name: {"stringValue": value["StringValue"], "dataType": value["DataType"]}
        for name, value in message["MessageAttributes"].items()
    }
    with invocation_span("ingest-on_continue", "req-next"):
        assert ingestor.handle_continue(record) == {"batchItemFailures": []}
    rest = platform.raw_chunks()
    set_tracer(None)

    written = [json.loads(line) for line in spans.read_text().splitlines()]
    first = {
        s["trace_id"] for s in written if s["attributes"].get("faas.invocation_id") == "req-first"
    }
    assert len(first) == 1
    continued = [s for s in written if s["name"] == "chunk"]
    assert continued
    assert {s["trace_id"] for s in continued} == first
    assert rest  # the continuation sent the rest of the object
