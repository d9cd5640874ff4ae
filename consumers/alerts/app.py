"""The alerts consumer: a human-readable alert per high-priority record (direct SNS)."""

from __future__ import annotations

from chalice import Chalice
from chalice.app import SNSEvent

from chalicelib import service
from sluice import observability
from sluice.config import names

app = Chalice(app_name="sluice-consumer-alerts", configure_logs=False)
observability.install(app, service="consumer-alerts")


@app.on_sns_message(topic=names().records_topic)
def consume(event: SNSEvent) -> None:
    service.handle_event(event.to_dict(), event.context)
