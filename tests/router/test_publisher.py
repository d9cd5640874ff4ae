"""PublishBatch: limits per call, retrying only failed entries, and finding the topic ARN."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.publisher import (
    TOPIC_ARN_ENV,
    PublishError,
    SnsPublisher,
    entry_of,
    entry_size,
    plan_batches,
    resolve_topic_arn,
)
from sluice import aws
from sluice.config import get_settings
from sluice.envelope import Chunk
from sluice.errors import TransientError

TOPIC = "arn:aws:sns:us-east-1:123456789012:sluice-test-records"
Respond = Callable[[list[dict[str, Any]]], dict[str, Any]]


class StubSns:
    """An SNS client whose `publish_batch` answers with `respond(entries)`, call by call."""

    def __init__(self, *responders: Respond) -> None:
        self.responders = list(responders)
        self.calls: list[list[dict[str, Any]]] = []

    def publish_batch(self, *, TopicArn: str, PublishBatchRequestEntries: Any) -> dict[str, Any]:
        assert TopicArn == TOPIC
        entries = list(PublishBatchRequestEntries)
        self.calls.append(entries)
        respond = self.responders.pop(0) if self.responders else succeed
        return respond(entries)

    def ids(self, call: int) -> list[str]:
        return [e["Id"] for e in self.calls[call]]

    def chunk_ids(self, call: int) -> list[str]:
        return [json.loads(e["Message"])["chunk_id"] for e in self.calls[call]]


def succeed(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Successful": [{"Id": e["Id"], "MessageId": f"m-{e['Id']}"} for e in entries]}


def fail(*positions: int, sender_fault: bool = False, code: str = "InternalError") -> Respond:
    """Fail the entries at `positions` of the call, succeed the others."""

    def respond(entries: list[dict[str, Any]]) -> dict[str, Any]:
        bad = {entries[i]["Id"] for i in positions}
        return {
            "Successful": [
                {"Id": e["Id"], "MessageId": "m"} for e in entries if e["Id"] not in bad
            ],
            "Failed": [
                {"Id": i, "Code": code, "Message": "boom", "SenderFault": sender_fault}
                for i in sorted(bad)
            ],
        }

    return respond


def _publisher(client: StubSns, attempts: int = 3) -> tuple[SnsPublisher, list[float]]:
    sleeps: list[float] = []
    publisher = SnsPublisher(client, topic_arn=TOPIC, attempts=attempts, sleep=sleeps.append)  # type: ignore[arg-type]
    return publisher, sleeps


def _chunks(make_chunk: Any, n: int, note_bytes: int = 0) -> list[Chunk]:
    """`n` chunks of one record with a note of `note_bytes` random (incompressible) letters."""
    rng = random.Random(n)
    return [
        make_chunk(
            [
                {
                    "n": i,
                    "note": "".join(rng.choice(string.ascii_letters) for _ in range(note_bytes)),
                }
            ],
            ordinal=i,
        )
        for i in range(n)
    ]


def test_only_the_failed_entries_are_sent_again(make_chunk: Any) -> None:
    chunks = _chunks(make_chunk, 5)
    client = StubSns(fail(1, 3))
    publisher, _ = _publisher(client)
    publisher.publish(chunks)
    assert len(client.calls) == 2
    assert client.chunk_ids(1) == [chunks[1].chunk_id, chunks[3].chunk_id]
    assert client.ids(1) == [client.ids(0)[1], client.ids(0)[3]]


def test_retries_are_bounded_then_the_chunk_fails_as_transient(make_chunk: Any) -> None:
    chunks = _chunks(make_chunk, 3)
    client = StubSns(fail(0, 2), fail(1), fail(0))
    publisher, sleeps = _publisher(client, attempts=3)
    with pytest.raises(PublishError, match=r"1 of 3 PublishBatch entries .* still failed") as info:
        publisher.publish(chunks)
    assert isinstance(info.value, TransientError)
    assert [len(c) for c in client.calls] == [3, 2, 1]
    assert client.chunk_ids(2) == [chunks[2].chunk_id]
    assert len(sleeps) == 2
    assert sleeps[1] > sleeps[0]


def test_a_sender_fault_is_not_retried(make_chunk: Any) -> None:
    client = StubSns(fail(0, sender_fault=True, code="InvalidParameter"))
    publisher, _ = _publisher(client)
    with pytest.raises(PublishError, match="InvalidParameter"):
        publisher.publish(_chunks(make_chunk, 2))
    assert len(client.calls) == 1


def test_a_failing_call_becomes_a_publish_error(make_chunk: Any) -> None:
    from botocore.exceptions import ClientError

    def throttled(entries: list[dict[str, Any]]) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "Throttling", "Message": "slow"}}, "PublishBatch")

    publisher, _ = _publisher(StubSns(throttled))
    with pytest.raises(PublishError) as info:
        publisher.publish(_chunks(make_chunk, 1))
    assert isinstance(info.value.__cause__, ClientError)


def test_at_most_ten_entries_go_in_one_call_with_ids_unique_in_each(make_chunk: Any) -> None:
    chunks = _chunks(make_chunk, 23)
    client = StubSns()
    publisher, _ = _publisher(client)
    publisher.publish(chunks)
    assert [len(c) for c in client.calls] == [10, 10, 3]
    for call in range(3):
        assert len(set(client.ids(call))) == len(client.ids(call))
    published = [cid for call in range(3) for cid in client.chunk_ids(call)]
    assert published == [c.chunk_id for c in chunks]


def test_a_call_stays_within_256_kib_in_all(make_chunk: Any) -> None:
    # Three ~100 KB messages: two fit in one call, the third needs another.
    chunks = _chunks(make_chunk, 3, note_bytes=100_000)
    client = StubSns()
    publisher, _ = _publisher(client)
    publisher.publish(chunks)
    assert [len(c) for c in client.calls] == [2, 1]


def test_plan_batches_refuses_an_entry_larger_than_a_call(make_chunk: Any) -> None:
    [entry] = [entry_of(c, "e0") for c in _chunks(make_chunk, 1, note_bytes=300_000)]
    with pytest.raises(PublishError, match="SNS takes at most"):
        list(plan_batches([entry]))


def test_entry_carries_the_chunk_and_its_message_attributes(make_chunk: Any) -> None:
    chunk = make_chunk([{"n": 1}])
    chunk = chunk.derive(chunk.records, chunk_id="c-x", attributes={"priority": "high"})
    entry = entry_of(chunk, "e7")
    assert entry["Id"] == "e7"
    assert json.loads(entry["Message"])["chunk_id"] == "c-x"
    assert {k: v["StringValue"] for k, v in entry["MessageAttributes"].items()} == {
        "record_type": "order",
        "correlation_id": "corr-1",
        "chunk_id": "c-x",
        "priority": "high",
    }
    assert entry_size(entry) > len(entry["Message"])


def test_nothing_is_called_for_no_chunks() -> None:
    client = StubSns()
    publisher, _ = _publisher(client)
    publisher.publish([])
    assert client.calls == []


# ---------------------------------------------------------------- topic ARN


def test_topic_arn_comes_from_the_environment_when_set(
    monkeypatch: pytest.MonkeyPatch, aws_env: None
) -> None:
    monkeypatch.setenv(TOPIC_ARN_ENV, "arn:aws:sns:eu-west-1:111122223333:custom")

    class NoSts:
        def get_caller_identity(self) -> dict[str, str]:
            raise AssertionError("STS must not be called when the ARN is configured")

    assert resolve_topic_arn(get_settings(), NoSts()) == "arn:aws:sns:eu-west-1:111122223333:custom"


def test_topic_arn_is_built_from_the_stage_name_and_the_callers_account(platform: Any) -> None:
    assert resolve_topic_arn() == platform.topic_arn


def test_topic_arn_is_resolved_once_per_publisher(make_chunk: Any) -> None:
    resolved: list[str] = []

    def resolve() -> str:
        resolved.append(TOPIC)
        return TOPIC

    publisher = SnsPublisher(StubSns(), resolve_arn=resolve, sleep=lambda s: None)  # type: ignore[arg-type]
    publisher.publish(_chunks(make_chunk, 1))
    publisher.publish(_chunks(make_chunk, 1))
    assert resolved == [TOPIC]


def test_real_publish_batch_reaches_the_topic(platform: Any, make_chunk: Any) -> None:
    chunks = _chunks(make_chunk, 12)
    SnsPublisher(aws.sns()).publish(chunks)
    received = platform.everything.drain()
    assert sorted(json.loads(m["Body"])["chunk_id"] for m in received) == sorted(
        c.chunk_id for c in chunks
    )
