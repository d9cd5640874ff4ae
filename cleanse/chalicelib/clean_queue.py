"""The clean queue adapter: one `SendMessage` per output chunk; botocore stays in here.

A failed send is a `TransientError`: the input chunk is retried, and the router drops the
copy it may already have by the output chunk's deterministic id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice import aws
from sluice.config import get_settings
from sluice.envelope import Chunk
from sluice.errors import TransientError
from sluice.lazy import first_use
from sluice.observability.tracing import inject_trace_context

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class CleanQueueSendError(TransientError):
    """The clean queue refused or did not answer; retry the input chunk."""


class CleanQueue:
    """Sends chunks to the clean queue (`names.clean_queue`); the URL is looked up once."""

    def __init__(self, client: SQSClient | None = None, *, queue_name: str | None = None) -> None:
        self._client = client
        self._queue_name = queue_name
        self._url: str | None = None

    client: first_use[SQSClient] = first_use(lambda self: aws.sqs())
    queue_name: first_use[str] = first_use(lambda self: get_settings().names.clean_queue)

    @property
    def url(self) -> str:
        if self._url is None:
            try:
                self._url = self.client.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
            except aws.client_errors() as exc:
                raise CleanQueueSendError(f"no URL for queue {self.queue_name}: {exc}") from exc
        return self._url

    def send(self, chunk: Chunk) -> None:
        """Send `chunk` with its message attributes (type, correlation id, chunk id)."""
        try:
            self.client.send_message(
                QueueUrl=self.url,
                MessageBody=chunk.encode(),
                MessageAttributes=inject_trace_context(chunk.message_attributes()),  # type: ignore[arg-type]
            )
        except aws.client_errors() as exc:
            raise CleanQueueSendError(
                f"could not send chunk {chunk.chunk_id} to {self.queue_name}: {exc}"
            ) from exc
