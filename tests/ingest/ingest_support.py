"""Helpers of ingest's tests: the moto platform's view, S3 events, a fake Lambda context."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.config import ResourceNames
from sluice.envelope import Chunk
from sluice_tools import lambda_events

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef


@dataclass
class Platform:
    """The moto account's resources and helpers to look into them."""

    names: ResourceNames
    raw_url: str
    continue_url: str
    extra: dict[str, Any] = field(default_factory=dict)

    def put(self, key: str, body: bytes, *, gz: bool = False) -> dict[str, Any]:
        """Upload an object and return the S3 event AWS would send for it."""
        data = gzip.compress(body) if gz else body
        response = aws.s3().put_object(Bucket=self.names.landing_bucket, Key=key, Body=data)
        return s3_event(self.names.landing_bucket, key, response["ETag"].strip('"'))

    def raw_chunks(self) -> list[Chunk]:
        """Every chunk in the raw queue (drained), in chunk-ordinal order per source."""
        return [Chunk.decode(m["Body"]) for m in drain(self.raw_url)]

    def continuations(self) -> list[MessageTypeDef]:
        return drain(self.continue_url)

    def quarantined(self) -> list[dict[str, Any]]:
        s3 = aws.s3()
        docs = []
        listing = s3.list_objects_v2(Bucket=self.names.quarantine_bucket)
        for obj in listing.get("Contents", []):
            body = s3.get_object(Bucket=self.names.quarantine_bucket, Key=obj["Key"])["Body"]
            docs.append(json.loads(body.read()))
        return sorted(docs, key=lambda d: d.get("reason") or "")

    def ledger(self) -> list[dict[str, Any]]:
        from sluice.ledger import SORT_KEY, is_entry

        items = aws.dynamodb().scan(TableName=self.names.ledger_table)["Items"]
        return [
            {k: (int(v["N"]) if "N" in v else v.get("S")) for k, v in item.items()}
            for item in items
            if is_entry(item[SORT_KEY]["S"])  # not the objects' progress items
        ]

    def ledger_totals(self) -> dict[str, int]:
        totals = {"records_in": 0, "out": 0, "quarantined": 0}
        for item in self.ledger():
            for name in totals:
                totals[name] += int(item.get(name, 0))
        return totals


def s3_event(bucket: str, key: str, etag: str, name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """An S3 → Lambda event as AWS sends it (key form-URL-encoded)."""
    return lambda_events.s3_event(bucket, key, etag, name=name)


def drain(url: str) -> list[MessageTypeDef]:
    sqs = aws.sqs()
    messages: list[MessageTypeDef] = []
    while True:
        got = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not got:
            return messages
        messages.extend(got)
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )


class FakeContext:
    """A Lambda context whose remaining time drops below any margin after `calls` asks."""

    def __init__(self, calls: int = 10**9, high: int = 600_000, low: int = 1_000) -> None:
        self.calls = calls
        self.high = high
        self.low = low
        self.asked = 0

    def get_remaining_time_in_millis(self) -> int:
        self.asked += 1
        return self.high if self.asked <= self.calls else self.low
