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
            ├─ owner is ours (our write landed,
            │  its answer was lost; the SDK retried) ─▶ INPROGRESS, held by us
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

Owners. Every claim carries an `owner`: the invocation (Lambda request id) and a token
unique to this claim attempt. The SDK retries a write whose answer was lost (a 5xx after
the write landed, a timeout); without an owner that retry would see its own INPROGRESS item
and take it for another invocation's ("being processed elsewhere"), on AWS as on moto.
Completion and release are conditional on the owner, so a late holder whose claim was
taken over changes nothing.

Leases. A long effect (ingest reading a large object for up to 15 minutes) claims for a
lease (`run_once(..., lease_ms=...)`) rather than for all its remaining time, and renews it
while it works (`renew_lease()`, called between steps: it writes only once half the lease
has passed). A killed holder then blocks the key for at most one lease, not for the rest of
its timeout.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Collection
from contextvars import ContextVar
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from sluice import aws
from sluice.config import get_settings
from sluice.errors import PermanentError, TransientError
from sluice.lazy import first_use
from sluice.observability import get_logger
from sluice.observability.logs import get_context

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

T = TypeVar("T")
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
# Who holds an INPROGRESS claim: "<request id>/<token of this claim attempt>".
OWNER_ATTR = "owner"
# Progress of a claimed effect done in steps (`claim_with_progress`): the numbers of the steps
# done (a number set), kept when a lapsed claim is taken over.
PROGRESS_ATTR = "progress"

DEFAULT_TTL_SECONDS = 7 * 24 * 3600
# TransactWriteItems takes at most 100 actions: the most keys one `claim_many` takes.
TRANSACT_MAX_ITEMS = 100
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
_MINE = "#owner = :owner"


class Status(StrEnum):
    INPROGRESS = "INPROGRESS"
    COMPLETED = "COMPLETED"


class ClaimInProgressError(TransientError):
    """Another invocation holds the claim and may still be working: try again later."""


class IdempotencyPayloadMismatchError(PermanentError):
    """The key was claimed for different content: a bug upstream (ids must be deterministic)."""


class ClaimLostError(TransientError):
    """Our claim lapsed and another invocation took it over: stop; the holder does the work."""


class IdempotencyStoreError(TransientError):
    """The store could not be read or written (throttle, timeout, 5xx, permissions)."""


def payload_hash(obj: Any) -> str:
    """A stable hash of `obj` as canonical JSON (sorted keys, compact, UTF-8)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_owner() -> str:
    """An owner token: the invocation's request id (when logging knows it) and a fresh id.

    Fresh per claim attempt, never per process: two invocations in one warm container are two
    owners, while the SDK's retry of one write (same parameters) is the same owner.
    """
    request = str(get_context().get("request_id") or "-")
    return f"{request}/{uuid.uuid4().hex}"


def remaining_ms_of(remaining: RemainingTime) -> int:
    """Resolve a `RemainingTime` to milliseconds now (at claim time, not at handler start)."""
    value = remaining() if callable(remaining) else remaining
    return DEFAULT_REMAINING_MS if value is None else max(0, int(value))


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a claim: held by us (`duplicate=False`) or done before (`duplicate=True`).

    `owner` is our ownership token for complete and release (set on claims we hold).
    """

    namespace: str
    key: str
    duplicate: bool
    payload_hash: str | None = None
    in_progress_expiry: int = 0
    expires_at: int = 0  # epoch seconds (the TTL), set on claims we hold
    owner: str = ""
    progress: frozenset[int] = frozenset()  # steps done before (`claim_with_progress`)

    @property
    def pk(self) -> str:
        return item_key(self.namespace, self.key)


