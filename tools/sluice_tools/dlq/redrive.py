"""Redrive a DLQ: SQS `StartMessageMoveTask` where the API exists, else a careful manual move.

The manual move sends each message (body byte-identical, message attributes kept) and deletes
it from the DLQ only after the send succeeded; a message that could not be sent stays.
Redriven chunks are processed once: the stages claim chunks by id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice_tools.dlq.queues import attributes, release

MOVE_VISIBILITY_S = 120
UNSUPPORTED_CODES = frozenset(
    {"500", "501", "NotImplemented", "InvalidAction", "UnsupportedOperation", "UnknownOperation"}
)


class RedriveRefusedError(ValueError):
    """This queue cannot be redriven by this tool (e.g. a Lambda on-failure queue)."""


@dataclass
class RedriveResult:
    method: str  # "move-task" | "manual"
    moved: int = 0
    failed: list[str] = field(default_factory=list)  # message ids left in the DLQ
    task_handle: str | None = None


def move_task_unsupported(exc: BaseException) -> bool:
    """True if `exc` says the endpoint has no StartMessageMoveTask (moto, in or out of process)."""
    if isinstance(exc, NotImplementedError):
        return True
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return False
    error = response.get("Error") or {}
    message = str(error.get("Message") or "")
    return str(error.get("Code") or "") in UNSUPPORTED_CODES or "not been implemented" in message


def redrive(
    sqs: Any, dlq_url: str, target_url: str, *, use_move_task: bool = True
) -> RedriveResult:
    """Move every message of `dlq_url` to `target_url`."""
    if use_move_task:
        source_arn = attributes(sqs, dlq_url, "QueueArn")["QueueArn"]
        target_arn = attributes(sqs, target_url, "QueueArn")["QueueArn"]
        try:
            started = sqs.start_message_move_task(SourceArn=source_arn, DestinationArn=target_arn)
        except Exception as exc:
            if not move_task_unsupported(exc):
                raise
        else:
            return RedriveResult("move-task", task_handle=started.get("TaskHandle"))
    return move_messages(sqs, dlq_url, target_url)


def move_messages(sqs: Any, source_url: str, target_url: str) -> RedriveResult:
    """Receive up to 10, send each to the target, delete each only once it was sent."""
    result = RedriveResult("manual")
    kept: list[Mapping[str, Any]] = []
    failed_ids: set[str] = set()
    try:
        while True:
            page = sqs.receive_message(
                QueueUrl=source_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=MOVE_VISIBILITY_S,
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            messages = [m for m in page.get("Messages") or [] if m["MessageId"] not in failed_ids]
            if not messages:
                return result
            for message in messages:
                try:
                    sqs.send_message(
                        QueueUrl=target_url,
                        MessageBody=message["Body"],
                        MessageAttributes=_sendable(message.get("MessageAttributes") or {}),
                    )
                except Exception:
                    failed_ids.add(message["MessageId"])
                    result.failed.append(message["MessageId"])
                    kept.append(message)
                    continue
                sqs.delete_message(QueueUrl=source_url, ReceiptHandle=message["ReceiptHandle"])
                result.moved += 1
    finally:
        if kept:
            release(sqs, source_url, kept)  # what could not be sent is visible again at once


def _sendable(received: Mapping[str, Any]) -> dict[str, Any]:
    """Message attributes as `send_message` takes them (received ones carry empty lists)."""
    out: dict[str, Any] = {}
    for name, value in received.items():
        attr = {"DataType": value["DataType"]}
        for key in ("StringValue", "BinaryValue"):
            if key in value:
                attr[key] = value[key]
        out[name] = attr
    return out
