"""Lost answers under moto's in-process mock: the request takes effect, the caller sees a 500.

The commonest production fault a retry meets: the write landed, its answer did not, and the
SDK retried it. `lose_answers(client, "PutItem")` makes the next matching call of `client`
reach moto (the effect happens), then answers 500, so botocore's own retry sends the same
request again, exactly as it would against AWS. Works with `moto.mock_aws()` (it goes
through moto's request stubber); the local runtime's emulator has its own API faults.
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
    """Lose the answers of the next `times` calls of `operation` on `client` (effect kept)."""
    from botocore.awsrequest import AWSResponse
    from moto.core.botocore_stubber import MockRawResponse
    from moto.core.models import botocore_stubber

    state = LostAnswers(times)
    service = client.meta.service_model.endpoint_prefix
    event = f"before-send.{service}.{operation}"

    def send(request: Any, **kwargs: Any) -> Any:
        if state.remaining <= 0:
            return None  # moto's stubber answers as usual
        state.remaining -= 1
        kwargs.pop("event_name", None)
        answered = botocore_stubber(event, request, **kwargs)  # the effect happens here
        assert answered is not None, "lose_answers needs moto's mock (mock_aws) active"
        state.lost.append(operation)
        body = b'{"__type": "InternalServerError", "message": "the answer was lost"}'
        headers = {"Content-Type": "application/x-amz-json-1.0"}
        return AWSResponse(request.url, 500, headers, MockRawResponse(body))

    client.meta.events.register_first(event, send)
    try:
        yield state
    finally:
        client.meta.events.unregister(event, send)
