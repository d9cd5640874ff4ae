"""Do an effect once per (namespace, key): a DynamoDB claim taken before, completed after.

The namespace is explicit (a stage or consumer name), never derived from a function's module
path, so renaming code never changes a key. This module owns the state machine; the store
only translates it into DynamoDB calls, and callers never see botocore.

State machine of one item (pk = "{namespace}#{key}"):

    claim: ONE conditional PutItem, ReturnValuesOnConditionCheckFailure=ALL_OLD
      │
      ├─ no item / expired (expires_at < now) / INPROGRESS past in_progress_expiry
      │     └─▶ INPROGRESS ── fn() ──┬─ returns ─▶ complete (UpdateItem) ─▶ COMPLETED
      │                              └─ raises  ─▶ release (DeleteItem)  ─▶ (no item)
      └─ condition failed: the old item comes back with the error (no second read)
            ├─ other payload_hash (any status) ─▶ IdempotencyPayloadMismatchError (permanent)
            ├─ COMPLETED, same hash            ─▶ duplicate: fn is not called
            └─ INPROGRESS, not yet expired     ─▶ ClaimInProgressError (transient: retry later)

A timeline (A, B, C are invocations that got the same chunk):

    t0  A claims k            INPROGRESS, in_progress_expiry = t0 + A's remaining time
    t1  B claims k            ClaimInProgressError: B's message is retried later
    t2  A's fn() is done      A completes k: COMPLETED, expires_at unchanged (t0 + TTL)
    t3  C claims k            duplicate, for one call: a new key costs 2 calls, a repeat 1
    --  if A had died at t1.5, the item stays INPROGRESS until in_progress_expiry; the
        redelivery after that takes it over and redoes A's (idempotent) effects.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

from sluice import aws
from sluice.config import get_settings
from sluice.errors import PermanentError, TransientError
from sluice.observability import get_logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

T = TypeVar("T")
P = ParamSpec("P")
log = get_logger(__name__)

# The table's schema (infra/platform.yaml, IdempotencyTable): one string partition key.
KEY_ATTR = "pk"
STATUS_ATTR = "status"
# Epoch seconds; the table's TTL attribute. An item past it counts as absent even before
# DynamoDB deletes it (TTL deletion lags by up to days).
EXPIRES_AT_ATTR = "expires_at"
# Epoch milliseconds; after it an INPROGRESS claim is presumed dead and can be taken over.
IN_PROGRESS_EXPIRY_ATTR = "in_progress_expiry"
PAYLOAD_HASH_ATTR = "payload_hash"

DEFAULT_TTL_SECONDS = 7 * 24 * 3600
# Without a Lambda context, assume the longest a Lambda can run (900 s)...
DEFAULT_REMAINING_MS = 15 * 60 * 1000
# ...and always add a margin for clock skew between the hosts that compare the expiry.
IN_PROGRESS_MARGIN_MS = 5_000

RemainingTime = int | Callable[[], int] | None
"""Milliseconds the invocation has left: an int, a callable (the Lambda context's
`get_remaining_time_in_millis`), or None for the default."""

_CONDITION = (
    "attribute_not_exists(#pk) OR #expires_at < :now_s"
    " OR (#status = :inprogress AND #in_progress_expiry < :now_ms)"
)
_NAMES = {
    "#pk": KEY_ATTR,
    "#status": STATUS_ATTR,
    "#expires_at": EXPIRES_AT_ATTR,
    "#in_progress_expiry": IN_PROGRESS_EXPIRY_ATTR,
}


class Status(StrEnum):
    INPROGRESS = "INPROGRESS"
    COMPLETED = "COMPLETED"


class ClaimInProgressError(TransientError):
    """Another invocation holds the claim and may still be working: try again later."""


class IdempotencyPayloadMismatchError(PermanentError):
    """The key was claimed for different content: a bug upstream (ids must be deterministic)."""


class IdempotencyStoreError(TransientError):
    """The store could not be read or written (throttle, timeout, 5xx, permissions)."""


def payload_hash(obj: Any) -> str:
    """A stable hash of `obj` as canonical JSON (sorted keys, compact, UTF-8)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def remaining_ms_of(remaining: RemainingTime) -> int:
    """Resolve a `RemainingTime` to milliseconds now (at claim time, not at handler start)."""
    value = remaining() if callable(remaining) else remaining
    return DEFAULT_REMAINING_MS if value is None else max(0, int(value))


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a claim: held by us (`duplicate=False`) or done before (`duplicate=True`).

    `in_progress_expiry` doubles as our ownership token for complete and release.
    """

    namespace: str
    key: str
    duplicate: bool
    payload_hash: str | None = None
    in_progress_expiry: int = 0

    @property
    def pk(self) -> str:
        return item_key(self.namespace, self.key)


@dataclass(frozen=True, slots=True)
class Once(Generic[T]):
    """What `run_once` did: `fn`'s value, or `duplicate=True` (and no value) if it was done."""

    value: T | None
    duplicate: bool


