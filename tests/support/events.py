"""Build SQS → Lambda events with distinct message ids (Chalice's generator repeats one id)."""

from __future__ import annotations

from typing import Any

from sluice.envelope import Chunk

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:sluice-test-raw"


def sqs_record(body: str, message_id: str, receive_count: int = 1) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": "1795759200000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1795759200001",
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1",
    }


def sqs_event(*bodies: str | Chunk, prefix: str = "msg") -> dict[str, Any]:
    """One SQS record per body (chunks are encoded), with message ids `prefix-0`, `prefix-1`, …"""
    return {
        "Records": [
            sqs_record(b.encode() if isinstance(b, Chunk) else b, f"{prefix}-{i}")
            for i, b in enumerate(bodies)
        ]
    }
