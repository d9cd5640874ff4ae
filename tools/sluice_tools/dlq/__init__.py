"""DLQ tools: list a stage's dead-letter and failures queues, decode them, redrive them."""

from sluice_tools.dlq.command import dlq_group
from sluice_tools.dlq.queues import decode, in_flight, peek, resolve_queue
from sluice_tools.dlq.redrive import RedriveResult, move_messages, redrive

__all__ = [
    "RedriveResult",
    "decode",
    "dlq_group",
    "in_flight",
    "move_messages",
    "peek",
    "redrive",
    "resolve_queue",
]