class ClaimStore(Protocol):
    """The port `run_once` needs; `IdempotencyStore` is the DynamoDB adapter."""

    @property
    def enabled(self) -> bool: ...

    def claim(
        self,
        namespace: str,
        key: str,
        *,
        payload_hash: str | None = None,
        remaining_ms: RemainingTime = None,
    ) -> Claim: ...

    def complete(self, claim: Claim) -> None: ...

    def release(self, claim: Claim) -> None: ...


def item_key(namespace: str, key: str) -> str:
    if not namespace or not key:
        raise ValueError("an idempotency namespace and key must be non-empty")
    return f"{namespace}#{key}"


class IdempotencyStore:
    """Claims in the idempotency table; `enabled=False` (SLUICE_IDEMPOTENCY=off) bypasses it.

    The client, table name and switch default to the settings on first use, not at import.
    """

    def __init__(
        self,
        client: DynamoDBClient | None = None,
        *,
        table_name: str | None = None,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._client = client
        self._table_name = table_name
        self._enabled = enabled
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    @property
    def client(self) -> DynamoDBClient:
        if self._client is None:
            self._client = aws.dynamodb()
        return self._client

    @property
    def table_name(self) -> str:
        if self._table_name is None:
            self._table_name = get_settings().names.idempotency_table
        return self._table_name

    @property
    def enabled(self) -> bool:
        if self._enabled is None:
            self._enabled = get_settings().idempotency_enabled
        return self._enabled

    def claim(
        self,
        namespace: str,
        key: str,
        *,
        payload_hash: str | None = None,
        remaining_ms: RemainingTime = None,
    ) -> Claim:
        """Take the claim with one conditional PutItem, or learn from its failure why not.

        Raises `ClaimInProgressError` (held elsewhere), `IdempotencyPayloadMismatchError`
        (same key, other content) or `IdempotencyStoreError`.
        """
        pk = item_key(namespace, key)
        now = self._clock()
        now_s, now_ms = int(now), int(now * 1000)
        expiry_ms = now_ms + remaining_ms_of(remaining_ms) + IN_PROGRESS_MARGIN_MS
        item: dict[str, Any] = {
            KEY_ATTR: {"S": pk},
            STATUS_ATTR: {"S": Status.INPROGRESS.value},
            EXPIRES_AT_ATTR: {"N": str(now_s + self.ttl_seconds)},
            IN_PROGRESS_EXPIRY_ATTR: {"N": str(expiry_ms)},
        }
        if payload_hash is not None:
            item[PAYLOAD_HASH_ATTR] = {"S": payload_hash}
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression=_CONDITION,
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={
                    ":now_s": {"N": str(now_s)},
                    ":now_ms": {"N": str(now_ms)},
                    ":inprogress": {"S": Status.INPROGRESS.value},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except aws.client_errors() as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise IdempotencyStoreError(f"could not claim {pk}: {exc}") from exc
            old = getattr(exc, "response", {}).get("Item") or {}
            return self._refused(namespace, key, payload_hash, old)
        return Claim(namespace, key, False, payload_hash, expiry_ms)

    def _refused(
        self, namespace: str, key: str, payload_hash: str | None, old: dict[str, Any]
    ) -> Claim:
        pk = item_key(namespace, key)
        status = _string(old, STATUS_ATTR)
        old_hash = _string(old, PAYLOAD_HASH_ATTR)
        if payload_hash is not None and old_hash is not None and old_hash != payload_hash:
            raise IdempotencyPayloadMismatchError(
                f"{pk} was claimed ({status}) for other content (payload hash {old_hash[:12]}…, "
                f"this one {payload_hash[:12]}…): ids must be deterministic for their content"
            )
        if status == Status.COMPLETED:
            return Claim(namespace, key, True, payload_hash)
        if status == Status.INPROGRESS:
            raise ClaimInProgressError(f"{pk} is being processed elsewhere; retry later")
        # The item changed between the condition check and now (or has an unknown status).
        raise IdempotencyStoreError(f"claim of {pk} refused with status {status!r}; retry")

    def complete(self, claim: Claim) -> None:
        """Mark the claim COMPLETED in one UpdateItem, keeping its TTL.

        Conditional on still holding it: if we ran past our in-progress expiry and someone
        took it over, their completion stands and ours is dropped (both did the same work).
        """
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={KEY_ATTR: {"S": claim.pk}},
                UpdateExpression="SET #status = :completed",
                ConditionExpression="#in_progress_expiry = :mine",
                ExpressionAttributeNames={
                    "#status": STATUS_ATTR,
                    "#in_progress_expiry": IN_PROGRESS_EXPIRY_ATTR,
                },
                ExpressionAttributeValues={
                    ":completed": {"S": Status.COMPLETED.value},
                    ":mine": {"N": str(claim.in_progress_expiry)},
                },
            )
        except aws.client_errors() as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                log.warning(
                    "idempotency claim was taken over before completion", extra={"key": claim.pk}
                )
                return
            raise IdempotencyStoreError(f"could not complete {claim.pk}: {exc}") from exc

    def release(self, claim: Claim) -> None:
        """Delete our INPROGRESS claim so the retry can run now; never raises.

        If the delete fails, the claim still lapses at its in-progress expiry.
        """
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key={KEY_ATTR: {"S": claim.pk}},
                ConditionExpression="#in_progress_expiry = :mine",
                ExpressionAttributeNames={"#in_progress_expiry": IN_PROGRESS_EXPIRY_ATTR},
                ExpressionAttributeValues={":mine": {"N": str(claim.in_progress_expiry)}},
            )
        except Exception:
            log.warning(
                "could not release idempotency claim; it lapses at its in-progress expiry",
                exc_info=True,
                extra={"key": claim.pk},
            )