@dataclass(frozen=True, slots=True)
class Once(Generic[T]):
    """What `run_once` did: `fn`'s value, or `duplicate=True` (and no value) if it was done.
    `claim`: with `complete=False`, the claim still held, for the caller to complete."""

    value: T | None
    duplicate: bool
    claim: Claim | None = None


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
        lease_ms: int | None = None,
    ) -> Claim: ...

    def renew(self, claim: Claim, lease_ms: int) -> Claim: ...

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
    def clock(self) -> Callable[[], float]:
        """Epoch seconds as this store reads them (expiries are compared with it)."""
        return self._clock

    client: first_use[DynamoDBClient] = first_use(lambda self: aws.dynamodb())
    table_name: first_use[str] = first_use(lambda self: get_settings().names.idempotency_table)
    enabled: first_use[bool] = first_use(lambda self: get_settings().idempotency_enabled)

    def claim(
        self,
        namespace: str,
        key: str,
        *,
        payload_hash: str | None = None,
        remaining_ms: RemainingTime = None,
        lease_ms: int | None = None,
    ) -> Claim:
        """Take the claim with one conditional PutItem, or learn from its failure why not.

        The claim lasts the invocation's remaining time, or `lease_ms` if that is shorter
        (then `renew` it while working). Raises `ClaimInProgressError` (held elsewhere),
        `IdempotencyPayloadMismatchError` (same key, other content) or
        `IdempotencyStoreError`.
        """
        if lease_ms is not None:
            remaining_ms = min(remaining_ms_of(remaining_ms), lease_ms)
        put, held = self._conditional_put(namespace, key, payload_hash, remaining_ms, new_owner())
        try:
            self.client.put_item(**put)
        except aws.client_errors() as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise IdempotencyStoreError(f"could not claim {held.pk}: {exc}") from exc
            old = getattr(exc, "response", {}).get("Item") or {}
            return self._refused(held, old)
        return held

    def _conditional_put(
        self,
        namespace: str,
        key: str,
        payload_hash: str | None,
        remaining_ms: RemainingTime,
        owner: str,
    ) -> tuple[dict[str, Any], Claim]:
        """The conditional put that claims (namespace, key) for `owner` — the arguments of a
        PutItem, or the `Put` of a transaction — and the claim it makes if the condition holds.
        """
        now = self._clock()
        now_s, now_ms = int(now), int(now * 1000)
        held = Claim(
            namespace,
            key,
            False,
            payload_hash,
            in_progress_expiry=now_ms + remaining_ms_of(remaining_ms) + IN_PROGRESS_MARGIN_MS,
            expires_at=now_s + self.ttl_seconds,
            owner=owner,
        )
        item: dict[str, Any] = {
            KEY_ATTR: {"S": held.pk},
            STATUS_ATTR: {"S": Status.INPROGRESS.value},
            EXPIRES_AT_ATTR: {"N": str(held.expires_at)},
            IN_PROGRESS_EXPIRY_ATTR: {"N": str(held.in_progress_expiry)},
            OWNER_ATTR: {"S": owner},
        }
        if payload_hash is not None:
            item[PAYLOAD_HASH_ATTR] = {"S": payload_hash}
        put = {
            "TableName": self.table_name,
            "Item": item,
            "ConditionExpression": _CONDITION,
            "ExpressionAttributeNames": _NAMES,
            "ExpressionAttributeValues": {
                ":now_s": {"N": str(now_s)},
                ":now_ms": {"N": str(now_ms)},
                ":inprogress": {"S": Status.INPROGRESS.value},
            },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        return put, held

    def _refused(self, wanted: Claim, old: dict[str, Any]) -> Claim:
        """Judge a claim refused because of `old`, the item found (ours, done, or another's).

        Our own INPROGRESS item (same owner) is a write of ours whose answer was lost: we hold
        it, with the expiry and TTL it was written with.
        """
        namespace, key, payload_hash, pk = (
            wanted.namespace,
            wanted.key,
            wanted.payload_hash,
            wanted.pk,
        )
        status = _string(old, STATUS_ATTR)
        old_hash = _string(old, PAYLOAD_HASH_ATTR)
        if (
            status == Status.INPROGRESS
            and wanted.owner
            and _string(old, OWNER_ATTR) == wanted.owner
        ):
            log.info("claim found ours after a lost answer", extra={"idempotency_key": pk})
            return Claim(
                namespace,
                key,
                False,
                payload_hash,
                in_progress_expiry=_number(old, IN_PROGRESS_EXPIRY_ATTR),
                expires_at=_number(old, EXPIRES_AT_ATTR),
                owner=wanted.owner,
                progress=_number_set(old, PROGRESS_ATTR),
            )
        if (
            payload_hash is not None
            and old_hash is not None
            and _scheme(old_hash) == _scheme(payload_hash)
            and old_hash != payload_hash
        ):
            raise IdempotencyPayloadMismatchError(
                f"{pk} was claimed ({status}) for other content (payload hash {old_hash[:12]}…, "
                f"this one {payload_hash[:12]}…): ids must be deterministic for their content"
            )
        if status == Status.COMPLETED:
            return Claim(namespace, key, True, payload_hash)
        if status == Status.INPROGRESS:
            left_ms = _number(old, IN_PROGRESS_EXPIRY_ATTR) - int(self._clock() * 1000)
            raise ClaimInProgressError(
                f"{pk} is being processed elsewhere; retry later",
                retry_after_s=max(0.0, left_ms / 1000),
            )
        # The item changed between the condition check and now (or has an unknown status).
        raise IdempotencyStoreError(f"claim of {pk} refused with status {status!r}; retry")

    def claim_with_progress(
        self,
        namespace: str,
        key: str,
        *,
        remaining_ms: RemainingTime = None,
        lease_ms: int | None = None,
    ) -> Claim:
        """`claim` for an effect done in numbered steps: the claim keeps the steps done.

        ONE conditional UpdateItem (same condition as `claim`): taking over a lapsed claim
        keeps its `progress` (the steps its holder recorded with `record_progress`), which
        comes back in the claim so that only the rest is done. Raises as `claim` does.
        """
        if lease_ms is not None:
            remaining_ms = min(remaining_ms_of(remaining_ms), lease_ms)
        put, held = self._conditional_put(namespace, key, None, remaining_ms, new_owner())
        item = put["Item"]
        try:
            answer = self.client.update_item(
                TableName=self.table_name,
                Key={KEY_ATTR: item[KEY_ATTR]},
                UpdateExpression=(
                    "SET #status = :status, #expires_at = :expires_at,"
                    " #in_progress_expiry = :expiry, #owner = :owner"
                ),
                ConditionExpression=_CONDITION,
                ExpressionAttributeNames={**_NAMES, "#owner": OWNER_ATTR},
                ExpressionAttributeValues={
                    **put["ExpressionAttributeValues"],
                    ":status": item[STATUS_ATTR],
                    ":expires_at": item[EXPIRES_AT_ATTR],
                    ":expiry": item[IN_PROGRESS_EXPIRY_ATTR],
                    ":owner": item[OWNER_ATTR],
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except aws.client_errors() as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise IdempotencyStoreError(f"could not claim {held.pk}: {exc}") from exc
            old = getattr(exc, "response", {}).get("Item") or {}
            return self._refused(held, old)
        done = _number_set(answer.get("Attributes") or {}, PROGRESS_ATTR)
        return replace(held, progress=done)

    def record_progress(
        self,
        claim: Claim,
        steps: Collection[int],
        *,
        lease_ms: int | None = None,
        release: bool = False,
    ) -> Claim:
        """Add `steps` to our held claim's progress in one UpdateItem; the claim as it is now.

        With `lease_ms` the claim is renewed to that lease from now in the same write; with
        `release` it is let go instead (its in-progress expiry set to 0), so that a retry
        takes it over at once with its progress. Adding to a set is idempotent (the SDK's
        retry of a write whose answer was lost changes nothing). Conditional on still
        holding the claim: `ClaimLostError` if another invocation took it over.

        Raises `ClaimLostError` if another invocation took the claim over,
        `IdempotencyStoreError` on a DynamoDB fault.
        """
        sets, adds = [], []
        values: dict[str, Any] = {
            ":owner": {"S": claim.owner},
            ":inprogress": {"S": Status.INPROGRESS.value},
        }
        expiry = claim.in_progress_expiry
        if release:
            expiry = 0
        elif lease_ms is not None:
            expiry = int(self._clock() * 1000) + lease_ms + IN_PROGRESS_MARGIN_MS
        if release or lease_ms is not None:
            sets.append("#in_progress_expiry = :expiry")
            values[":expiry"] = {"N": str(expiry)}
        if steps:
            adds.append("#progress :steps")
            values[":steps"] = {"NS": [str(step) for step in sorted(set(steps))]}
        if not sets and not adds:
            return claim
        expression = " ".join(
            part
            for part in (
                f"SET {', '.join(sets)}" if sets else "",
                f"ADD {', '.join(adds)}" if adds else "",
            )
            if part
        )
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={KEY_ATTR: {"S": claim.pk}},
                UpdateExpression=expression,
                ConditionExpression=f"{_MINE} AND #status = :inprogress",
                ExpressionAttributeNames={
                    "#owner": OWNER_ATTR,
                    "#status": STATUS_ATTR,
                    **({"#in_progress_expiry": IN_PROGRESS_EXPIRY_ATTR} if sets else {}),
                    **({"#progress": PROGRESS_ATTR} if adds else {}),
                },
                ExpressionAttributeValues=values,
            )
        except aws.client_errors() as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                raise ClaimLostError(f"{claim.pk} was taken over by another invocation") from exc
            raise IdempotencyStoreError(f"could not record progress of {claim.pk}: {exc}") from exc
        return replace(claim, in_progress_expiry=expiry, progress=claim.progress | set(steps))

    def complete(self, claim: Claim, steps: Collection[int] = ()) -> None:
        """Mark the claim COMPLETED in one UpdateItem, keeping its TTL.

        Conditional on still holding it (our owner token): if we ran past our in-progress
        expiry and someone took it over, their completion stands and ours is dropped (both did
        the same work). A retry of a completion whose answer was lost meets the same
        condition, still true, and changes nothing. `steps` are added to the claim's progress
        in the same write (`record_progress`'s last step).

        Raises `IdempotencyStoreError` on a DynamoDB fault.
        """
        names = {"#status": STATUS_ATTR, "#owner": OWNER_ATTR}
        values: dict[str, Any] = {
            ":completed": {"S": Status.COMPLETED.value},
            ":owner": {"S": claim.owner},
        }
        expression = "SET #status = :completed"
        if steps:
            expression += " ADD #progress :steps"
            names["#progress"] = PROGRESS_ATTR
            values[":steps"] = {"NS": [str(step) for step in sorted(set(steps))]}
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={KEY_ATTR: {"S": claim.pk}},
                UpdateExpression=expression,
                ConditionExpression=_MINE,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except aws.client_errors() as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                log.warning(
                    "idempotency claim was taken over before completion", extra={"key": claim.pk}
                )
                return
            raise IdempotencyStoreError(f"could not complete {claim.pk}: {exc}") from exc

    def renew(self, claim: Claim, lease_ms: int) -> Claim:
        """Extend our INPROGRESS claim to `lease_ms` from now (one UpdateItem); the new claim.

        Conditional on still holding it: `ClaimLostError` if another invocation took it over
        (we were slower than our lease), so the caller stops before doing more.

        Raises `ClaimLostError` if another invocation took the claim over,
        `IdempotencyStoreError` on a DynamoDB fault.
        """
        expiry = int(self._clock() * 1000) + lease_ms + IN_PROGRESS_MARGIN_MS
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={KEY_ATTR: {"S": claim.pk}},
                UpdateExpression="SET #in_progress_expiry = :expiry",
                ConditionExpression=f"{_MINE} AND #status = :inprogress",
                ExpressionAttributeNames={
                    "#in_progress_expiry": IN_PROGRESS_EXPIRY_ATTR,
                    "#owner": OWNER_ATTR,
                    "#status": STATUS_ATTR,
                },
                ExpressionAttributeValues={
                    ":expiry": {"N": str(expiry)},
                    ":owner": {"S": claim.owner},
                    ":inprogress": {"S": Status.INPROGRESS.value},
                },
            )
        except aws.client_errors() as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                raise ClaimLostError(f"{claim.pk} was taken over by another invocation") from exc
            raise IdempotencyStoreError(f"could not renew {claim.pk}: {exc}") from exc
        return replace(claim, in_progress_expiry=expiry)

    def release(self, claim: Claim) -> None:
        """Delete our INPROGRESS claim so the retry can run now; never raises.

        If the delete fails, the claim still lapses at its in-progress expiry.
        """
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key={KEY_ATTR: {"S": claim.pk}},
                ConditionExpression=_MINE,
                ExpressionAttributeNames={"#owner": OWNER_ATTR},
                ExpressionAttributeValues={":owner": {"S": claim.owner}},
            )
        except Exception:
            log.warning(
                "could not release idempotency claim; it lapses at its in-progress expiry",
                exc_info=True,
                extra={"key": claim.pk},
            )


