"""The router app: SQS clean queue → routing attributes → SNS records topic.

Wiring only: what it does with a chunk is `chalicelib.service.handle_chunk`.
"""

from __future__ import annotations

from chalice import Chalice
from chalice.app import SQSEvent

from chalicelib import service
from sluice import observability
from sluice.batch import BatchResponse
from sluice.config import names

app = Chalice(app_name="sluice-router", configure_logs=False)
observability.install(app, service=service.STAGE)


# 5 chunks of up to 1 MiB (the size ingest and cleanse cut) fit Lambda's 6 MB payload.
@app.on_sqs_message(queue=names().clean_queue, batch_size=5)
def route(event: SQSEvent) -> BatchResponse:
    """Route each chunk of the batch; only failed chunks are retried (`batchItemFailures`)."""
    return service.runtime().handle_sqs(event, service.handle_chunk)
