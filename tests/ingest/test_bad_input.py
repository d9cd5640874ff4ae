"""Bad input is quarantined with a reason, never crashes the invocation or loses the rest."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest
from ingest_support import Platform

from chalicelib.service import Ingestor
from sluice.envelope import record_id


def lines(*items: str) -> bytes:
    return "".join(i + "\n" for i in items).encode()


def payloads(platform: Platform) -> list[dict[str, Any]]:
    """Payloads sent, in record order (SQS does not keep the order of chunks)."""
    records = sorted((r for c in platform.raw_chunks() for r in c.records), key=lambda r: r.ordinal)
    return [r.payload for r in records]


def test_an_unparseable_line_is_quarantined_and_the_other_lines_go_on(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    key = "incoming/order/mixed.jsonl"
    event = platform.put(key, lines('{"id": 1}', "{not json", '{"id": 3}', "[1, 2]", "NaN"))
    etag = event["Records"][0]["s3"]["object"]["eTag"]

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == [{"id": 1}, {"id": 3}]
    docs = platform.quarantined()
    assert len(docs) == 3
    by_ref = {d["ref_id"]: d for d in docs}
    source = f"s3://{platform.names.landing_bucket}/{key}"
    bad = by_ref[record_id(source, etag, 1)]
    assert bad["raw"] == "{not json"
    assert "not valid JSON" in bad["reason"]
    assert "JSON object" in by_ref[record_id(source, etag, 3)]["reason"]
    assert "NaN" in by_ref[record_id(source, etag, 4)]["reason"]
    assert all(d["stage"] == "ingest" and d["correlation_id"] for d in docs)
    assert platform.ledger_totals() == {"records_in": 5, "out": 2, "quarantined": 3}


@pytest.mark.parametrize(
    ("name", "body"),
    [
        (
            "strict.jsonl",
            lines('{"id": 1}', '{"id": 2, "name": "\\ud800"}', '{"id": 3, "n": 1e400}'),
        ),
        ("strict.json", b'[{"id": 1}, {"id": 2, "name": "\\ud800"}, {"id": 3, "n": 1e400}]'),
    ],
)
def test_json_that_only_pythons_parser_accepts_is_quarantined_at_ingest(
    platform: Platform, make_ingestor: Callable[..., Ingestor], name: str, body: bytes
) -> None:
    # A lone surrogate cannot be written as UTF-8, and 1e400 is no double: neither could
    # travel in a chunk, so both stop here with a reason instead of failing a later step.
    event = platform.put(f"incoming/order/{name}", body)

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == [{"id": 1}]
    reasons = sorted(d["reason"] for d in platform.quarantined())
    assert len(reasons) == 2
    assert all("not valid JSON" in r for r in reasons)
    assert platform.ledger_totals() == {"records_in": 3, "out": 1, "quarantined": 2}


def test_a_line_that_is_not_utf8_is_quarantined_with_its_exact_bytes(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/latin1.jsonl", b'{"id": 1}\n{"n": "caf\xe9"}\n{"id": 2}\n')

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == [{"id": 1}, {"id": 2}]
    [doc] = platform.quarantined()
    assert doc["error_class"] == "EncodingError"
    assert "UTF-8" in doc["reason"]
    assert doc["raw_base64"]


def test_a_csv_row_with_the_wrong_number_of_fields_is_quarantined(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/customer/c.csv", b"id,name\n1,Ann\n2,Bob,extra\n3,Cy\n")

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == [{"id": "1", "name": "Ann"}, {"id": "3", "name": "Cy"}]
    [doc] = platform.quarantined()
    assert doc["reason"].endswith("CSV row has 3 fields; the header has 2")
    assert doc["raw"] == "2,Bob,extra\n"


def test_a_corrupt_gzip_quarantines_the_rest_once_and_keeps_what_was_read(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    # A good gzip member followed by bytes that are not gzip (zlib: incorrect header check).
    # Deflate has no per-block checksum, so a bit flip inside a member may only surface at
    # the member's CRC; records decoded before that point were already sent.
    good = gzip.compress(lines(*[json.dumps({"id": i}) for i in range(3000)]))
    event = platform.put("incoming/order/corrupt.jsonl.gz", good + b"this is not gzip" * 100)

    make_ingestor(read_block_bytes=4096).handle_s3_event(event)

    assert payloads(platform) == [{"id": i} for i in range(3000)]
    [doc] = platform.quarantined()
    assert doc["error_class"] == "ObjectRemainderError"
    assert "corrupt gzip" in doc["reason"]
    assert platform.ledger_totals() == {"records_in": 3001, "out": 3000, "quarantined": 1}


def test_a_file_named_gz_that_is_not_gzip_is_one_quarantine_entry(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/fake.jsonl.gz", lines('{"id": 1}'))

    make_ingestor().handle_s3_event(event)

    assert platform.raw_chunks() == []
    [doc] = platform.quarantined()
    assert doc["reason"].startswith("its key ends in .gz but the data is not gzip")
    assert platform.ledger_totals() == {"records_in": 1, "out": 0, "quarantined": 1}


def test_a_truncated_gzip_is_quarantined_from_where_it_breaks(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    body = gzip.compress(lines(*[json.dumps({"id": i, "pad": "x" * 50}) for i in range(200)]))
    event = platform.put("incoming/order/short.jsonl.gz", body[: len(body) // 2])

    make_ingestor().handle_s3_event(event)

    sent = payloads(platform)
    assert sent == [{"id": i, "pad": "x" * 50} for i in range(len(sent))]
    [doc] = platform.quarantined()
    assert "truncated" in doc["reason"]


@pytest.mark.parametrize(
    ("key", "body", "reason"),
    [
        ("incoming/order/zero.jsonl", b"", "object is empty (0 bytes)"),
        ("incoming/order/blank.jsonl", b"\n\n  \n", "object holds no records"),
        ("incoming/order/none.json", b"[ ]", "object holds no records"),
        ("incoming/order/header-only.csv", b"id,name\n", "object holds no records"),
    ],
)
def test_an_empty_object_is_one_quarantine_entry(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    key: str,
    body: bytes,
    reason: str,
) -> None:
    event = platform.put(key, body)

    make_ingestor().handle_s3_event(event)

    assert platform.raw_chunks() == []
    [doc] = platform.quarantined()
    assert doc["reason"] == reason
    assert platform.ledger_totals() == {"records_in": 1, "out": 0, "quarantined": 1}


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("incoming/order/data.xml", "unknown suffix"),
        ("incoming/invoice/data.jsonl", "unknown record type 'invoice'"),
        ("elsewhere/data.jsonl", "is not under incoming/<type>/"),
    ],
)
def test_an_object_ingest_cannot_place_is_quarantined_whole_and_sends_nothing(
    platform: Platform, make_ingestor: Callable[..., Ingestor], key: str, reason: str
) -> None:
    event = platform.put(key, lines('{"id": 1}'))

    make_ingestor().handle_s3_event(event)

    assert platform.raw_chunks() == []
    [doc] = platform.quarantined()
    assert reason in doc["reason"]
    assert json.loads(doc["raw"])["object"] == f"s3://{platform.names.landing_bucket}/{key}"


def test_a_json_array_broken_midway_keeps_the_elements_before_the_break(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/broken.json", b'[{"id": 1}, {"id": 2}, {"id": 3 oops}]')

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == [{"id": 1}, {"id": 2}]
    [doc] = platform.quarantined()
    assert "invalid JSON array element" in doc["reason"]


def test_a_json_file_that_is_not_an_array_is_quarantined(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/object.json", b'{"id": 1}')

    make_ingestor().handle_s3_event(event)

    [doc] = platform.quarantined()
    assert "must hold a JSON array" in doc["reason"]


def test_a_csv_with_a_repeated_column_name_is_quarantined_whole(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/customer/dup.csv", b"id,id\n1,2\n")

    make_ingestor().handle_s3_event(event)

    assert platform.raw_chunks() == []
    [doc] = platform.quarantined()
    assert "repeats a column name" in doc["reason"]


def test_a_record_too_large_for_a_chunk_travels_by_claim_check(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_CHUNK_MAX_BYTES", "2048")
    big = {"id": "big", "text": "y" * 5000}
    event = platform.put("incoming/order/big.jsonl", lines('{"id": "a"}', json.dumps(big)))

    make_ingestor().handle_s3_event(event)

    records = sorted((r for c in platform.raw_chunks() for r in c.records), key=lambda r: r.ordinal)
    assert [r.payload for r in records[:1]] == [{"id": "a"}]
    ref = records[1].payload_ref
    assert ref is not None
    assert ref.startswith(f"s3://{platform.names.payload_bucket}/")
    from sluice import aws

    bucket, key = ref.removeprefix("s3://").split("/", 1)
    assert json.loads(aws.s3().get_object(Bucket=bucket, Key=key)["Body"].read()) == big
    assert platform.quarantined() == []


def test_a_record_over_the_hard_maximum_is_quarantined_and_the_rest_goes_on(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_CHUNK_MAX_BYTES", "1024")
    monkeypatch.setenv("SLUICE_RECORD_MAX_BYTES", "4096")
    huge = json.dumps({"id": "huge", "text": "z" * 3000})
    longer = json.dumps({"id": "longer", "text": "z" * 9000})
    event = platform.put(
        "incoming/order/huge.jsonl", lines('{"id": "a"}', huge, longer, '{"id": "b"}')
    )

    make_ingestor().handle_s3_event(event)

    sent = sorted((r for c in platform.raw_chunks() for r in c.records), key=lambda r: r.ordinal)
    assert [r.payload for r in sent if r.payload_ref is None] == [{"id": "a"}, {"id": "b"}]
    assert len([r for r in sent if r.payload_ref]) == 1  # "huge" by claim check
    [doc] = platform.quarantined()
    assert "longer than 4096 bytes" in doc["reason"]
    assert platform.ledger_totals() == {"records_in": 4, "out": 3, "quarantined": 1}


def test_a_record_between_chunk_size_and_hard_maximum_after_offload_is_quarantined(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The line fits the parser's limit, but its payload is over the claim check's maximum.
    monkeypatch.setenv("SLUICE_CHUNK_MAX_BYTES", "1024")
    monkeypatch.setenv("SLUICE_RECORD_MAX_BYTES", "4096")
    body = lines('{"id": "a"}', json.dumps({"t": "\\u00e9" * 1000}), '{"id": "b"}')
    event = platform.put("incoming/order/escaped.jsonl", body)

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == [{"id": "a"}, {"id": "b"}]
    [doc] = platform.quarantined()
    assert doc["error_class"] == "OversizeRecordError"
    assert platform.ledger_totals() == {"records_in": 3, "out": 2, "quarantined": 1}


def test_a_decompression_bomb_is_stopped_at_the_size_cap(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    body = lines(*[json.dumps({"id": i, "pad": "p" * 100}) for i in range(20_000)])
    event = platform.put("incoming/order/bomb.jsonl.gz", body, gz=True)

    make_ingestor(max_decompressed_bytes=256 * 1024, read_block_bytes=64 * 1024).handle_s3_event(
        event
    )

    sent = payloads(platform)
    assert 0 < len(sent) < 20_000
    [doc] = platform.quarantined()
    assert "SLUICE_INGEST_MAX_DECOMPRESSED_BYTES" in doc["reason"]
    totals = platform.ledger_totals()
    assert totals["records_in"] == totals["out"] + totals["quarantined"]


def test_a_decompression_bomb_is_stopped_at_the_ratio_cap(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    body = lines(*[json.dumps({"id": 1, "pad": "p" * 1000})] * 5000)
    event = platform.put("incoming/order/ratio.jsonl.gz", body, gz=True)

    make_ingestor(max_ratio=20, ratio_grace_bytes=64 * 1024).handle_s3_event(event)

    [doc] = platform.quarantined()
    assert "SLUICE_INGEST_MAX_RATIO" in doc["reason"]
