"""A stage's queues: discovery by name, DLQ roles, peeking without consuming, and decoding.

Peeking receives with a short visibility timeout, never deletes, and makes what it saw
visible again at the end; it does raise each message's receive count (SQS has no read-only
receive).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice.config import ResourceNames
from sluice.envelope import Chunk, object_correlation_id

DEAD_SUFFIXES = ("-dlq", "-failures")
PEEK_VISIBILITY_S = 60
PEEK_MAX_MESSAGES = 10_000
DEPTH_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


class QueueNotFoundError(LookupError):
    """A queue name, URL or role that names no queue of the stage."""


def is_dead_letter(name: str) -> bool:
    return name.endswith(DEAD_SUFFIXES)


def queue_name(url_or_name: str) -> str:
    return url_or_name.rstrip("/").rsplit("/", 1)[-1]


def role_of(name: str, names: ResourceNames | None = None) -> str:
    """`sluice-dev-consumer-index-dlq` → `consumer-index-dlq` (the name without prefix-stage)."""
    if names is not None:
        head = names.name("")
        if name.startswith(head):
            return name[len(head) :]
    return name


def receiving_stage(name: str, names: ResourceNames | None = None) -> str:
    """The pipeline stage that reads the queue `name` (or whose input a DLQ holds)."""
    base = role_of(name, names)
    for suffix in DEAD_SUFFIXES:
        base = base.removesuffix(suffix)
    for tail, stage in (("ingest-continue", "ingest"), ("ingest", "ingest")):
        if base == tail or base.endswith(f"-{tail}"):
            return stage
    if base == "raw" or base.endswith("-raw"):
        return "cleanse"
    if base == "clean" or base.endswith("-clean"):
        return "router"
    at = base.find("consumer-")
    return base[at:] if at >= 0 else base


def stage_queue_urls(sqs: Any, names: ResourceNames) -> list[str]:
    """Every queue URL of the stage (`<prefix>-<stage>-*`), all pages."""
    args: dict[str, Any] = {"QueueNamePrefix": names.name(""), "MaxResults": 1000}
    urls: list[str] = []
    while True:
        page = sqs.list_queues(**args)
        urls.extend(page.get("QueueUrls") or [])
        token = page.get("NextToken")
        if not token:
            return sorted(urls, key=queue_name)
        args["NextToken"] = token


def resolve_queue(sqs: Any, queue: str, names: ResourceNames) -> str:
    """A queue URL from a URL, a full name, or a role (`raw-dlq`, `consumer-index-dlq`)."""
    if queue.startswith(("http://", "https://")):
        return queue
    candidates = [queue] if queue.startswith(names.name("")) else [names.name(queue), queue]
    for name in candidates:
        try:
            return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        except Exception as exc:  # botocore's QueueDoesNotExist, raised lazily
            if "NonExistentQueue" not in str(exc) and "QueueDoesNotExist" not in str(exc):
                raise
    raise QueueNotFoundError(f"no queue {queue!r} in stage {names.stage!r} (tried {candidates})")


def attributes(sqs: Any, url: str, *names: str) -> dict[str, str]:
    response = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names))
    return dict(response.get("Attributes") or {})


def depth(sqs: Any, url: str) -> dict[str, int]:
    found = attributes(sqs, url, *DEPTH_ATTRIBUTES)
    return {
        "visible": int(found.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(found.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "delayed": int(found.get("ApproximateNumberOfMessagesDelayed", 0)),
    }


def source_queues(sqs: Any, dlq_url: str, urls: Iterable[str]) -> list[str]:
    """The queues whose RedrivePolicy sends their dead letters to `dlq_url`."""
    arn = attributes(sqs, dlq_url, "QueueArn")["QueueArn"]
    found = []
    for url in urls:
        policy = attributes(sqs, url, "RedrivePolicy").get("RedrivePolicy")
        if policy and json.loads(policy).get("deadLetterTargetArn") == arn:
            found.append(url)
    return found


def peek(
    sqs: Any, url: str, limit: int = PEEK_MAX_MESSAGES, *, visibility: int = PEEK_VISIBILITY_S
) -> list[dict[str, Any]]:
    """Up to `limit` messages of `url`, left in the queue (visible again when this returns)."""
    seen: dict[str, dict[str, Any]] = {}
    try:
        while len(seen) < limit:
            page = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(10, limit - len(seen)),
                VisibilityTimeout=visibility,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            fresh = [m for m in page.get("Messages") or [] if m["MessageId"] not in seen]
            if not fresh:
                break
            seen.update((m["MessageId"], m) for m in fresh)
    finally:
        release(sqs, url, seen.values())
    return list(seen.values())


def release(sqs: Any, url: str, messages: Iterable[Mapping[str, Any]]) -> None:
    """Make received messages visible again now (visibility timeout 0)."""
    batch = [
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
        for i, m in enumerate(messages)
    ]
    for start in range(0, len(batch), 10):
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=batch[start : start + 10])


# Message attributes (String) of a chunk of records a consumer isolated as failed.
ATTR_FAILED_FROM = "failed_from"  # the chunk whose entry counted them as failed
ATTR_ERROR_TYPE = "error_type"
ATTR_ERROR_MESSAGE = "error_message"
ATTR_FAILED_STAGE = "failed_stage"
ATTR_ATTEMPT = "attempt"


@dataclass
class Failure:
    """Why a message is dead: from a failed chunk's attributes or a Lambda on-failure record."""

    error_type: str | None = None
    error_message: str | None = None
    stage: str | None = None  # the stage, or the function of an on-failure record
    attempt: str | None = None
    failed_from: str | None = None
    condition: str | None = None  # on-failure records: RetriesExhausted, EventAgeExceeded

    def where(self) -> str:
        """`stage S, attempt N`, leaving out what is unknown."""
        parts = [f"stage {self.stage}"] if self.stage else []
        parts += [f"attempt {self.attempt}"] if self.attempt else []
        return ", ".join(parts)

    def text(self, *head: str | None) -> str:
        """`[head: ]Type: message (stage S, attempt N)`, leaving out what is unknown."""
        parts = (*head, self.error_type, self.error_message)
        what = ": ".join(str(p) for p in parts if p) or "unknown error"
        where = self.where()
        return f"{what} ({where})" if where else what

    def to_dict(self) -> dict[str, str | None]:
        return {
            "error_type": self.error_type,
            "error_message": self.error_message,
            "stage": self.stage,
            "attempt": self.attempt,
            "failed_from": self.failed_from,
            "condition": self.condition,
        }


