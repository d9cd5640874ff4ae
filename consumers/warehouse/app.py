"""The warehouse consumer: every chunk from its queue becomes one gzip JSON Lines object."""

from __future__ import annotations

from typing import Any

from chalice import Chalice
from chalice.app import SQSEvent

from chalicelib import service
from sluice import observability
from sluice.config import names

app = Chalice(app_name="sluice-consumer-warehouse", configure_logs=False)
observability.install(app, service="consumer-warehouse")


@app.on_sqs_message(queue=names().consumer_queue("warehouse"), batch_size=10)
def consume(event: SQSEvent) -> dict[str, Any]:
    return dict(service.handle_event(event))
