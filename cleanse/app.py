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
cleanser = Cleanser(StageRuntime(name="cleanse"))


# 5 chunks of up to 1 MiB (the size ingest and cleanse cut) fit Lambda's 6 MB payload.
@app.on_sqs_message(queue=names().raw_queue, batch_size=5, name="cleanse")
def cleanse(event: Any) -> Any:
    return cleanser.handle(event)
