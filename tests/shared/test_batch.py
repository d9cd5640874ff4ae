"""Batch processing reports exactly the failed messages and quarantines only bad records."""

from __future__ import annotations

import logging

import pytest
from support.events import sqs_event

from sluice.batch import (
    BatchResponse,
    ChunkHandler,
    ChunkOutcome,
    SQSMessage,
    process_sqs_batch,
    run_records,
)
from sluice.envelope import Chunk, Record
from sluice.errors import PermanentError
from sluice.observability.logs import get_context


def chunk(n: int, cid: str = "c-1", bad: frozenset[int] = frozenset()) -> Chunk:
    return Chunk(
        chunk_id=cid,
        type="order",
        source="s3://landing/k",
        correlation_id="corr",
        records=tuple(
            Record(f"r-{i}", i, "2026-11-27T06:00:00.000Z", {"n": i, "bad": i in bad})
            for i in range(n)
        ),
    )


class Rejected:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []
        self.messages: list[tuple[str, str]] = []

    def reject_record(self, record: Record, chunk: Chunk, error: PermanentError) -> None:
        self.records.append((record.id, error.reason))

    def reject_message(self, message: SQSMessage, error: PermanentError) -> None:
        self.messages.append((message.message_id, error.reason))


@pytest.fixture
def rejected() -> Rejected:
    return Rejected()


def failing_on(*chunk_ids: str) -> ChunkHandler:
    def handle(c: Chunk) -> ChunkOutcome:
        if c.chunk_id in chunk_ids:
            raise TimeoutError("downstream timed out")
        return ChunkOutcome(records_in=len(c.records), out=len(c.records))

    return handle


def failed_ids(response: BatchResponse) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_mixed_batch_reports_exactly_the_failed_message(rejected: Rejected) -> None:
    event = sqs_event(chunk(2, "c-a"), chunk(2, "c-b"), chunk(2, "c-c"))
    response = process_sqs_batch(event, failing_on("c-b"), reject_message=rejected.reject_message)
    assert failed_ids(response) == ["msg-1"]


def test_all_failing_reports_every_message(rejected: Rejected) -> None:
    event = sqs_event(chunk(1, "c-a"), chunk(1, "c-b"))
    response = process_sqs_batch(
        event, failing_on("c-a", "c-b"), reject_message=rejected.reject_message
    )
    assert failed_ids(response) == ["msg-0", "msg-1"]


def test_all_succeeding_reports_nothing(rejected: Rejected) -> None:
    response = process_sqs_batch(
        sqs_event(chunk(1, "c-a"), chunk(3, "c-b")),
        failing_on(),
        reject_message=rejected.reject_message,
    )
    assert response == {"batchItemFailures": []}


def test_undecodable_message_is_quarantined_and_acknowledged(rejected: Rejected) -> None:
    response = process_sqs_batch(
        sqs_event("{not json", chunk(1, "c-a")),
        failing_on(),
        reject_message=rejected.reject_message,
    )
    assert response == {"batchItemFailures": []}
    assert [m for m, _ in rejected.messages] == ["msg-0"]
    assert "not JSON" in rejected.messages[0][1]


def test_message_from_a_newer_producer_is_retried_not_quarantined(rejected: Rejected) -> None:
    wire = chunk(1).encode().replace('"v":2', '"v":9')
    response = process_sqs_batch(
        sqs_event(wire), failing_on(), reject_message=rejected.reject_message
    )
    assert failed_ids(response) == ["msg-0"]
    assert rejected.messages == []


def test_quarantine_failure_keeps_the_message_for_retry() -> None:
    def broken(message: SQSMessage, error: PermanentError) -> None:
        raise ConnectionError("S3 unavailable")

    response = process_sqs_batch(sqs_event("garbage"), failing_on(), reject_message=broken)
    assert failed_ids(response) == ["msg-0"]


def test_permanent_error_on_one_record_quarantines_only_that_record(rejected: Rejected) -> None:
    def handler(record: Record, c: Chunk) -> int:
        if record.payload["bad"]:
            raise PermanentError(f"order {record.payload['n']} has no amount")
        return int(record.payload["n"]) * 10

    results = run_records(chunk(5, bad=frozenset({2})), handler, reject=rejected.reject_record)
    assert [out for _, out in results.outputs] == [0, 10, 30, 40]
    assert rejected.records == [("r-2", "order 2 has no amount")]
    assert results.outcome.as_dict() == {
        "records_in": 5,
        "out": 0,
        "quarantined": 1,
        "duplicate": 0,
        "failed": 0,
    }


def test_transient_error_on_a_record_fails_the_whole_chunk(rejected: Rejected) -> None:
    def handler(record: Record, c: Chunk) -> int:
        if record.ordinal == 1:
            raise TimeoutError("slow")
        return 1

    with pytest.raises(TimeoutError):
        run_records(chunk(3), handler, reject=rejected.reject_record)


def test_claim_checked_records_are_resolved_before_the_handler(rejected: Rejected) -> None:
    ref = Record("r-9", 9, "2026-11-27T06:00:00Z", None, "s3://payloads/r-9.json")
    c = chunk(1).derive([ref], chunk_id="c-ref")
    full = Record("r-9", 9, "2026-11-27T06:00:00Z", {"big": True})
    results = run_records(
        c, lambda r, _: r.payload, reject=rejected.reject_record, resolve=lambda r: full
    )
    assert results.outputs == [(ref, {"big": True})]


def test_a_chunk_done_is_logged_once_with_its_chunk_id_and_counts(rejected: Rejected) -> None:
    """`sluice trace` finds a stage's hop (function, request id) in CloudWatch Logs by it."""
    lines: list[tuple[str, object, int, int]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "chunk done":  # the context is the line's at emit time
                context = get_context()
                counts = vars(record)
                lines.append(
                    (record.name, context.get("chunk_id"), counts["records_in"], counts["out"])
                )

    logger = logging.getLogger("sluice.batch")
    handler, level = Capture(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        process_sqs_batch(
            sqs_event(chunk(2, "c-a"), chunk(1, "c-b")),
            failing_on("c-b"),
            reject_message=rejected.reject_message,
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert lines == [("sluice.batch", "c-a", 2, 2)]