@dataclass
class Decoded:
    """What one dead message holds: chunks (envelopes), objects (S3 URIs) or checkpoints."""

    kind: str  # envelope | failure | checkpoint | unknown
    chunks: list[Chunk] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    # Per object: its correlation id, when the event gave its ETag.
    object_correlation_ids: list[str | None] = field(default_factory=list)
    correlation_ids: list[str] = field(default_factory=list)
    reason: str | None = None
    failure: Failure | None = None
    receive_count: int = 0
    message_id: str = ""


def decode(message: Mapping[str, Any]) -> Decoded:
    """Decode an SQS message of a DLQ or failures queue (never raises)."""
    attrs = message.get("Attributes") or {}
    out = Decoded("unknown", receive_count=int(attrs.get("ApproximateReceiveCount", 0)))
    out.message_id = str(message.get("MessageId", ""))
    out.failure = _failed_records(message.get("MessageAttributes") or {})
    if out.failure is not None:
        out.reason = out.failure.text()
    try:
        body = json.loads(message.get("Body") or "")
    except ValueError:
        out.reason = "; ".join(r for r in (out.reason, "body is not JSON") if r)
        return out
    if isinstance(body, Mapping) and "requestPayload" in body:
        out.kind = "failure"
        out.failure = _on_failure(body)
        response = body.get("responseContext") or {}
        out.reason = out.failure.text(out.failure.condition, response.get("functionError"))
        _decode_request(body["requestPayload"], out)
        return out
    try:
        chunk = Chunk.decode(body)
    except Exception:
        pass
    else:
        out.kind = "envelope"
        out.chunks.append(chunk)
        out.correlation_ids.append(chunk.correlation_id)
        return out
    if isinstance(body, Mapping) and "correlation_id" in body:
        out.kind = "checkpoint"
        out.correlation_ids.append(str(body["correlation_id"]))
        bucket, key = body.get("bucket"), body.get("key")
        if bucket and key:
            out.objects.append(f"s3://{bucket}/{key}")
    return out


