"""Claim check: a record too large for a chunk travels by S3 reference, transparently."""

from __future__ import annotations

import json

import pytest

from sluice import aws
from sluice.batch import run_records
from sluice.claimcheck import ClaimCheck, ClaimCheckError, ClaimCheckMissingError, parse_ref
from sluice.config import DEFAULT_CHUNK_MAX_BYTES, ResourceNames, get_settings, reset_settings
from sluice.envelope import Chunk, ChunkLimits, Record, chunk_from_sqs_body, chunk_id, pack_records
from sluice.errors import OversizeRecordError, PermanentError, TransientError
from sluice.quarantine import Quarantine
from sluice.stage import StageRuntime

SOURCE = "s3://landing/in/big.jsonl"
AT = "2026-11-27T06:00:00.000Z"
MIB = 1024 * 1024


def make_chunk(ordinal: int, records: tuple[Record, ...]) -> Chunk:
    return Chunk(chunk_id(SOURCE, "etag-1", ordinal), "order", SOURCE, "corr-1", records)


def big_payload(size: int) -> dict[str, str]:
    unit = "ü東🚚x"  # 2 + 3 + 4 + 1 bytes in UTF-8
    return {"title": "Größe", "body": unit * (size // 10)}


def limits() -> ChunkLimits:
    return ChunkLimits(max_records=100, max_bytes=DEFAULT_CHUNK_MAX_BYTES)


def test_two_mib_record_travels_by_reference_and_resolves_whole(platform: ResourceNames) -> None:
    big = Record("r-big", 1, AT, big_payload(2 * MIB))
    records = [Record("r-0", 0, AT, {"n": 0}), big, Record("r-2", 2, AT, {"n": 2})]
    claims = ClaimCheck()
    chunks = list(pack_records(records, make_chunk, limits(), on_oversize=claims.offload))

    assert len(chunks) == 1
    body = chunks[0].encode()
    assert len(body.encode("utf-8")) < DEFAULT_CHUNK_MAX_BYTES
    travelling = chunk_from_sqs_body(body)
    stand_in = travelling.records[1]
    assert stand_in.payload is None
    assert stand_in.payload_ref is not None
    assert stand_in.payload_ref.startswith(f"s3://{platform.payload_bucket}/payloads/r-big/")

    seen: dict[str, object] = {}

    def handler(record: Record, chunk: Chunk) -> str:
        assert record.payload_ref is None
        seen[record.id] = record.payload
        return record.id

    results = run_records(
        travelling, handler, reject=Quarantine("cleanse").reject_record, resolve=claims.resolve
    )
    assert seen["r-big"] == big.payload
    assert seen["r-0"] == {"n": 0}
    assert [r.id for r, _ in results.outputs] == ["r-0", "r-big", "r-2"]
    assert results.outcome.quarantined == 0


def test_offload_is_deterministic(platform: ResourceNames) -> None:
    record = Record("r-1", 0, AT, big_payload(300 * 1024))
    claims = ClaimCheck()
    first, second = claims.offload(record), claims.offload(record)
    assert first == second
    listed = aws.s3().list_objects_v2(Bucket=platform.payload_bucket)
    assert listed["KeyCount"] == 1
    stored = aws.s3().get_object(
        Bucket=platform.payload_bucket, Key=parse_ref(first.payload_ref or "")[1]
    )
    assert stored["ContentType"] == "application/json"
    assert json.loads(stored["Body"].read()) == record.payload


def test_a_stage_offloading_its_own_version_keeps_the_earlier_one(platform: ResourceNames) -> None:
    claims = ClaimCheck()
    raw = claims.offload(Record("r-1", 0, AT, {"v": "raw"}))
    clean = claims.offload(Record("r-1", 0, AT, {"v": "clean"}))
    assert raw.payload_ref != clean.payload_ref
    assert claims.resolve(raw).payload == {"v": "raw"}


def test_record_over_the_hard_max_is_quarantined_with_a_clear_reason(
    platform: ResourceNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_RECORD_MAX_BYTES", str(1 * MIB))
    reset_settings()
    assert get_settings().record_max_bytes == MIB
    runtime = StageRuntime("ingest")
    records = [Record("r-0", 0, AT, {"n": 0}), Record("r-huge", 1, AT, big_payload(2 * MIB))]
    on_oversize = runtime.on_oversize(record_type="order", source=SOURCE, correlation_id="corr-1")
    chunks = list(pack_records(records, make_chunk, limits(), on_oversize=on_oversize))

    assert [r.id for c in chunks for r in c.records] == ["r-0"]
    assert aws.s3().list_objects_v2(Bucket=platform.payload_bucket)["KeyCount"] == 0
    obj = aws.s3().get_object(
        Bucket=platform.quarantine_bucket, Key="ingest/order/2026-11-27/r-huge.json"
    )
    doc = json.loads(obj["Body"].read())
    assert doc["error_class"] == "OversizeRecordError"
    assert "SLUICE_RECORD_MAX_BYTES" in doc["reason"]
    assert f"at most {MIB} bytes" in doc["reason"]
    assert doc["record"]["payload"] == records[1].payload
    assert doc["source"] == SOURCE


def test_offload_over_the_max_raises_a_permanent_error(platform: ResourceNames) -> None:
    with pytest.raises(OversizeRecordError) as raised:
        ClaimCheck(max_bytes=1024).offload(Record("r-1", 0, AT, {"x": "y" * 2000}))
    assert isinstance(raised.value, PermanentError)


def test_missing_payload_is_permanent_and_quarantines_the_record(platform: ResourceNames) -> None:
    ref = f"s3://{platform.payload_bucket}/payloads/r-gone/0000.json"
    gone = Record("r-gone", 0, AT, None, ref)
    claims = ClaimCheck()
    with pytest.raises(ClaimCheckMissingError):
        claims.resolve(gone)
    chunk = make_chunk(0, (gone, Record("r-ok", 1, AT, {"n": 1})))
    results = StageRuntime("cleanse").run_records(chunk, lambda record, chunk: record.id)
    assert [r.id for r, _ in results.outputs] == ["r-ok"]
    assert results.outcome.quarantined == 1
    obj = aws.s3().get_object(
        Bucket=platform.quarantine_bucket, Key="cleanse/order/2026-11-27/r-gone.json"
    )
    doc = json.loads(obj["Body"].read())
    assert doc["error_class"] == "ClaimCheckMissingError"
    assert doc["payload_missing"] is True


def test_unreadable_payload_bucket_is_transient(platform: ResourceNames) -> None:
    claims = ClaimCheck(bucket="no-such-bucket")
    with pytest.raises(ClaimCheckError) as raised:
        claims.resolve(Record("r-1", 0, AT, None, "s3://no-such-bucket/payloads/r-1/x.json"))
    assert isinstance(raised.value, TransientError)


def test_reference_outside_the_payload_bucket_is_refused(platform: ResourceNames) -> None:
    with pytest.raises(PermanentError):
        ClaimCheck().resolve(Record("r-1", 0, AT, None, "s3://someone-else/secret.json"))
    with pytest.raises(PermanentError):
        ClaimCheck().resolve(Record("r-1", 0, AT, None, "https://example.com/x"))
