"""`sluice dlq`: listing, decoding and redriving a stage's dead-letter queues on moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from support.calls import Fault, failing
from support.platform import STAGE

from sluice import aws
from sluice.envelope import Chunk, Record
from sluice_tools.cli import main
from sluice_tools.dlq.redrive import move_messages, redrive

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef, MessageTypeDef

ATTRS: dict[str, MessageAttributeValueTypeDef] = {
    "record_type": {"DataType": "String", "StringValue": "order"},
    "correlation_id": {"DataType": "String", "StringValue": "ingest-one"},
}


@pytest.fixture
def queues(aws_env: None) -> Iterator[dict[str, str]]:
    """raw (+ raw-dlq), consumer-index (+ dlq) and the alerts failures queue, in moto."""
    from moto import mock_aws

    with mock_aws():
        sqs = aws.sqs()
        urls = {}
        for queue in ("raw", "consumer-index"):
            dlq = sqs.create_queue(QueueName=f"sluice-{STAGE}-{queue}-dlq")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
            policy = {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": 5}
            urls[queue] = sqs.create_queue(
                QueueName=f"sluice-{STAGE}-{queue}",
                Attributes={"RedrivePolicy": json.dumps(policy)},
            )["QueueUrl"]
            urls[f"{queue}-dlq"] = dlq
        urls["failures"] = sqs.create_queue(QueueName=f"sluice-{STAGE}-consumer-alerts-failures")[
            "QueueUrl"
        ]
        yield urls


def chunk(chunk_id: str, n: int = 2) -> Chunk:
    records = tuple(Record(f"r-{i}", i, "2026-11-27T07:00:00.000Z", {"é": i}) for i in range(n))
    return Chunk(chunk_id, "order", "s3://b/incoming/order/a.jsonl", "ingest-one", records)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["dlq", *args, "--stage", STAGE])


def messages(url: str) -> list[MessageTypeDef]:
    got = aws.sqs().receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    return list(got.get("Messages") or [])


def test_list_shows_every_dead_letter_and_failures_queue_with_depth_and_source(
    queues: dict[str, str],
) -> None:
    aws.sqs().send_message(QueueUrl=queues["raw-dlq"], MessageBody=chunk("c-1").encode())

    result = invoke("list", "--json")

    assert result.exit_code == 0, result.output
    rows = {r["queue"]: r for r in json.loads(result.output)}
    assert set(rows) == {
        "sluice-test-raw-dlq",
        "sluice-test-consumer-index-dlq",
        "sluice-test-consumer-alerts-failures",
    }
    assert rows["sluice-test-raw-dlq"]["visible"] == 1
    assert rows["sluice-test-raw-dlq"]["sources"] == ["sluice-test-raw"]


def test_show_decodes_envelopes_without_consuming_them(queues: dict[str, str]) -> None:
    aws.sqs().send_message(QueueUrl=queues["raw-dlq"], MessageBody=chunk("c-1", 3).encode())

    result = invoke("show", "raw-dlq", "--json")

    assert result.exit_code == 0, result.output
    (shown,) = json.loads(result.output)["messages"]
    assert shown["chunks"] == [
        {"chunk_id": "c-1", "type": "order", "correlation_id": "ingest-one", "records": 3}
    ]
    assert len(messages(queues["raw-dlq"])) == 1  # still there, and visible at once


def test_show_prints_the_reason_and_chunks_of_a_lambda_on_failure_record(
    queues: dict[str, str],
) -> None:
    record = {
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "responseContext": {"functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "alerts topic unreachable"},
        "requestPayload": {"Records": [{"Sns": {"Message": chunk("c-high", 1).encode()}}]},
    }
    aws.sqs().send_message(QueueUrl=queues["failures"], MessageBody=json.dumps(record))

    result = invoke("show", "consumer-alerts-failures")

    assert result.exit_code == 0, result.output
    assert "reason: RetriesExhausted: Unhandled: alerts topic unreachable" in result.output
    assert "chunk c-high type order correlation ingest-one records 1" in result.output


def test_redrive_moves_everything_to_the_source_queue_byte_identical_with_attributes(
    queues: dict[str, str],
) -> None:
    sqs = aws.sqs()
    bodies = {chunk(f"c-{i}").encode() for i in range(12)}
    for body in bodies:
        sqs.send_message(QueueUrl=queues["raw-dlq"], MessageBody=body, MessageAttributes=ATTRS)

    result = invoke("redrive", "raw-dlq")

    assert result.exit_code == 0, result.output
    assert "moved 12 message(s) from sluice-test-raw-dlq to sluice-test-raw" in result.output
    moved = [m for _ in range(3) for m in messages(queues["raw"])]
    assert {m["Body"] for m in moved} == bodies
    assert all(
        m["MessageAttributes"]["correlation_id"]["StringValue"] == "ingest-one" for m in moved
    )
    assert messages(queues["raw-dlq"]) == []


@pytest.mark.parametrize("fault", list(Fault))
def test_a_message_whose_send_failed_stays_in_the_dlq(queues: dict[str, str], fault: Fault) -> None:
    sqs = aws.sqs()
    poison = chunk("c-poison").encode()
    for body in (chunk("c-1").encode(), poison, chunk("c-2").encode()):
        sqs.send_message(QueueUrl=queues["raw-dlq"], MessageBody=body)

    with failing(sqs, "SendMessage", fault, when=lambda p: p["MessageBody"] == poison):
        result = move_messages(sqs, queues["raw-dlq"], queues["raw"])

    assert result.moved == 2
    assert len(result.failed) == 1
    assert [m["Body"] for m in messages(queues["raw-dlq"])] == [poison]
    # A lost send went through: the chunk is in both queues (the stage drops the second
    # copy by its chunk id), never in neither.
    sent = [m["Body"] for m in messages(queues["raw"])]
    assert sent.count(poison) == (1 if fault is Fault.LOST else 0)


def test_redrive_falls_back_to_moving_messages_when_move_tasks_are_unsupported(
    queues: dict[str, str],
) -> None:
    sqs = aws.sqs()
    sqs.send_message(QueueUrl=queues["raw-dlq"], MessageBody=chunk("c-1").encode())

    result = redrive(sqs, queues["raw-dlq"], queues["raw"])  # moto: NotImplementedError

    assert (result.method, result.moved) == ("manual", 1)


class MoveTaskClient:
    """An SQS client whose StartMessageMoveTask works (as on AWS); anything else is refused."""

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> Any:
        return {"Attributes": {"QueueArn": f"arn:aws:sqs:us-east-1:1:{QueueUrl.rsplit('/')[-1]}"}}

    def start_message_move_task(self, **kwargs: Any) -> Any:
        self.started.append(kwargs)
        return {"TaskHandle": "task-1"}

    def receive_message(self, **kwargs: Any) -> Any:
        raise AssertionError("no manual move where a move task works")


def test_redrive_uses_start_message_move_task_where_it_exists() -> None:
    client = MoveTaskClient()

    result = redrive(client, "https://q/sluice-test-raw-dlq", "https://q/sluice-test-raw")

    assert (result.method, result.task_handle) == ("move-task", "task-1")
    assert client.started == [
        {
            "SourceArn": "arn:aws:sqs:us-east-1:1:sluice-test-raw-dlq",
            "DestinationArn": "arn:aws:sqs:us-east-1:1:sluice-test-raw",
        }
    ]


def test_redrive_refuses_a_failures_queue_and_says_what_to_do(queues: dict[str, str]) -> None:
    result = invoke("redrive", "consumer-alerts-failures")

    assert result.exit_code != 0
    assert "requestPayload" in result.output
    assert "aws lambda invoke" in result.output


def test_redrive_to_an_explicit_queue_resolves_its_role_name(queues: dict[str, str]) -> None:
    sqs = aws.sqs()
    sqs.send_message(QueueUrl=queues["consumer-index-dlq"], MessageBody=chunk("c-1").encode())

    result = invoke("redrive", queues["consumer-index-dlq"], "--to", "consumer-index")

    assert result.exit_code == 0, result.output
    assert len(messages(queues["consumer-index"])) == 1


# ---------------------------------------------------------------- records failed one by one

FAILED_FROM = {
    "failed_from": "c-parent",
    "error_type": "ValueError",
    "error_message": "amount is negative",
    "failed_stage": "consumer-index",
    "attempt": "3",
}


def failed_records(queue_url: str) -> str:
    """A chunk of records a consumer isolated as failed, as the stage runtime dead-letters it;
    returns its body."""
    failed = chunk("c-failed", 1)
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        **ATTRS,
        **{k: {"DataType": "String", "StringValue": v} for k, v in FAILED_FROM.items()},
    }
    body = failed.encode()
    aws.sqs().send_message(QueueUrl=queue_url, MessageBody=body, MessageAttributes=attributes)
    return body


def test_show_prints_why_failed_records_were_dead_lettered(queues: dict[str, str]) -> None:
    failed_records(queues["consumer-index-dlq"])

    text = invoke("show", "consumer-index-dlq")
    as_json = invoke("show", "consumer-index-dlq", "--json")

    assert text.exit_code == 0, text.output
    assert "reason: ValueError: amount is negative (stage consumer-index, attempt 3)" in text.output
    assert "failed records of chunk c-parent" in text.output
    (shown,) = json.loads(as_json.output)["messages"]
    assert shown["failure"] == {
        "error_type": "ValueError",
        "error_message": "amount is negative",
        "stage": "consumer-index",
        "attempt": "3",
        "failed_from": "c-parent",
        "condition": None,
    }


FUNCTION_ARN = "arn:aws:lambda:us-east-1:1:function:sluice-alerts-test-on_record"


def test_show_prints_the_error_type_function_and_attempt_of_a_lambda_on_failure_record(
    queues: dict[str, str],
) -> None:
    record = {
        "requestContext": {
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
            "functionArn": f"{FUNCTION_ARN}:$LATEST",
        },
        "responseContext": {"functionError": "Unhandled"},
        "responsePayload": {"errorType": "TimeoutError", "errorMessage": "topic unreachable"},
        "requestPayload": {"Records": [{"Sns": {"Message": chunk("c-high", 1).encode()}}]},
    }
    aws.sqs().send_message(QueueUrl=queues["failures"], MessageBody=json.dumps(record))

    result = invoke("show", "consumer-alerts-failures")

    assert result.exit_code == 0, result.output
    assert (
        "reason: RetriesExhausted: Unhandled: TimeoutError: topic unreachable "
        "(stage sluice-alerts-test-on_record, attempt 3)"
    ) in result.output


def test_redrive_keeps_the_failure_attributes_of_failed_records(queues: dict[str, str]) -> None:
    body = failed_records(queues["consumer-index-dlq"])

    result = invoke("redrive", "consumer-index-dlq")

    assert result.exit_code == 0, result.output
    (moved,) = messages(queues["consumer-index"])
    assert moved["Body"] == body
    attributes = {k: v["StringValue"] for k, v in moved["MessageAttributes"].items()}
    assert attributes == {**{k: v["StringValue"] for k, v in ATTRS.items()}, **FAILED_FROM}


def test_the_ledger_reads_failed_records_and_dead_s3_events_for_their_flows(
    queues: dict[str, str],
) -> None:
    from sluice.envelope import object_correlation_id
    from sluice_tools.ledger.deadletters import dlq_records

    failed_records(queues["consumer-index-dlq"])
    event = {
        "s3": {"bucket": {"name": "b"}, "object": {"key": "incoming/order/a+b.jsonl", "eTag": "e1"}}
    }
    record = {"requestContext": {}, "requestPayload": {"Records": [event]}}
    aws.sqs().send_message(QueueUrl=queues["failures"], MessageBody=json.dumps(record))

    dead = dlq_records(aws.sqs(), [queues["consumer-index-dlq"], queues["failures"]])

    failed, s3 = dead
    assert (failed.stage, failed.chunk_id, failed.records, failed.failed_from) == (
        "consumer-index",
        "c-failed",
        1,
        "c-parent",
    )
    assert s3.source == "s3://b/incoming/order/a b.jsonl"
    assert s3.correlation_id == object_correlation_id("b", "incoming/order/a b.jsonl", "e1")


def test_list_names_the_stage_whose_failures_each_queue_holds(queues: dict[str, str]) -> None:
    result = invoke("list", "--json")

    stages = {r["queue"]: r["stage"] for r in json.loads(result.output)}
    assert stages == {
        "sluice-test-raw-dlq": "cleanse",
        "sluice-test-consumer-index-dlq": "consumer-index",
        "sluice-test-consumer-alerts-failures": "consumer-alerts",
    }
