"""The warehouse consumer: the chunks of each batch become a few gzip JSON Lines objects.

Batches of up to 40 chunks, gathered for at most 1 s once the first is there (a busy queue
fills them at once): fewer, larger objects (docs/decisions.md, 2026-12-04). Wiring only.
"""

from __future__ import annotations

from chalice import Chalice
from chalice.app import SQSEvent

from chalicelib import service
from sluice import observability
from sluice.batch import BatchResponse
from sluice.config import names

app = Chalice(app_name="sluice-consumer-warehouse", configure_logs=False)
observability.install(app, service=service.STAGE)


@app.on_sqs_message(
    queue=names().consumer_queue("warehouse"), batch_size=40, maximum_batching_window_in_seconds=1
)
def consume(event: SQSEvent) -> BatchResponse:
    """Each chunk's rows, then the batch's objects; only failed chunks are retried."""
    return service.runtime().handle_sqs(event, service.handle_chunk, finish=service.write_objects)
