"""S3 events: keys decoded, non-creation events ignored, duplicate notifications deduped."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from ingest_support import Platform, s3_event
from support.calls import count_calls

from chalicelib.objects import object_ref
from chalicelib.service import Ingestor
from sluice import aws
from sluice.idempotency import ClaimInProgressError

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef


@pytest.mark.parametrize(
    "key",
    [
        "incoming/order/with space.jsonl",
        "incoming/order/plus+sign.jsonl",
        "incoming/order/ünïcødé-注文.jsonl",
        "incoming/order/100%-done.jsonl",
        "incoming/order/a+b c%2Fd.jsonl",
    ],
)
def test_keys_with_spaces_plus_unicode_and_percent_are_read(
    platform: Platform, make_ingestor: Callable[..., Ingestor], key: str
) -> None:
    event = platform.put(key, b'{"id": 1}\n')

    make_ingestor().handle_s3_event(event)

    [chunk] = platform.raw_chunks()
    assert chunk.source == f"s3://{platform.names.landing_bucket}/{key}"
    assert [r.payload for r in chunk.records] == [{"id": 1}]


def test_every_record_of_an_event_is_decoded_not_only_the_first() -> None:
    first = s3_event("b", "incoming/order/a b.jsonl", "e1")
    second = s3_event("b", "incoming/order/c+d.jsonl", "e2")
    event = {"Records": first["Records"] + second["Records"]}

    refs = [object_ref(record) for record in event["Records"]]
    assert [r.key for r in refs if r is not None] == [
        "incoming/order/a b.jsonl",
        "incoming/order/c+d.jsonl",
    ]


def test_the_s3_test_event_is_ignored(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-11-27T06:00:00.000Z",
        "Bucket": platform.names.landing_bucket,
    }

    assert make_ingestor().handle_s3_event(event) == {"objects": 0, "duplicates": 0}
    assert platform.raw_chunks() == []


def test_events_other_than_object_created_are_ignored(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/tagged.jsonl", b'{"id": 1}\n')
    event["Records"][0]["eventName"] = "ObjectTagging:Put"

    assert make_ingestor().handle_s3_event(event) == {"objects": 0, "duplicates": 0}
    assert platform.raw_chunks() == []


def test_a_duplicate_notification_costs_one_idempotency_call_and_sends_nothing(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/dup.jsonl", b'{"id": 1}\n{"id": 2}\n')
    ingestor = make_ingestor()
    ingestor.handle_s3_event(event)
    assert len(platform.raw_chunks()) == 1

    dynamodb = count_calls(aws.dynamodb())
    summary = ingestor.handle_s3_event(json.loads(json.dumps(event)))

    table = platform.names.idempotency_table
    assert summary == {"objects": 1, "duplicates": 1}
    assert [op for op, params in dynamodb.calls if params.get("TableName") == table] == ["PutItem"]
    assert platform.raw_chunks() == []


@pytest.mark.slow
def test_a_multipart_upload_notified_twice_is_ingested_once(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    s3 = aws.s3()
    bucket, key = platform.names.landing_bucket, "incoming/order/multi.jsonl"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
    part1 = b"".join(b'{"id": %d, "pad": "%s"}\n' % (i, b"x" * 100) for i in range(60_000))
    parts: list[CompletedPartTypeDef] = []
    for number, body in ((1, part1), (2, b'{"id": "last"}\n')):
        answer = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=body
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    event = s3_event(bucket, key, done["ETag"].strip('"'), "ObjectCreated:CompleteMultipartUpload")
    twice = {"Records": event["Records"] * 2}

    assert make_ingestor().handle_s3_event(twice) == {"objects": 2, "duplicates": 1}
    records = [r for c in platform.raw_chunks() for r in c.records]
    assert len(records) == 60_001
    assert len({r.id for r in records}) == 60_001


def test_an_object_overwritten_before_it_was_read_is_left_to_its_own_event(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    old = platform.put("incoming/order/over.jsonl", b'{"v": 1}\n')
    platform.put("incoming/order/over.jsonl", b'{"v": 2}\n')

    make_ingestor().handle_s3_event(old)

    assert platform.raw_chunks() == []
    assert platform.quarantined() == []
    # Not a silent skip: the ledger holds the object, with why nothing was read.
    [entry] = platform.ledger()
    assert (entry["stage"], entry["records_in"]) == ("ingest", 0)
    assert "gone (PreconditionFailed)" in entry["skipped"]
    assert entry["source"] == f"s3://{platform.names.landing_bucket}/incoming/order/over.jsonl"


def test_each_version_of_an_overwritten_key_is_read_by_its_own_event(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    bucket, key = platform.names.landing_bucket, "incoming/order/versions.jsonl"
    aws.s3().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    events = []
    for body in (b'{"v": 1}\n{"v": 2}\n', b'{"v": 3}\n'):
        put = aws.s3().put_object(Bucket=bucket, Key=key, Body=body)
        event = s3_event(bucket, key, put["ETag"].strip('"'))
        event["Records"][0]["s3"]["object"]["versionId"] = put["VersionId"]
        events.append(event)

    for event in events:  # the first event arrives after the key was overwritten
        make_ingestor().handle_s3_event(event)

    payloads = [r.payload for c in platform.raw_chunks() for r in c.records]
    assert sorted(p["v"] for p in payloads) == [1, 2, 3]


def test_an_event_without_an_etag_reads_the_current_one(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/noetag.jsonl", b'{"id": 1}\n')
    etag = event["Records"][0]["s3"]["object"].pop("eTag")

    make_ingestor().handle_s3_event(event)

    [chunk] = platform.raw_chunks()
    assert chunk.records[0].id.startswith("r-")
    from sluice.envelope import record_id

    assert chunk.records[0].id == record_id(chunk.source, etag, 0)


def _held(ingestor: Ingestor, event: dict[str, Any]) -> Any:
    """Take the object's claim as another invocation would, before `ingestor` sees `event`."""
    ref = object_ref(event["Records"][0])
    assert ref is not None
    return ingestor.runtime.idempotency.claim("ingest", ref.claim_key, remaining_ms=60_000)