def _failed_records(attributes: Mapping[str, Any]) -> Failure | None:
    """The failure of a chunk of isolated failed records, from its message attributes."""

    def text(name: str) -> str | None:
        value = attributes.get(name)
        found = value.get("StringValue") if isinstance(value, Mapping) else None
        return str(found) if found else None

    failure = Failure(
        error_type=text(ATTR_ERROR_TYPE),
        error_message=text(ATTR_ERROR_MESSAGE),
        stage=text(ATTR_FAILED_STAGE),
        attempt=text(ATTR_ATTEMPT),
        failed_from=text(ATTR_FAILED_FROM),
    )
    return failure if any(failure.to_dict().values()) else None


def _on_failure(body: Mapping[str, Any]) -> Failure:
    """A Lambda on-failure record's failure: `responsePayload` and `requestContext`."""
    context = body.get("requestContext") or {}
    payload = body.get("responsePayload")
    payload = payload if isinstance(payload, Mapping) else {}
    arn = str(context.get("functionArn") or "")
    function = arn.split(":function:", 1)[1].split(":", 1)[0] if ":function:" in arn else None
    attempt = context.get("approximateInvokeCount")
    return Failure(
        error_type=str(payload["errorType"]) if payload.get("errorType") else None,
        error_message=str(payload["errorMessage"]) if payload.get("errorMessage") else None,
        stage=function,
        attempt=str(attempt) if attempt is not None else None,
        condition=str(context["condition"]) if context.get("condition") else None,
    )


def _decode_request(request: Any, out: Decoded) -> None:
    """The event of a failed async invocation: SNS records (envelopes) or S3 records."""
    for record in (request.get("Records") or []) if isinstance(request, Mapping) else []:
        sns = record.get("Sns") if isinstance(record, Mapping) else None
        if isinstance(sns, Mapping):
            try:
                chunk = Chunk.decode(sns.get("Message") or "")
            except Exception:
                continue
            out.chunks.append(chunk)
            out.correlation_ids.append(chunk.correlation_id)
            continue
        s3 = record.get("s3") if isinstance(record, Mapping) else None
        if isinstance(s3, Mapping):
            from urllib.parse import unquote_plus

            bucket = (s3.get("bucket") or {}).get("name")
            obj = s3.get("object") or {}
            key = unquote_plus(str(obj.get("key") or ""))
            etag = str(obj.get("eTag") or "").strip('"')
            out.objects.append(f"s3://{bucket}/{key}")
            corr = object_correlation_id(str(bucket), key, etag) if bucket and etag else None
            out.object_correlation_ids.append(corr)


def landing_event_queues(s3: Any, sqs: Any, bucket: str) -> list[str] | None:
    """The local runtime's queues that carry the landing bucket's S3 events to ingest
    (`<function>-rt-s3`, notification ids `sluice-rt-…`); None where there are none (AWS,
    where S3 invokes Lambda directly and a pending event cannot be seen)."""
    config = s3.get_bucket_notification_configuration(Bucket=bucket)
    queues = config.get("QueueConfigurations") or []
    if not queues:
        return None
    from sluice_tools.local.runtime import INTERNAL_ID_PREFIX

    arns = [
        str(q["QueueArn"]) for q in queues if str(q.get("Id", "")).startswith(INTERNAL_ID_PREFIX)
    ]
    if not arns:
        return None
    return [str(sqs.get_queue_url(QueueName=a.rsplit(":", 1)[-1])["QueueUrl"]) for a in arns]


def waiting(sqs: Any, urls: Iterable[str]) -> int:
    """Messages waiting, in process or delayed in these queues."""
    return sum(sum(depth(sqs, url).values()) for url in urls)


def in_flight(sqs: Any, urls: Iterable[str], names: ResourceNames | None = None) -> dict[str, int]:
    """Messages waiting or in process in each stage's input queues (DLQs excluded)."""
    found: dict[str, int] = {}
    for url in urls:
        name = queue_name(url)
        if is_dead_letter(name):
            continue
        count = waiting(sqs, [url])
        if count:
            stage = receiving_stage(name, names)
            found[stage] = found.get(stage, 0) + count
    return found
