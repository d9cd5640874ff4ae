"""Wiring of the ingest app: S3 objects, continuations and scheduled pulls → chalicelib."""

from __future__ import annotations

from typing import Any

from chalice import Chalice, Rate

from chalicelib import check, pull, service
from sluice import observability
from sluice.config import names

app = Chalice(app_name="sluice-ingest", configure_logs=False)
observability.install(app, service="ingest")
_names = names()


# No `prefix=`: moto 5.2.5 answers 500 to the `Prefix` filter rule `chalice deploy` sends, and
# an object landed outside incoming/<type>/ should be quarantined with a reason, not ignored.
@app.on_s3_event(bucket=_names.landing_bucket, events=["s3:ObjectCreated:*"])
def on_object_created(event: Any) -> dict[str, int]:
    return service.handle_s3_event(event.to_dict(), event.context)


@app.on_sqs_message(queue=_names.ingest_continue_queue, batch_size=1)
def on_continue(event: Any) -> Any:
    return service.handle_continue(event.to_dict(), event.context)


@app.schedule(Rate(5, unit=Rate.MINUTES))
def pull_sources(event: Any) -> dict[str, Any]:
    context = getattr(event, "context", None)
    remaining = context.get_remaining_time_in_millis() if context is not None else None
    return pull.handle_schedule(event.to_dict(), remaining)


# Objects still open: Object Stuck past their deadline or with records dead-lettered, and the
# backstop for an Object Delivered (or Landed) whose emission failed.
@app.schedule(Rate(5, unit=Rate.MINUTES))
def check_objects(event: Any) -> dict[str, int]:
    return check.check_objects()
