"""A test's hold on the API calls of a boto3 client: count them, or make chosen ones fail.

Both hook the client's own events (the cached client the code under test uses, moto's or
not), so nothing is patched and the code's adapters see exactly what botocore raises.
Faults come in the two kinds a caller cannot tell apart:

    REFUSED  caller ──call──X                 nothing happened; the caller gets an error
    LOST     caller ──call──> service (effect) ──response──X   it happened; an error all
                                                               the same (a timeout)

A stage must survive both: retry after REFUSED, and after LOST retry without doubling.
`failing` hands either error to the caller; `lose_answers` loses an answer where botocore's
own retry meets it first (the 5xx after a write that the SDK retries before the caller ever
sees it), so the very same request is sent again, as against AWS.
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
        self.calls.append((model.name, dict(_sent_params(model.name, params))))

    @property
    def operations(self) -> list[str]:
        return [operation for operation, _ in self.calls]

    @property
    def count(self) -> int:
        return len(self.calls)

    def clear(self) -> None:
        self.calls.clear()


def _sent_params(operation: str, params: Params) -> Params:
    """The parameters a call sends: a BatchWriteItem that `sluice.aws` writes itself carries
    an empty RequestItems for botocore and its items in the body it sends."""
    if operation == "BatchWriteItem":
        import json

        from sluice.aws import _raw_body

        body = _raw_body.get()
        if body is not None:
            return dict(json.loads(body))
    return params


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


@dataclass
class LostAnswers:
    """How many answers are still to lose, and the operations whose answers were lost."""

    remaining: int
    lost: list[str] = field(default_factory=list)


@contextmanager
def lose_answers(client: Any, operation: str, times: int = 1) -> Iterator[LostAnswers]:
    """Lose the answers of the next `times` successful calls of `operation` on `client`.

    The call goes through (the effect happens), then botocore's retry logic is told
    (`needs-retry`) that the attempt needs a retry, so the same request goes again.
    """
    state = LostAnswers(times)
    event = f"needs-retry.{_service(client)}.{operation}"

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


def _service(client: Any) -> str:
    """The service part of the client's event names (`s3`, `dynamodb`, `sqs`, `sns`)."""
    return str(client.meta.service_model.service_id.hyphenize())
