"""The ingest app: S3 objects, their continuations and scheduled pulls → the raw queue.

Wiring only: what it does with an object, a checkpoint or a schedule is in
`chalicelib.service` (`ingest_object`, `continue_object`, `pull_sources`, `check_objects`).
"""

from __future__ import annotations

from typing import Any

from chalice import Chalice, Rate
from chalice.app import CloudWatchEvent, S3Event, SQSEvent

from chalicelib import service
from chalicelib.checkpoint import Checkpoint
from sluice import observability
from sluice.batch import BatchResponse
from sluice.config import names

app = Chalice(app_name="sluice-ingest", configure_logs=False)
observability.install(app, service=service.STAGE)
_names = names()


# No `prefix=`: moto 5.2.5 answers 500 to the `Prefix` filter rule `chalice deploy` sends, and
# an object landed outside incoming/<type>/ should be quarantined with a reason, not ignored.
@app.on_s3_event(bucket=_names.landing_bucket, events=["s3:ObjectCreated:*"])
def on_object_created(event: S3Event) -> dict[str, int]:
    """Ingest each created object once; an error makes Lambda retry the event."""
    return service.runtime().handle_s3(event, service.ingest_object, decode=service.created_object)


@app.on_sqs_message(queue=_names.ingest_continue_queue, batch_size=1)
def on_continue(event: SQSEvent) -> BatchResponse:
    """Go on with an object from its checkpoint (a large object's next segment)."""
    return service.runtime().handle_sqs(event, service.continue_object, decode=Checkpoint.decode)


@app.schedule(Rate(5, unit=Rate.MINUTES))
def pull_sources(event: CloudWatchEvent) -> dict[str, Any]:
    """Pull the configured HTTP sources into the landing bucket."""
    return service.runtime().handle_schedule(event, service.pull_sources)


# Objects still open: Object Stuck past their deadline or with records dead-lettered, and the
# backstop for an Object Delivered (or Landed) whose emission failed.
@app.schedule(Rate(5, unit=Rate.MINUTES))
def check_objects(event: CloudWatchEvent) -> dict[str, int]:
    """Report objects still open past their deadline; re-emit lost completions."""
    return service.runtime().handle_schedule(event, service.check_objects)
