"""The event shapes Lambda hands a function, built from what SQS, S3, SNS and EventBridge gave.

Pure functions over dicts: no I/O, so each shape is tested on its own.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from sluice_tools.local.emulator import ACCOUNT_ID


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sqs_event(messages: Iterable[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS → Lambda event from `receive_message` results (AttributeNames=All)."""
    records = []
    for m in messages:
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": dict(m.get("Attributes") or {}),
                "messageAttributes": {
                    name: _lambda_attribute(value)
                    for name, value in (m.get("MessageAttributes") or {}).items()
                },
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


def _lambda_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """SQS API attribute → the Lambda event's camelCase form."""
    out: dict[str, Any] = {
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": value.get("DataType", "String"),
    }
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        raw = value["BinaryValue"]
        out["binaryValue"] = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return out


def s3_records(body: str, config_id: str) -> list[dict[str, Any]] | None:
    """The records of an S3 notification that reached a queue; None for `s3:TestEvent`.

    moto leaves out a few fields Lambda's event has (`sequencer`, `userIdentity`, ...):
    they are filled in. The key stays form-URL-encoded, as S3 sends it.
    """
    doc = json.loads(body)
    if doc.get("Event") == "s3:TestEvent" or "Records" not in doc:
        return None
    records = []
    for record in doc["Records"]:
        rec = dict(record)
        rec.setdefault("eventVersion", "2.1")
        rec.setdefault("userIdentity", {"principalId": "AWS:LOCAL"})
        rec.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
        rec.setdefault("responseElements", {"x-amz-request-id": uuid.uuid4().hex[:16].upper()})
        s3 = dict(rec.get("s3") or {})
        s3["configurationId"] = config_id or s3.get("configurationId", "")
        bucket = dict(s3.get("bucket") or {})
        bucket.setdefault("ownerIdentity", {"principalId": "LOCAL"})
        bucket.setdefault("arn", f"arn:aws:s3:::{bucket.get('name', '')}")
        obj = dict(s3.get("object") or {})
        # moto encodes "/" as %2F; S3 form-encodes the key but keeps its slashes.
        obj["key"] = quote_plus(unquote_plus(str(obj.get("key", ""))), safe="/")
        obj.setdefault("sequencer", f"{time.time_ns():016X}")
        s3["bucket"], s3["object"] = bucket, obj
        rec["s3"] = s3
        records.append(rec)
    return records


def s3_event_key(record: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """What identifies the object version an S3 event announces: bucket, key, ETag, version.

    Not the event name: for one multipart upload moto emits `ObjectCreated:Put` and
    `ObjectCreated:CompleteMultipartUpload`, with the same key, ETag and version.
    """
    s3 = record.get("s3") or {}
    obj = s3.get("object") or {}
    return (
        str((s3.get("bucket") or {}).get("name", "")),
        str(obj.get("key", "")),
        str(obj.get("eTag", "")),
        str(obj.get("versionId", "")),
    )


def sns_event(body: str, subscription_arn: str) -> dict[str, Any]:
    """An SNS → Lambda event from the SNS envelope an SQS subscription (not raw) received."""
    doc = json.loads(body)
    sns = {
        "Type": doc.get("Type", "Notification"),
        "MessageId": doc["MessageId"],
        "TopicArn": doc["TopicArn"],
        "Subject": doc.get("Subject"),
        "Message": doc["Message"],
        "Timestamp": doc.get("Timestamp") or iso_now(),
        "SignatureVersion": doc.get("SignatureVersion", "1"),
        "Signature": doc.get("Signature", "EXAMPLE"),
        "SigningCertUrl": doc.get("SigningCertURL", ""),
        "UnsubscribeUrl": doc.get("UnsubscribeURL", ""),
        "MessageAttributes": {
            name: {"Type": value.get("Type", "String"), "Value": value.get("Value")}
            for name, value in (doc.get("MessageAttributes") or {}).items()
        },
    }
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": sns,
            }
        ]
    }


def scheduled_event(rule_arn: str, region: str) -> dict[str, Any]:
    """What EventBridge sends a target of a schedule rule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


def on_failure_record(
    *,
    request_id: str,
    function_arn: str,
    attempts: int,
    payload: Any,
    error: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The record Lambda sends an async invocation's on-failure destination."""
    return {
        "version": "1.0",
        "timestamp": iso_now(),
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{function_arn}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": payload,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": dict(error or {}),
    }
