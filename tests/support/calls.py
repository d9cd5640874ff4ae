"""A test's hold on the API calls of a boto3 client: count them, or make chosen ones fail.

Both hook the client's own events (the cached client the code under test uses, moto's or
not), so nothing is patched and the code's adapters see exactly what botocore raises.
Faults come in the two kinds a caller cannot tell apart:

    REFUSED  caller ──call──X                 nothing happened; the caller gets an error
    LOST     caller ──call──> service (effect) ──response──X   it happened; an error all
                                                               the same (a timeout)

A stage must survive both: retry after REFUSED, and after LOST retry without doubling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

Params = Mapping[str, Any]
_MARK = "support.calls.fault"


@dataclass
class CallCounter:
    """The API calls a client sent, in order: (operation, parameters); retries not included."""

    calls: list[tuple[str, Params]] = field(default_factory=list)

    def __call__(self, model: Any, params: Params, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    @property
    def operations(self) -> list[str]:
        return [operation for operation, _ in self.calls]

    @property
    def count(self) -> int:
        return len(self.calls)

    def clear(self) -> None:
        self.calls.clear()


def count_calls(client: Any) -> CallCounter:
    """Start counting `client`'s calls (for the client's life: tests reset clients after)."""
    counter = CallCounter()
    client.meta.events.register(f"before-parameter-build.{_service(client)}.*", counter)
    return counter


class Fault(Enum):
    REFUSED = "refused"  # raised before the request is sent: no effect
    LOST = "lost"  # raised after the service answered: the effect happened


@dataclass
class InjectedFaults:
    """What `failing` did: the parameters of each call it failed."""

    fault: Fault
    failed: list[Params] = field(default_factory=list)


def default_error(fault: Fault, operation: str) -> Exception:
    """What botocore raises for each kind: a 503 `ClientError`, or a read timeout."""
    from botocore.exceptions import ClientError, ReadTimeoutError

    if fault is Fault.LOST:
        return ReadTimeoutError(endpoint_url=f"injected: {operation}'s response was lost")
    body: Any = {
        "Error": {"Code": "ServiceUnavailable", "Message": f"injected: {operation} refused"},
        "ResponseMetadata": {"HTTPStatusCode": 503},
    }
    return ClientError(body, operation)


@contextmanager
def failing(
    client: Any,
    operation: str,
    fault: Fault,
    *,
    when: Callable[[Params], bool] = lambda _params: True,
    times: int | None = 1,
    error: Callable[[Fault, str], Exception] = default_error,
) -> Iterator[InjectedFaults]:
    """Inside the block, `client`'s `operation` calls for which `when(params)` holds fail
    with `fault`, the first `times` of them (None: all); other calls go through.

    `operation` is the API name (`PutObject`) or the method name (`put_object`).
    """
    api = client.meta.method_to_api_mapping.get(operation, operation)
    events = client.meta.events
    name = f"{_service(client)}.{api}"
    done = InjectedFaults(fault)

    def choose(params: Params, context: dict[str, Any], **_: Any) -> None:
        if (times is None or len(done.failed) < times) and when(params):
            context[_MARK] = True
            done.failed.append(dict(params))

    def fail(context: dict[str, Any], **_: Any) -> None:
        if context.pop(_MARK, False):
            raise error(fault, api)

    stage = "before-call" if fault is Fault.REFUSED else "after-call"
    events.register(f"before-parameter-build.{name}", choose)
    events.register(f"{stage}.{name}", fail)
    try:
        yield done
    finally:
        events.unregister(f"before-parameter-build.{name}", choose)
        events.unregister(f"{stage}.{name}", fail)


def _service(client: Any) -> str:
    """The service part of the client's event names (`s3`, `dynamodb`, `sqs`, `sns`)."""
    return str(client.meta.service_model.service_id.hyphenize())
