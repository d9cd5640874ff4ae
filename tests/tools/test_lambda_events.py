"""The Lambda events the tests and benchmarks drive handlers with (sluice_tools.lambda_events)
read as Chalice and the shared runtime read what AWS delivers."""

from __future__ import annotations

from chalice.app import S3Event, SNSEvent, SQSEvent

from sluice.envelope import Chunk, Record
from sluice_tools import lambda_events

CHUNK = Chunk("c-1", "order", "s3://landing/k", "corr-1", (Record("r", 0, "order", {"n": 1}),))


def test_sqs_events_carry_distinct_ids_bodies_attributes_and_their_queue() -> None:
    event = lambda_events.sqs_event(CHUNK, "raw body", prefix="m")
    records = list(SQSEvent(event, None))
    assert [r.body for r in records] == [CHUNK.encode(), "raw body"]
    assert [r.receipt_handle for r in records] == ["handle-m-0", "handle-m-1"]
    assert {r.to_dict()["messageId"] for r in records} == {"m-0", "m-1"}
    assert event["Records"][0]["eventSourceARN"] == lambda_events.RAW_QUEUE_ARN

    arn = lambda_events.queue_arn("q", "eu-west-1")
    record = lambda_events.sqs_record(
        CHUNK, "m-9", 3, source_arn=arn, message_attributes={"route": "high"}
    )
    assert record["awsRegion"] == "eu-west-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "3"
    assert record["messageAttributes"] == {"route": {"stringValue": "high", "dataType": "String"}}


def test_received_messages_become_the_event_that_delivers_them() -> None:
    received = [
        {
            "MessageId": "id-1",
            "ReceiptHandle": "rh-1",
            "Body": "b",
            "Attributes": {"ApproximateReceiveCount": "2"},
            "MessageAttributes": {"k": {"StringValue": "v", "DataType": "String"}},
        }
    ]
    [record] = lambda_events.received_sqs_event(received)["Records"]
    assert (record["messageId"], record["receiptHandle"], record["body"]) == ("id-1", "rh-1", "b")
    assert record["messageAttributes"] == {"k": {"stringValue": "v", "dataType": "String"}}
    assert "eventSourceARN" not in record
    arn = lambda_events.queue_arn("q")
    [record] = lambda_events.received_sqs_event(received, source_arn=arn)["Records"]
    assert record["eventSourceARN"] == arn


def test_sns_events_carry_a_chunks_routing_attributes_and_ids_in_order() -> None:
    topic = lambda_events.topic_arn("sluice-test-records")
    event = lambda_events.sns_event(CHUNK, "plain", topic=topic, message_ids=["first"])
    assert [r["Sns"]["MessageId"] for r in event["Records"]] == ["first", "sns-1"]
    parsed = SNSEvent(event, None)
    assert parsed.message == CHUNK.encode()
    sent = event["Records"][0]["Sns"]["MessageAttributes"]
    expected = {k: v["StringValue"] for k, v in CHUNK.message_attributes().items()}
    assert {k: v["Value"] for k, v in sent.items()} == expected
    assert sent
    assert event["Records"][1]["Sns"]["MessageAttributes"] == {}


def test_s3_events_encode_the_key_as_s3_does_and_name_the_version() -> None:
    event = lambda_events.s3_event(
        "landing", "incoming/order/a b+c.jsonl", "e1", version_id="v1", sequencer="0A"
    )
    parsed = S3Event(event, None)
    assert (parsed.bucket, parsed.key) == ("landing", "incoming/order/a b+c.jsonl")
    obj = event["Records"][0]["s3"]["object"]
    assert obj["key"] == "incoming/order/a+b%2Bc.jsonl"
    assert (obj["eTag"], obj["versionId"], obj["sequencer"]) == ("e1", "v1", "0A")
    assert "versionId" not in lambda_events.s3_event("b", "k", "e")["Records"][0]["s3"]["object"]
