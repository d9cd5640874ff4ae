"""The cleanse app: raw queue → validate and normalise → clean queue. Wiring only."""

from __future__ import annotations

from typing import Any

from chalice import Chalice

from chalicelib.service import Cleanser
from sluice import observability
from sluice.config import names
from sluice.stage import StageRuntime

app = Chalice(app_name="sluice-cleanse", configure_logs=False)
observability.install(app, service="cleanse")
# Payloads stay as their JSON until read: a clean one passes on as it came (passthrough).
cleanser = Cleanser(StageRuntime(name="cleanse", lazy_payloads=True))


# 5 chunks of up to 1 MiB (the size ingest and cleanse cut) fit Lambda's 6 MB payload.
@app.on_sqs_message(queue=names().raw_queue, batch_size=5, name="cleanse")
def cleanse(event: Any) -> Any:
    return cleanser.handle(event)
