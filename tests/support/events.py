"""SQS → Lambda events for the tests: the one definition is sluice_tools.lambda_events (the
benchmarks use it too); the tests import these names from here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sluice_tools.lambda_events import RAW_QUEUE_ARN as QUEUE_ARN
from sluice_tools.lambda_events import sqs_event, sqs_record


def run_batch(stage: Any, event: Mapping[str, Any]) -> Any:
    """An SQS event through a stage object (`runtime` and `handle_chunk`, as cleanse's
    `Cleanser` and the router's `Router` have) the way its app runs one."""
    return stage.runtime.handle_sqs(event, stage.handle_chunk)


__all__ = ["QUEUE_ARN", "run_batch", "sqs_event", "sqs_record"]
