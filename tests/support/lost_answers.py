"""Lost answers: the request takes effect, the caller never sees the answer, the SDK retries.

The commonest production fault a retry meets: the write landed, its answer did not (a 5xx
after the write, a reset connection), and the SDK sent the same request again.
`lose_answers(client, "PutItem")` makes the next matching call of `client` go through
(moto, in process or as a server, or AWS: the effect happens), then tells botocore's retry
logic that the attempt needs a retry, so the very same request is sent again, exactly as
after a lost answer. Only botocore's own hook (`needs-retry`) is used, nothing of moto's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LostAnswers:
    """How many answers are still to lose, and the operations whose answers were lost."""

    remaining: int
    lost: list[str] = field(default_factory=list)


@contextmanager
def lose_answers(client: Any, operation: str, times: int = 1) -> Iterator[LostAnswers]:
    """Lose the answers of the next `times` successful calls of `operation` on `client`."""
    state = LostAnswers(times)
    service = client.meta.service_model.endpoint_prefix
    event = f"needs-retry.{service}.{operation}"

    def retry(response: Any = None, caught_exception: Any = None, **_: Any) -> float | None:
        if state.remaining <= 0 or caught_exception is not None or response is None:
            return None  # botocore's own retry rules decide
        if response[0].status_code >= 300:
            return None
        state.remaining -= 1
        state.lost.append(operation)
        return 0.0  # retry now: the answer that came back is, for the caller, lost

    client.meta.events.register_first(event, retry)
    try:
        yield state
    finally:
        client.meta.events.unregister(event, retry)
