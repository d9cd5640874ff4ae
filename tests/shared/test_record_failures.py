"""A record whose handler raises costs only itself: the rest of its chunk is delivered, and it is
retried, then dead-lettered with its error. A claim held elsewhere defers, never dead-letters."""

from __future__ import annotations

from typing import Any

from support.events import QUEUE_ARN, sqs_record
from support.platform import ledger_entries

from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import ResourceNames
from sluice.envelope import Chunk, Record
from sluice.idempotency import IdempotencyStore
from sluice.stage import DEFAULT_RECORD_ATTEMPTS, StageRuntime, failed_chunk_id
from sluice_tools import lambda_events

AT = "2026-11-27T06:00:00.000Z"
STAGE = "consumer-test"
SINK = "test"
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:sluice-test-records"


ROUTING = {"priority": "high", "region": "eu", "channel": "web", "tier": "gold", "team": "b"}


def chunk(n: int = 4) -> Chunk:
    records = tuple(Record(f"r{i}", i, AT, {"n": i}) for i in range(n))
    return Chunk("c-1", "order", "s3://landing/in/x.jsonl", "corr-1", records, ROUTING)


class Sink:
    """A consumer: delivers every record whose payload is not in `broken` (those raise)."""

    def __init__(self, runtime: StageRuntime, broken: set[int]) -> None:
        self.runtime, self.broken = runtime, broken
        self.delivered: list[str] = []

    def __call__(self, c: Chunk) -> ChunkOutcome:
        def deliver(record: Record, _: Chunk) -> str:
            if record.payload["n"] in self.broken:
                raise KeyError(f"no field for {record.payload['n']}")
            return record.id

        results = self.runtime.run_records(c, deliver)
        self.delivered += [out for _, out in results.outputs]
        results.outcome.out = len(results.outputs)
        self.runtime.ledger.record_delivery(SINK, c, delivered=len(results.outputs))
        return results.outcome


def ledger(names: ResourceNames) -> dict[str, dict[str, Any]]:
    return ledger_entries(names.ledger_table, "corr-1")


def queue(name: str) -> str:
    return str(aws.sqs().create_queue(QueueName=name)["QueueUrl"])


def drain(url: str) -> list[dict[str, Any]]:
    got = aws.sqs().receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    messages: list[dict[str, Any]] = [dict(m) for m in got.get("Messages") or []]
    return messages


def event(attempt: int) -> dict[str, Any]:
    return {"Records": [sqs_record(chunk().encode(), "m-0", receive_count=attempt)]}


def test_a_record_that_raises_is_retried_with_its_chunk_before_the_last_attempt(
    platform: ResourceNames,
) -> None:
    runtime = StageRuntime(STAGE)
    sink = Sink(runtime, broken={2})

    response = runtime.handle_sqs(event(attempt=1), sink)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}
    assert sink.delivered == ["r0", "r1", "r3"]  # the others went on (idempotent to redo)
    assert ledger(platform) == {}  # nothing is settled yet: no entry, not even the sink's


def test_on_the_last_attempt_the_failed_record_alone_is_dead_lettered_with_its_error(
    platform: ResourceNames,
) -> None:
    dlq = queue(platform.dlq_of(QUEUE_ARN.rsplit(":", 1)[1]))
    runtime = StageRuntime(STAGE)
    sink = Sink(runtime, broken={2})

    response = runtime.handle_sqs(event(attempt=DEFAULT_RECORD_ATTEMPTS), sink)

    assert response == {"batchItemFailures": []}
    assert sink.delivered == ["r0", "r1", "r3"]
    [message] = drain(dlq)
    dead = Chunk.decode(message["Body"])
    assert [r.id for r in dead.records] == ["r2"]
    assert dead.chunk_id == failed_chunk_id("c-1")
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    # Within SQS's ten attributes: routing attributes stay in the envelope only.
    assert set(attributes) == {
        "record_type",
        "correlation_id",
        "chunk_id",
        "failed_from",
        "error_type",
        "error_message",
        "failed_stage",
        "attempt",
    }
    assert dead.attributes == ROUTING
    assert attributes["failed_from"] == "c-1"
    assert attributes["error_type"] == "KeyError"
    assert "no field for 2" in attributes["error_message"]
    assert attributes["failed_stage"] == STAGE
    assert attributes["attempt"] == str(DEFAULT_RECORD_ATTEMPTS)
    entries = ledger(platform)
    stage = entries[f"{STAGE}#c-1"]
    assert (stage["records_in"], stage["out"], stage["failed"]) == (4, 3, 1)
    assert entries[f"sink:{SINK}#c-1"]["delivered"] == 3


