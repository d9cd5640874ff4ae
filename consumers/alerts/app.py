"""The alerts consumer: a human-readable alert per high-priority record (direct SNS).

Wiring only: what it does with a chunk is `chalicelib.service.handle_chunk`.
"""

from __future__ import annotations

from chalice import Chalice
from chalice.app import SNSEvent

from chalicelib import service
from sluice import observability
from sluice.config import names

app = Chalice(app_name="sluice-consumer-alerts", configure_logs=False)
observability.install(app, service=service.STAGE)


@app.on_sns_message(topic=names().records_topic)
def consume(event: SNSEvent) -> None:
    """Alert each chunk's high-priority records; an error makes Lambda retry the event."""
    service.runtime().handle_sns(event, service.handle_chunk)