def _string(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    if isinstance(value, dict) and isinstance(value.get("S"), str):
        return str(value["S"])
    return None


def run_once(
    store: ClaimStore,
    namespace: str,
    key: str,
    fn: Callable[[], T],
    *,
    payload_hash: str | None = None,
    remaining_ms: RemainingTime = None,
) -> Once[T]:
    """Call `fn` unless (namespace, key) was done before; the plain-function API.

    If `fn` raises (or completing fails), the claim is released and the error propagates,
    so the retry runs `fn` again: `fn`'s effects must be safe to redo.
    """
    if not store.enabled:
        return Once(fn(), False)
    claim = store.claim(namespace, key, payload_hash=payload_hash, remaining_ms=remaining_ms)
    if claim.duplicate:
        log.info("duplicate skipped", extra={"idempotency_key": claim.pk})
        return Once(None, True)
    try:
        value = fn()
        store.complete(claim)
    except BaseException:
        store.release(claim)
        raise
    return Once(value, False)


class IdempotentFunction(Generic[P, T]):
    """A function wrapped by `idempotent`: calling it calls `run_once`."""

    __name__: str  # copied from `fn` by functools.update_wrapper in __init__

    def __init__(
        self,
        fn: Callable[P, T],
        store: ClaimStore | Callable[[], ClaimStore],
        namespace: str,
        key: Callable[P, str],
        payload: Callable[P, Any] | None,
        remaining_ms: RemainingTime,
    ) -> None:
        self.fn = fn
        self._store = store
        self.namespace = namespace
        self._key = key
        self._payload = payload
        self._remaining_ms = remaining_ms
        functools.update_wrapper(self, fn)

    @property
    def store(self) -> ClaimStore:
        if callable(self._store):
            self._store = self._store()
        return self._store

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Once[T]:
        digest = None if self._payload is None else payload_hash(self._payload(*args, **kwargs))
        return run_once(
            self.store,
            self.namespace,
            self._key(*args, **kwargs),
            functools.partial(self.fn, *args, **kwargs),
            payload_hash=digest,
            remaining_ms=self._remaining_ms,
        )


def idempotent(
    store: ClaimStore | Callable[[], ClaimStore],
    namespace: str,
    *,
    key: Callable[P, str],
    payload: Callable[P, Any] | None = None,
    remaining_ms: RemainingTime = None,
) -> Callable[[Callable[P, T]], IdempotentFunction[P, T]]:
    """Decorator form of `run_once`: `key` (and `payload`, hashed) are read from the arguments.

        @idempotent(IdempotencyStore, "index", key=lambda record, chunk: record.id)
        def put_record(record: Record, chunk: Chunk) -> None: ...

    `store` may be a factory, called on first use (so nothing is built at import).
    """

    def wrap(fn: Callable[P, T]) -> IdempotentFunction[P, T]:
        return IdempotentFunction(fn, store, namespace, key, payload, remaining_ms)

    return wrap
