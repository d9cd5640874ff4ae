"""Lambda events for driving handlers directly: SQS, SNS and S3 events as AWS delivers them,
built from bodies and chunks (tests, benchmarks) or from messages a queue gave back.

One definition for the tests and the benchmarks (which do not import tests/). Pure
functions over dicts, standard library and `sluice.envelope` only. The local runtime builds
its own from what moto gave (`sluice_tools.local.events`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote_plus

from sluice.envelope import Chunk

REGION = "us-east-1"
ACCOUNT = "123456789012"
EVENT_TIME = "2026-11-27T06:00:00.000Z"


def queue_arn(name: str, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:aws:sqs:{region}:{account}:{name}"


def topic_arn(name: str, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:aws:sns:{region}:{account}:{name}"


# The queue a bare `sqs_event` comes from: the raw queue of stage `test`.
RAW_QUEUE_ARN = queue_arn("sluice-test-raw")


def _body(message: str | Chunk) -> str:
    return message.encode() if isinstance(message, Chunk) else message


def sqs_record(
    body: str | Chunk,
    message_id: str,
    receive_count: int = 1,
    *,
    source_arn: str = RAW_QUEUE_ARN,
    message_attributes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One SQS → Lambda record (a chunk is encoded); `message_attributes` as strings."""
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": _body(body),
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": "1795759200000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1795759200001",
        },
        "messageAttributes": {
            name: {"stringValue": value, "dataType": "String"}
            for name, value in (message_attributes or {}).items()
        },
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": source_arn,
        "awsRegion": source_arn.split(":")[3],
    }


def sqs_event(
    *bodies: str | Chunk, prefix: str = "msg", source_arn: str = RAW_QUEUE_ARN
) -> dict[str, Any]:
    """One SQS record per body (chunks are encoded), with message ids `prefix-0`, `prefix-1`, …
    (Chalice's own event generator repeats one id)."""
    return {
        "Records": [
            sqs_record(body, f"{prefix}-{i}", source_arn=source_arn)
            for i, body in enumerate(bodies)
        ]
    }


def received_sqs_event(
    messages: Iterable[Mapping[str, Any]], source_arn: str | None = None, region: str = REGION
) -> dict[str, Any]:
    """The SQS → Lambda event that delivers these `receive_message` results (with their
    attributes and message attributes); no `eventSourceARN` unless given."""
    records = []
    for m in messages:
        record = {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": dict(m.get("Attributes", {})),
            "messageAttributes": {
                k: {"stringValue": v.get("StringValue"), "dataType": v["DataType"]}
                for k, v in m.get("MessageAttributes", {}).items()
            },
            "md5OfBody": m.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "awsRegion": region,
        }
        if source_arn is not None:
            record["eventSourceARN"] = source_arn
        records.append(record)
    return {"Records": records}


def sns_record(
    message: str | Chunk,
    topic: str,
    message_id: str,
    attributes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One SNS → Lambda record delivering `message` with its message attributes: a chunk's
    own, or `attributes` (strings)."""
    if attributes is None and isinstance(message, Chunk):
        attributes = {k: v["StringValue"] for k, v in message.message_attributes().items()}
    return {
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": f"{topic}:6b0e71bd-7e97-4d97-80ce-4a0994e55286",
        "Sns": {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": topic,
            "Subject": None,
            "Message": _body(message),
            "Timestamp": EVENT_TIME,
            "MessageAttributes": {
                k: {"Type": "String", "Value": v} for k, v in (attributes or {}).items()
            },
        },
    }


def sns_event(
    *messages: str | Chunk, topic: str, message_ids: Iterable[str] | None = None
) -> dict[str, Any]:
    """One SNS record per message; message ids `sns-0`, `sns-1`, … unless given."""
    ids = list(message_ids) if message_ids is not None else []
    ids += [f"sns-{i}" for i in range(len(ids), len(messages))]
    return {"Records": [sns_record(m, topic, i) for m, i in zip(messages, ids, strict=False)]}


def s3_event(
    bucket: str,
    key: str,
    etag: str,
    *,
    name: str = "ObjectCreated:Put",
    size: int = 1,
    version_id: str | None = None,
    sequencer: str | None = None,
    configuration_id: str | None = None,
    event_time: str = EVENT_TIME,
    region: str = REGION,
    key_safe: str = "/",
) -> dict[str, Any]:
    """An S3 event for one object version, as S3 sends it to Lambda or a queue: the key
    form-URL-encoded, its slashes kept (`key_safe=""` encodes them too, as moto does)."""
    obj: dict[str, Any] = {"key": quote_plus(key, safe=key_safe), "size": size, "eTag": etag}
    if sequencer is not None:
        obj["sequencer"] = sequencer
    if version_id:
        obj["versionId"] = version_id
    s3: dict[str, Any] = {"s3SchemaVersion": "1.0"}
    if configuration_id is not None:
        s3["configurationId"] = configuration_id
    s3["bucket"] = {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}
    s3["object"] = obj
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": event_time,
                "eventName": name,
                "s3": s3,
            }
        ]
    }
