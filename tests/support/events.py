"""SQS → Lambda events for the tests: the one definition is sluice_tools.lambda_events (the
benchmarks use it too); the tests import these names from here."""

from __future__ import annotations

from sluice_tools.lambda_events import RAW_QUEUE_ARN as QUEUE_ARN
from sluice_tools.lambda_events import sqs_event, sqs_record

__all__ = ["QUEUE_ARN", "sqs_event", "sqs_record"]
