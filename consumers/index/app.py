"""The index consumer: keeps every version of each entity in the records table (newest = latest)."""

from __future__ import annotations

from typing import Any

from chalice import Chalice
from chalice.app import SQSEvent

from chalicelib import service
from sluice import observability
from sluice.config import names

app = Chalice(app_name="sluice-consumer-index", configure_logs=False)
observability.install(app, service="consumer-index")


@app.on_sqs_message(queue=names().consumer_queue("index"), batch_size=5)
def consume(event: SQSEvent) -> dict[str, Any]:
    return dict(service.handle_event(event))
