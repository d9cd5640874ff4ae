"""The cleanse app: raw queue → validate and normalise → clean queue.

Wiring only: what it does with a chunk is `chalicelib.service.handle_chunk`.
"""

from __future__ import annotations

from chalice import Chalice
from chalice.app import SQSEvent

from chalicelib import service
from sluice import observability
from sluice.batch import BatchResponse
from sluice.config import names

app = Chalice(app_name="sluice-cleanse", configure_logs=False)
observability.install(app, service=service.STAGE)


# 5 chunks of up to 1 MiB (the size ingest and cleanse cut) fit Lambda's 6 MB payload.
@app.on_sqs_message(queue=names().raw_queue, batch_size=5, name="cleanse")
def cleanse(event: SQSEvent) -> BatchResponse:
    """Cleanse each chunk of the batch; only failed chunks are retried (`batchItemFailures`)."""
    return service.runtime().handle_sqs(event, service.handle_chunk)