def _scheme(digest: str) -> str:
    """The scheme of a payload hash: its prefix before ':' ("" for a bare hex digest).

    Hashes of different schemes cannot be compared (a claim taken before a scheme changed):
    the content is then taken as the same.
    """
    scheme, sep, _ = digest.partition(":")
    return scheme if sep else ""


def _number(item: dict[str, Any], name: str) -> int:
    value = item.get(name)
    if isinstance(value, dict) and isinstance(value.get("N"), str):
        return int(value["N"])
    return 0


def _number_set(item: dict[str, Any], name: str) -> frozenset[int]:
    value = item.get(name)
    if isinstance(value, dict) and isinstance(value.get("NS"), list):
        return frozenset(int(n) for n in value["NS"])
    return frozenset()


def _string(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    if isinstance(value, dict) and isinstance(value.get("S"), str):
        return str(value["S"])
    return None


@dataclass
class _Lease:
    store: ClaimStore
    claim: Claim
    lease_ms: int
    clock: Callable[[], float]


_lease: ContextVar[_Lease | None] = ContextVar("sluice_lease", default=None)


def renew_lease() -> None:
    """Renew the claim `run_once` holds for the running effect, once half its lease passed.

    Cheap to call often (between chunks): it reads the clock and writes only when due. A
    no-op outside an effect run with `lease_ms`. Raises `ClaimLostError` if the claim was
    taken over (the effect should stop: the new holder redoes it).
    """
    held = _lease.get()
    if held is None:
        return
    now_ms = int(held.clock() * 1000)
    left = held.claim.in_progress_expiry - IN_PROGRESS_MARGIN_MS - now_ms
    if left > held.lease_ms // 2:
        return
    held.claim = held.store.renew(held.claim, held.lease_ms)


def run_once(
    store: ClaimStore,
    namespace: str,
    key: str,
    fn: Callable[[], T],
    *,
    payload_hash: str | None = None,
    remaining_ms: RemainingTime = None,
    lease_ms: int | None = None,
    complete: bool = True,
) -> Once[T]:
    """Call `fn` unless (namespace, key) was done before; the plain-function API.

    If `fn` raises (or completing fails), the claim is released and the error propagates,
    so the retry runs `fn` again: `fn`'s effects must be safe to redo. With `lease_ms` the
    claim lasts a lease that `fn` renews by calling `renew_lease()` as it goes.
    `complete=False`: the claim is left held and returned (`Once.claim`) for the caller to
    complete or release once what follows `fn` (a held ledger write) is done.
    """
    if not store.enabled:
        return Once(fn(), False)
    claim = store.claim(
        namespace, key, payload_hash=payload_hash, remaining_ms=remaining_ms, lease_ms=lease_ms
    )
    if claim.duplicate:
        log.info("duplicate skipped", extra={"idempotency_key": claim.pk})
        return Once(None, True)
    clock = getattr(store, "clock", time.time)
    held = _Lease(store, claim, lease_ms, clock) if lease_ms is not None else None
    token = _lease.set(held)
    try:
        value = fn()
        if complete:
            store.complete(held.claim if held is not None else claim)
    except BaseException:
        store.release(held.claim if held is not None else claim)
        raise
    finally:
        _lease.reset(token)
    return Once(value, False, None if complete else (held.claim if held is not None else claim))


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "Claim",
    "ClaimInProgressError",
    "IdempotencyStore",
    "RemainingTime",
    "new_owner",
    "remaining_ms_of",
    "renew_lease",
]