def test_a_duplicate_event_waits_for_the_invocation_holding_the_object_and_sends_nothing(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/held.jsonl", b'{"id": 1}\n')
    ingestor = make_ingestor()
    holder = _held(ingestor, event)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # the holder finishes while the duplicate waits
            ingestor.runtime.idempotency.complete(holder)

    ingestor.runtime.sleep = sleep
    summary = ingestor.handle_s3_event(event, remaining=lambda: 600_000)

    assert summary == {"objects": 1, "duplicates": 1}
    assert waits == [1.0, 2.0]
    assert platform.raw_chunks() == []


def test_an_event_whose_holder_gave_up_ingests_the_object_itself(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/released.jsonl", b'{"id": 1}\n{"id": 2}\n')
    ingestor = make_ingestor()
    holder = _held(ingestor, event)
    ingestor.runtime.sleep = lambda _s: ingestor.runtime.idempotency.release(holder)

    assert ingestor.handle_s3_event(event, remaining=lambda: 600_000) == {
        "objects": 1,
        "duplicates": 0,
    }
    assert [r.payload for c in platform.raw_chunks() for r in c.records] == [{"id": 1}, {"id": 2}]


def test_a_duplicate_event_stops_waiting_when_its_time_runs_low_so_lambda_retries_it(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/stuck.jsonl", b'{"id": 1}\n')
    ingestor = make_ingestor()
    _held(ingestor, event)
    left = [40_000]  # ms; the safety margin is 30 s
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        left[0] -= 9_000  # the wait took longer than asked (a busy machine)

    ingestor.runtime.sleep = sleep
    with pytest.raises(ClaimInProgressError):
        ingestor.handle_s3_event(event, remaining=lambda: left[0])
    # 31 s left is less than the margin plus the next 2 s wait: give up, Lambda retries.
    assert waits == [1.0]
    assert platform.raw_chunks() == []


def test_an_identical_reupload_yields_the_same_chunks_as_the_first_upload(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    # If the first upload's reader dies mid-way, the re-upload's event may take the object's
    # claim over: it must send the very chunks the first one sent (deduplicated downstream),
    # never the same records again under other ids.
    from sluice.idempotency import IdempotencyStore
    from sluice.stage import StageRuntime

    bucket, key = platform.names.landing_bucket, "incoming/order/again.jsonl"
    aws.s3().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    body = b"".join(b'{"v": %d}\n' % i for i in range(5))
    sent: list[list[tuple[str, tuple[str, ...]]]] = []
    for _ in range(2):
        put = aws.s3().put_object(Bucket=bucket, Key=key, Body=body)
        event = s3_event(bucket, key, put["ETag"].strip('"'))
        event["Records"][0]["s3"]["object"]["versionId"] = put["VersionId"]
        ingestor = make_ingestor()
        ingestor.runtime = StageRuntime("ingest", idempotency=IdempotencyStore(enabled=False))
        ingestor.handle_s3_event(event)  # each run in full, as after a takeover
        sent.append([(c.chunk_id, tuple(r.id for r in c.records)) for c in platform.raw_chunks()])

    assert sent[0]
    assert sent[0] == sent[1]
