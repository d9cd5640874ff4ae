"""The index consumer: keeps every version of each entity in the records table (newest = latest).

Wiring only: what it does with a chunk is `chalicelib.service.handle_chunk`.
"""

from __future__ import annotations

from chalice import Chalice
from chalice.app import SQSEvent

from chalicelib import service
from sluice import observability
from sluice.batch import BatchResponse
from sluice.config import names

app = Chalice(app_name="sluice-consumer-index", configure_logs=False)
observability.install(app, service=service.STAGE)


@app.on_sqs_message(queue=names().consumer_queue("index"), batch_size=5)
def consume(event: SQSEvent) -> BatchResponse:
    """Index each chunk of the batch; only failed chunks are retried (`batchItemFailures`)."""
    return service.runtime().handle_sqs(event, service.handle_chunk)
