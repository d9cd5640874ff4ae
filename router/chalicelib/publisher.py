"""Publish chunks to the records topic with SNS `PublishBatch`: the router's only AWS adapter.

A call holds at most 10 entries and 256 KiB in all; entries SNS reports `Failed` are retried
alone, a bounded number of times, then the chunk fails as a `TransientError` (SQS retries it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from sluice import aws
from sluice.config import SNS_MAX_MESSAGE_BYTES, Settings, get_settings
from sluice.envelope import Chunk, StringAttribute, attributes_size
from sluice.errors import TransientError
from sluice.lazy import first_use
from sluice.observability import add_metric, get_logger
from sluice.observability.tracing import inject_trace_context

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

log = get_logger(__name__)

TOPIC_ARN_ENV = "SLUICE_RECORDS_TOPIC_ARN"
MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = SNS_MAX_MESSAGE_BYTES  # the whole PublishBatch request, attributes included
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_S = 0.1


class PublishError(TransientError):
    """Chunks could not be published; the input chunk is retried (downstream dedupes by id)."""


class Entry(TypedDict):
    Id: str
    Message: str
    MessageAttributes: dict[str, StringAttribute]


class ChunkPublisher(Protocol):
    """Where the router sends the chunks it made (SNS; a fake in tests)."""

    def publish(self, chunks: Sequence[Chunk]) -> None: ...


def entry_of(chunk: Chunk, entry_id: str) -> Entry:
    return {
        "Id": entry_id,
        "Message": chunk.encode(),
        "MessageAttributes": inject_trace_context(chunk.message_attributes()),
    }


def entry_size(entry: Entry) -> int:
    """Bytes SNS counts for an entry: the message plus each attribute's name, type and value."""
    return len(entry["Message"].encode("utf-8")) + attributes_size(entry["MessageAttributes"])


def plan_batches(
    entries: Sequence[Entry],
    *,
    max_entries: int = MAX_BATCH_ENTRIES,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[list[Entry]]:
    """Consecutive groups of entries within the per-call entry and byte limits."""
    batch: list[Entry] = []
    size = 0
    for entry in entries:
        n = entry_size(entry)
        if n > max_bytes:
            raise PublishError(f"entry {entry['Id']} is {n} bytes; SNS takes at most {max_bytes}")
        if batch and (len(batch) >= max_entries or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += n
    if batch:
        yield batch


def resolve_topic_arn(settings: Settings | None = None, sts: Any | None = None) -> str:
    """The records topic's ARN: `SLUICE_RECORDS_TOPIC_ARN` if set, else built from its name.

    The name is the stage's convention; the account and partition come from STS
    `GetCallerIdentity`, which needs no IAM permission (unlike `ListTopics`, which needs a
    `*` resource, or `CreateTopic`, which could silently create a stray topic).
    """
    settings = settings or get_settings()
    configured = settings.extra.get(TOPIC_ARN_ENV)
    if configured:
        return configured
    sts = sts if sts is not None else aws.client("sts")
    try:
        identity = sts.get_caller_identity()
    except aws.client_errors() as exc:
        raise PublishError(f"cannot learn the account to build the topic ARN: {exc}") from exc
    partition = str(identity["Arn"]).split(":")[1]
    topic = settings.names.records_topic
    return f"arn:{partition}:sns:{settings.region}:{identity['Account']}:{topic}"


class SnsPublisher:
    """`ChunkPublisher` on SNS `PublishBatch`; the topic ARN is resolved once, on first use."""

    def __init__(
        self,
        client: SNSClient | None = None,
        *,
        topic_arn: str | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff_s: float = DEFAULT_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
        resolve_arn: Callable[[], str] = resolve_topic_arn,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._client = client
        self._topic_arn = topic_arn
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._resolve_arn = resolve_arn

    client: first_use[SNSClient] = first_use(lambda self: aws.sns())
    topic_arn: first_use[str] = first_use(lambda self: self._resolve_arn())

    def publish(self, chunks: Sequence[Chunk]) -> None:
        """Publish every chunk once (at least once: a retried input chunk publishes again)."""
        entries = [entry_of(chunk, f"e{i}") for i, chunk in enumerate(chunks)]
        for batch in plan_batches(entries):
            self._publish_batch(batch)

    def _publish_batch(self, entries: list[Entry]) -> None:
        pending = entries
        codes: list[str] = []
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.client.publish_batch(
                    TopicArn=self.topic_arn,
                    PublishBatchRequestEntries=pending,  # type: ignore[arg-type]
                )
            except aws.client_errors() as exc:
                raise PublishError(f"PublishBatch to {self.topic_arn} failed: {exc}") from exc
            failed = response.get("Failed") or []
            add_metric("ChunksPublished", len(pending) - len(failed))
            if not failed:
                return
            failed_ids = {f["Id"] for f in failed}
            pending = [e for e in pending if e["Id"] in failed_ids]
            codes = sorted({str(f.get("Code")) for f in failed})
            log.warning(
                "PublishBatch entries failed",
                extra={"failed": len(failed), "codes": codes, "attempt": attempt},
            )
            add_metric("PublishEntriesFailed", len(failed))
            if any(f.get("SenderFault") for f in failed):
                break  # the request itself is wrong: retrying now cannot help
            if attempt < self.attempts:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
        raise PublishError(
            f"{len(pending)} of {len(entries)} PublishBatch entries to {self.topic_arn} "
            f"still failed ({', '.join(codes)})"
        )
