"""SendMessageBatch: batch limits, and only the entries that failed are sent again."""

from __future__ import annotations

import random
import string
from typing import TYPE_CHECKING, Any

import pytest

from chalicelib.sender import MAX_BATCH_BYTES, BatchSender, SendError, entry_size
from sluice.envelope import Chunk, Record

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import (
        BatchResultErrorEntryTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )


def chunk(n: int, size: int = 10) -> Chunk:
    """A chunk of one record of `size` random (incompressible) characters."""
    rng = random.Random(n)
    text = "".join(rng.choice(string.ascii_letters) for _ in range(size))
    record = Record(f"r-{n}", n, "2026-11-27T06:00:00.000Z", {"text": text})
    return Chunk(f"c-{n}", "order", "s3://b/k", "corr", (record,))


class StubSQS:
    """Fails the listed chunk ids on their first `fail_times` attempts."""

    def __init__(self, fail: dict[str, int] | None = None, sender_fault: bool = False) -> None:
        self.fail = dict(fail or {})
        self.sender_fault = sender_fault
        self.calls: list[list[str]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [e["MessageAttributes"]["chunk_id"]["StringValue"] for e in Entries]
        self.calls.append(ids)
        failed = []
        for entry, cid in zip(Entries, ids, strict=True):
            if self.fail.get(cid, 0) > 0:
                self.fail[cid] -= 1
                failed.append(
                    {
                        "Id": entry["Id"],
                        "SenderFault": self.sender_fault,
                        "Code": "InternalError",
                        "Message": "try again",
                    }
                )
        return {"Successful": [], "Failed": failed}


def sender(stub: StubSQS, sent: list[str], sleeps: list[float] | None = None) -> BatchSender:
    return BatchSender(
        lambda: "https://queue",
        client=stub,
        after_send=lambda c: sent.append(c.chunk_id),
        sleep=(sleeps.append if sleeps is not None else lambda _s: None),
    )


def test_only_the_entries_that_failed_are_sent_again() -> None:
    stub = StubSQS(fail={"c-1": 1, "c-3": 2})
    sent: list[str] = []
    sleeps: list[float] = []
    s = sender(stub, sent, sleeps)
    for n in range(5):
        s.add(chunk(n))
    s.flush()

    assert stub.calls == [
        ["c-0", "c-1", "c-2", "c-3", "c-4"],
        ["c-1", "c-3"],
        ["c-3"],
    ]
    assert sorted(sent) == ["c-0", "c-1", "c-2", "c-3", "c-4"]
    assert len(sleeps) == 2


def test_a_batch_holds_at_most_ten_entries() -> None:
    stub = StubSQS()
    s = sender(stub, [])
    for n in range(23):
        s.add(chunk(n))
    s.flush()

    assert [len(c) for c in stub.calls] == [10, 10, 3]


def test_a_batch_stays_within_one_mebibyte_counting_attributes() -> None:
    stub = StubSQS()
    s = sender(stub, [])
    big = [chunk(n, size=300_000) for n in range(7)]
    for c in big:
        s.add(c)
    s.flush()

    by_id = {c.chunk_id: c for c in big}
    for call in stub.calls:
        total = sum(entry_size(by_id[i].encode(), by_id[i].message_attributes()) for i in call)
        assert total <= MAX_BATCH_BYTES
    assert [len(c) for c in stub.calls] == [3, 3, 1]


def test_entries_failing_every_attempt_end_in_a_transient_error() -> None:
    stub = StubSQS(fail={"c-0": 99})
    sent: list[str] = []
    s = sender(stub, sent)
    s.add(chunk(0))
    s.add(chunk(1))

    with pytest.raises(SendError, match="after 5 attempts"):
        s.flush()
    assert sent == ["c-1"]
    assert len(stub.calls) == 5


def test_an_entry_sqs_calls_malformed_is_not_retried() -> None:
    stub = StubSQS(fail={"c-0": 1}, sender_fault=True)
    s = sender(stub, [])
    s.add(chunk(0))

    with pytest.raises(SendError, match="malformed"):
        s.flush()
    assert len(stub.calls) == 1


def test_ingest_retries_only_failed_entries_end_to_end(
    platform: Any, make_ingestor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the Ingestor: a flaky SQS client loses nothing and doubles nothing."""
    from sluice import aws

    real = aws.sqs()

    class Flaky:
        def __init__(self) -> None:
            self.failed_once: set[str] = set()
            self.entries_sent: list[str] = []

        def get_queue_url(self, **kw: Any) -> Any:
            return real.get_queue_url(**kw)

        def send_message(self, **kw: Any) -> Any:
            return real.send_message(**kw)

        def send_message_batch(
            self, QueueUrl: str, Entries: list[SendMessageBatchRequestEntryTypeDef]
        ) -> Any:
            keep: list[SendMessageBatchRequestEntryTypeDef] = []
            failed: list[BatchResultErrorEntryTypeDef] = []
            for entry in Entries:
                cid = entry["MessageAttributes"]["chunk_id"]["StringValue"]
                if cid not in self.failed_once and len(self.failed_once) < 2:
                    self.failed_once.add(cid)
                    failed.append({"Id": entry["Id"], "SenderFault": False, "Code": "Throttled"})
                else:
                    keep.append(entry)
                    self.entries_sent.append(cid)
            if keep:
                real.send_message_batch(QueueUrl=QueueUrl, Entries=keep)
            return {"Failed": failed}

    monkeypatch.setenv("SLUICE_CHUNK_MAX_RECORDS", "2")
    ingestor = make_ingestor()
    flaky = Flaky()
    ingestor._sqs = flaky
    body = b"".join(b'{"id": %d}\n' % i for i in range(9))
    ingestor.handle_s3_event(platform.put("incoming/order/flaky.jsonl", body))

    chunks = platform.raw_chunks()
    assert len(chunks) == 5
    assert len(flaky.entries_sent) == len(set(flaky.entries_sent)) == 5
    assert sorted(r.payload["id"] for c in chunks for r in c.records) == list(range(9))


def test_an_ingest_send_whose_answer_was_lost_repeats_the_same_chunks_and_counts_once(
    platform: Any, make_ingestor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from support.calls import lose_answers

    from sluice import aws

    monkeypatch.setenv("SLUICE_CHUNK_MAX_RECORDS", "2")
    body = b"".join(b'{"id": %d}\n' % i for i in range(9))
    with lose_answers(aws.sqs(), "SendMessageBatch") as lost:
        make_ingestor().handle_s3_event(platform.put("incoming/order/lost.jsonl", body))

    assert lost.lost == ["SendMessageBatch"]
    chunks = platform.raw_chunks()
    ids = [c.chunk_id for c in chunks]
    assert (
        len(ids) > len(set(ids)) == 5
    )  # the retried batch went twice, same ids: deduplicated downstream
    records = {r.id: r.payload["id"] for c in chunks for r in c.records}
    assert sorted(records.values()) == list(range(9))
    assert platform.ledger_totals()["records_in"] == 9