def test_a_directly_subscribed_consumer_sends_failed_records_to_its_failures_queue(
    platform: ResourceNames,
) -> None:
    failures = queue(platform.async_failure_queue(STAGE))
    runtime = StageRuntime(STAGE)
    sink = Sink(runtime, broken={0, 3})
    sns = lambda_events.sns_event(chunk().encode(), topic=TOPIC_ARN, message_ids=["s-1"])

    [outcome] = runtime.handle_sns(sns, sink)

    assert (outcome.out, outcome.failed) == (2, 2)
    [message] = drain(failures)
    assert [r.id for r in Chunk.decode(message["Body"]).records] == ["r0", "r3"]
    assert message["MessageAttributes"]["error_type"]["StringValue"] == "KeyError"
    assert ledger(platform)[f"{STAGE}#c-1"]["failed"] == 2


def test_a_chunk_claimed_by_an_invocation_that_may_be_dead_is_hidden_until_the_claim_lapses(
    platform: ResourceNames,
) -> None:
    url = queue(QUEUE_ARN.rsplit(":", 1)[1])
    aws.sqs().send_message(QueueUrl=url, MessageBody=chunk().encode())
    [received] = aws.sqs().receive_message(
        QueueUrl=url, VisibilityTimeout=0, AttributeNames=["All"]
    )["Messages"]
    # Another invocation claimed the chunk and was killed: its claim holds for 60 s more.
    IdempotencyStore().claim(STAGE, "c-1", remaining_ms=60_000)
    runtime = StageRuntime(STAGE)
    sink = Sink(runtime, broken=set())
    record = sqs_record(received["Body"], received["MessageId"])
    record["receiptHandle"] = received["ReceiptHandle"]

    response = runtime.handle_sqs({"Records": [record]}, sink)

    assert response == {"batchItemFailures": [{"itemIdentifier": received["MessageId"]}]}
    assert sink.delivered == []
    # Received with visibility 0, it would be back at once; deferred, it is hidden.
    assert drain(url) == []
    counts = aws.sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_an_asynchronous_invocation_waits_for_a_claim_held_by_a_dead_invocation(
    platform: ResourceNames,
) -> None:
    clock = Clock()
    IdempotencyStore(clock=clock).claim(STAGE, "c-1", remaining_ms=10_000)  # then it died
    runtime = StageRuntime(STAGE, idempotency=IdempotencyStore(clock=clock), sleep=clock.sleep)
    sink = Sink(runtime, broken=set())
    sns = {
        "Records": [
            {"Sns": {"MessageId": "s-1", "TopicArn": TOPIC_ARN, "Message": chunk().encode()}}
        ]
    }

    [outcome] = runtime.handle_sns(sns, sink, remaining_ms=60_000)

    assert outcome.out == 4
    # Polled (1 s, doubling), never past the holder's 10 s and the claim margin.
    assert clock.slept[:3] == [1.0, 2.0, 4.0]
    assert 10 < sum(clock.slept) < 20
    assert len(clock.slept) <= 5
    assert ledger(platform)[f"{STAGE}#c-1"]["out"] == 4


def test_a_redriven_chunk_of_failed_records_is_ledgered_as_a_retry_of_its_parent(
    platform: ResourceNames,
) -> None:
    dlq = queue(platform.dlq_of(QUEUE_ARN.rsplit(":", 1)[1]))
    runtime = StageRuntime(STAGE)
    runtime.handle_sqs(event(attempt=DEFAULT_RECORD_ATTEMPTS), Sink(runtime, broken={2}))
    [dead] = drain(dlq)
    # The handler is fixed, and the DLQ redriven: the message keeps its attributes.
    redriven = sqs_record(dead["Body"], "m-redrive")
    redriven["messageAttributes"] = {
        name: {"stringValue": value["StringValue"], "dataType": "String"}
        for name, value in dead["MessageAttributes"].items()
    }
    fixed = Sink(runtime, broken=set())

    assert runtime.handle_sqs({"Records": [redriven]}, fixed) == {"batchItemFailures": []}

    assert fixed.delivered == ["r2"]
    entries = ledger(platform)
    retry = entries[f"{STAGE}#{failed_chunk_id('c-1')}"]
    assert (retry["records_in"], retry["out"], retry["retry_of"]) == (1, 1, "c-1")
    assert entries[f"sink:{SINK}#{failed_chunk_id('c-1')}"]["retry_of"] == "c-1"


def test_a_deploy_error_on_a_record_fails_the_chunk_rather_than_dead_lettering_records(
    platform: ResourceNames,
) -> None:
    from sluice.errors import ConfigError

    dlq = queue(platform.dlq_of(QUEUE_ARN.rsplit(":", 1)[1]))
    runtime = StageRuntime(STAGE)

    def misconfigured(c: Chunk) -> ChunkOutcome:
        def deliver(record: Record, _: Chunk) -> str:
            raise ConfigError("SLUICE_SINK_BUCKET is not set")

        return runtime.run_records(c, deliver).outcome

    response = runtime.handle_sqs(event(attempt=DEFAULT_RECORD_ATTEMPTS), misconfigured)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}  # redrive after a fix
    assert drain(dlq) == []  # no record dead-lettered as if it were its own fault
    assert ledger(platform) == {}
