"""How the chunk being handled arrived (`Delivery`), set per chunk by the stage runtime and
read by whoever needs it (the runtime's retries, the tracer's parent span). Imports nothing
of Sluice, so both sides can import it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["Delivery", "current_delivery", "delivering"]


@dataclass(frozen=True)
class Delivery:
    """How the chunk being handled arrived: the message's attempt, source and attributes.

    Set by `process_sqs_batch` (and the SNS twin in `sluice.stage`) for the duration of one
    chunk; `current_delivery()` reads it.
    """

    kind: str  # "sqs" | "sns"
    attempt: int  # the SQS receive count; 1 for an SNS invocation (its retries are unseen)
    source_arn: str  # the queue (SQS) or topic (SNS) the message came from
    message_id: str = ""
    receipt_handle: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


_delivery: ContextVar[Delivery | None] = ContextVar("sluice_delivery", default=None)


def current_delivery() -> Delivery | None:
    """The delivery of the chunk being handled now, if any."""
    return _delivery.get()


@contextmanager
def delivering(delivery: Delivery) -> Iterator[None]:
    token = _delivery.set(delivery)
    try:
        yield
    finally:
        _delivery.reset(token)
