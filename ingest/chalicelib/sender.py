"""Send chunks to a queue with `SendMessageBatch`: ≤ 10 entries and ≤ 1 MiB per call.

Only the entries SQS reports failed are sent again, with bounded, jittered backoff; then a
`TransientError`. The buffer holds at most one batch, so memory stays flat.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from sluice import aws
from sluice.envelope import Chunk, attributes_size
from sluice.errors import TransientError
from sluice.lazy import first_use
from sluice.observability import get_logger
from sluice.observability.tracing import inject_trace_context

log = get_logger(__name__)

MAX_ENTRIES = 10
MAX_BATCH_BYTES = 1024 * 1024


class SendError(TransientError):
    """Some chunks could not be sent; the invocation fails and the event is retried."""


def entry_size(body: str, attributes: dict[str, Any]) -> int:
    """Bytes SQS counts for one entry: the body and every attribute's name, type and value."""
    return len(body.encode("utf-8")) + attributes_size(attributes)


class BatchSender:
    """Buffers chunks into batches for one queue; `after_send` runs for each sent chunk."""

    def __init__(
        self,
        queue_url: Callable[[], str],
        *,
        client: Any = None,
        after_send: Callable[[Chunk], None] | None = None,
        max_attempts: int = 5,
        base_delay_s: float = 0.05,
        max_delay_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._queue_url = queue_url
        self._client = client
        self._after_send = after_send
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._sleep = sleep
        self._batch: list[tuple[Chunk, dict[str, Any]]] = []
        self._bytes = 0
        self.sent_chunks = 0
        self.sent_calls = 0

    client: first_use[Any] = first_use(lambda self: aws.sqs())

    def add(self, chunk: Chunk) -> None:
        body = chunk.encode()
        attributes = dict(inject_trace_context(chunk.message_attributes()))
        size = entry_size(body, attributes)
        if size > MAX_BATCH_BYTES:
            raise SendError(f"chunk {chunk.chunk_id} is {size} bytes; SQS takes {MAX_BATCH_BYTES}")
        if self._batch and (
            len(self._batch) >= MAX_ENTRIES or self._bytes + size > MAX_BATCH_BYTES
        ):
            self.flush()
        entry = {"Id": str(len(self._batch)), "MessageBody": body, "MessageAttributes": attributes}
        self._batch.append((chunk, entry))
        self._bytes += size

    def flush(self) -> None:
        """Send what is buffered; returns once every entry is accepted, or raises `SendError`."""
        if not self._batch:
            return
        batch, self._batch, self._bytes = self._batch, [], 0
        by_id = {entry["Id"]: (chunk, entry) for chunk, entry in batch}
        pending = list(by_id)
        for attempt in range(self.max_attempts):
            if attempt:
                cap = min(self.max_delay_s, self.base_delay_s * 2**attempt)
                self._sleep(random.uniform(cap / 2, cap))
            failed = self._send([by_id[i][1] for i in pending])
            for entry_id in pending:
                if entry_id not in failed:
                    self._sent(by_id[entry_id][0])
            fatal = {i: f for i, f in failed.items() if f.get("SenderFault")}
            if fatal:
                detail = "; ".join(f"{f.get('Code')}: {f.get('Message')}" for f in fatal.values())
                raise SendError(f"SQS refused {len(fatal)} chunk(s) as malformed: {detail}")
            pending = [i for i in pending if i in failed]
            if not pending:
                return
            log.warning(
                "SendMessageBatch entries failed; retrying them",
                extra={"failed": len(pending), "attempt": attempt + 1},
            )
        codes = sorted({str(failed[i].get("Code")) for i in pending})
        raise SendError(
            f"{len(pending)} chunk(s) not accepted by SQS after {self.max_attempts} attempts "
            f"({', '.join(codes)})"
        )

    def _send(self, entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        self.sent_calls += 1
        try:
            response = self.client.send_message_batch(QueueUrl=self._queue_url(), Entries=entries)
        except aws.client_errors() as exc:
            raise SendError(f"SendMessageBatch failed: {exc}") from exc
        return {str(f["Id"]): f for f in response.get("Failed") or []}

    def _sent(self, chunk: Chunk) -> None:
        self.sent_chunks += 1
        if self._after_send is not None:
            self._after_send(chunk)
