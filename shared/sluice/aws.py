"""boto3 clients created on first use, cached per process, with explicit timeouts and retries.

Honours `AWS_ENDPOINT_URL` (read when the client is made), so the same code talks to AWS or
to the local emulator. Creating a client costs ~40 ms: never do it at import.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from sluice.errors import TransientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 10
MAX_ATTEMPTS = 5

# BatchWriteItem: at most 25 put or delete requests; unprocessed ones (throttled, over
# capacity) are retried with exponential backoff, bounded.
BATCH_WRITE_MAX_ITEMS = 25
BATCH_WRITE_ATTEMPTS = 8
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 1.0

log = logging.getLogger(__name__)
_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str | None], Any] = {}


def client(service: str) -> Any:
    """A cached boto3 client for `service` in the current region and endpoint."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    key = (service, region, endpoint)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _make_client(service, region, endpoint)
            _clients[key] = found
    return found


def _make_client(service: str, region: str | None, endpoint: str | None) -> Any:
    import boto3
    from botocore.config import Config

    # No client-side parameter validation: it walks every value of every request (1.4 ms of
    # a 25-item BatchWriteItem's 2 ms to build), and the service validates anyway, so a
    # malformed request still fails, as a ClientError (ValidationException).
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        tcp_keepalive=True,
        parameter_validation=False,
    )
    # `Any`: the stubs overload `client` per literal service name; ours is a plain str.
    session: Any = boto3.session.Session()
    return session.client(service, region_name=region, endpoint_url=endpoint, config=config)


def client_errors() -> tuple[type[Exception], ...]:
    """What a boto3 call raises (`ClientError`, `BotoCoreError`), for adapters to translate.

    Imported on call, not at import; an `except client_errors():` clause only evaluates it
    when something was raised.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a `ClientError` (e.g. "ConditionalCheckFailedException"), else ""."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str((response.get("Error") or {}).get("Code") or "")


def reset_clients() -> None:
    """Drop every cached client (tests that switch endpoints or credentials call this)."""
    with _lock:
        _clients.clear()


def s3() -> S3Client:
    return client("s3")  # type: ignore[no-any-return]


def sqs() -> SQSClient:
    return client("sqs")  # type: ignore[no-any-return]


def sns() -> SNSClient:
    return client("sns")  # type: ignore[no-any-return]


def dynamodb() -> DynamoDBClient:
    return client("dynamodb")  # type: ignore[no-any-return]


class UnprocessedItemsError(TransientError):
    """BatchWriteItem still left items unprocessed after every attempt."""


def backoff_s(retry: int) -> float:
    """Seconds to wait before the `retry`-th retry (1, 2, …): 0.05, 0.1, 0.2, … up to 1."""
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (retry - 1)))


def batch_write(
    client: DynamoDBClient,
    table_name: str,
    requests: Sequence[Mapping[str, Any]],
    *,
    max_attempts: int = BATCH_WRITE_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Every `PutRequest`/`DeleteRequest` in `requests` written with BatchWriteItem, 25 a call.

    `UnprocessedItems` are sent again after a backoff; `UnprocessedItemsError` if some are
    still left after `max_attempts`. A failed call raises the client's error (callers
    translate it); requests already written are then written again by the retry.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    for start in range(0, len(requests), BATCH_WRITE_MAX_ITEMS):
        pending: Any = list(requests[start : start + BATCH_WRITE_MAX_ITEMS])
        for attempt in range(1, max_attempts + 1):
            if attempt > 1:
                log.warning(
                    "BatchWriteItem left items unprocessed; retrying",
                    extra={"table": table_name, "items": len(pending), "attempt": attempt},
                )
                sleep(backoff_s(attempt - 1))
            response = _batch_write_item(client, table_name, pending)
            pending = list((response.get("UnprocessedItems") or {}).get(table_name) or [])
            if not pending:
                break
        else:
            raise UnprocessedItemsError(
                f"{len(pending)} item(s) of {table_name} still unprocessed after "
                f"{max_attempts} attempts"
            )


# The JSON body of the BatchWriteItem call being made (see `_batch_write_item`).
_raw_body: ContextVar[bytes | None] = ContextVar("sluice_raw_body", default=None)


def _batch_write_item(client: Any, table_name: str, requests: list[Any]) -> Any:
    """One BatchWriteItem whose JSON body msgspec writes (~15 us for 25 items) instead of
    botocore's serializer, which walks the AttributeValue shape of every value (~0.5 ms for
    25 items: most of the index consumer's CPU per call). The body is the same JSON
    (binary values base64, as the JSON protocol has them); botocore still signs, sends,
    retries and parses the answer as for any call: its `before-call` event gets the body."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is None:  # not a botocore client (a test's stand-in)
        return client.batch_write_item(RequestItems={table_name: requests})
    import msgspec

    # unique_id: registered once per client, however often this is called.
    events.register(
        "before-call.dynamodb.BatchWriteItem", _use_raw_body, unique_id="sluice-raw-body"
    )
    body = msgspec.json.encode({"RequestItems": {table_name: requests}})
    token = _raw_body.set(body)
    try:
        return client.batch_write_item(RequestItems={table_name: []})
    finally:
        _raw_body.reset(token)


def _use_raw_body(params: dict[str, Any], **_: Any) -> None:
    body = _raw_body.get()
    if body is not None:
        params["body"] = body


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "BATCH_WRITE_ATTEMPTS",
    "UnprocessedItemsError",
    "batch_write",
    "client",
    "client_errors",
    "dynamodb",
    "error_code",
    "s3",
    "sns",
    "sqs",
]
