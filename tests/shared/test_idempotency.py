"""Idempotency: an effect runs once per (namespace, key), a duplicate costs one call."""

from __future__ import annotations

import time
from typing import Any

import pytest
from support.calls import lose_answers

from sluice import aws
from sluice.config import ResourceNames
from sluice.errors import PermanentError, TransientError
from sluice.idempotency import (
    DEFAULT_REMAINING_MS,
    DEFAULT_TTL_SECONDS,
    EXPIRES_AT_ATTR,
    IN_PROGRESS_EXPIRY_ATTR,
    IN_PROGRESS_MARGIN_MS,
    KEY_ATTR,
    OWNER_ATTR,
    PAYLOAD_HASH_ATTR,
    STATUS_ATTR,
    ClaimInProgressError,
    ClaimLostError,
    IdempotencyPayloadMismatchError,
    IdempotencyStore,
    IdempotencyStoreError,
    Once,
    payload_hash,
    renew_lease,
    run_once,
)

NS = "cleanse"


class Clock:
    """A settable clock (epoch seconds) for expiries."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


class Effect:
    """A function that counts its calls and can be made to fail."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self) -> str:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return f"done-{self.calls}"


def item(names: ResourceNames, key: str, namespace: str = NS) -> dict[str, Any] | None:
    found = aws.dynamodb().get_item(
        TableName=names.idempotency_table, Key={KEY_ATTR: {"S": f"{namespace}#{key}"}}
    )
    return found.get("Item")


def test_first_run_calls_fn_and_records_completed(platform: ResourceNames) -> None:
    effect = Effect()
    once = run_once(IdempotencyStore(), NS, "c-1", effect, payload_hash="h1")
    assert once == Once("done-1", False)
    stored = item(platform, "c-1")
    assert stored is not None
    assert stored[STATUS_ATTR] == {"S": "COMPLETED"}
    assert stored[PAYLOAD_HASH_ATTR] == {"S": "h1"}


def test_second_run_is_a_duplicate_and_does_not_call_fn(platform: ResourceNames) -> None:
    store, effect = IdempotencyStore(), Effect()
    run_once(store, NS, "c-1", effect, payload_hash="h1")
    again = run_once(store, NS, "c-1", effect, payload_hash="h1")
    assert again == Once(None, True)
    assert effect.calls == 1


def test_namespaces_keep_the_same_key_apart(platform: ResourceNames) -> None:
    store, effect = IdempotencyStore(), Effect()
    run_once(store, "cleanse", "c-1", effect)
    assert run_once(store, "router", "c-1", effect).duplicate is False
    assert effect.calls == 2


def test_concurrent_duplicate_in_progress_raises_transient(platform: ResourceNames) -> None:
    store = IdempotencyStore()
    held = store.claim(NS, "c-1", payload_hash="h1", remaining_ms=60_000)
    assert held.duplicate is False
    effect = Effect()
    with pytest.raises(ClaimInProgressError) as raised:
        run_once(store, NS, "c-1", effect, payload_hash="h1")
    assert isinstance(raised.value, TransientError)
    assert effect.calls == 0
    # The refused attempt left the holder's claim alone.
    stored = item(platform, "c-1")
    assert stored is not None
    assert stored[STATUS_ATTR] == {"S": "INPROGRESS"}
    assert stored[IN_PROGRESS_EXPIRY_ATTR] == {"N": str(held.in_progress_expiry)}


def test_expired_in_progress_claim_is_taken_over(platform: ResourceNames) -> None:
    clock = Clock()
    crashed = IdempotencyStore(clock=clock)
    crashed.claim(NS, "c-1", payload_hash="h1", remaining_ms=1_000)  # then the Lambda died
    clock.now += (1_000 + IN_PROGRESS_MARGIN_MS) / 1000 - 0.5
    with pytest.raises(ClaimInProgressError):
        run_once(IdempotencyStore(clock=clock), NS, "c-1", Effect(), payload_hash="h1")
    clock.now += 1.0
    effect = Effect()
    once = run_once(IdempotencyStore(clock=clock), NS, "c-1", effect, payload_hash="h1")
    assert once == Once("done-1", False)
    stored = item(platform, "c-1")
    assert stored is not None
    assert stored[STATUS_ATTR] == {"S": "COMPLETED"}


def test_late_completion_of_a_taken_over_claim_is_dropped(platform: ResourceNames) -> None:
    clock = Clock()
    store = IdempotencyStore(clock=clock)
    slow = store.claim(NS, "c-1", remaining_ms=1_000)
    clock.now += 60
    fresh = store.claim(NS, "c-1", remaining_ms=1_000)
    assert fresh.duplicate is False
    store.complete(slow)  # the slow one is no longer the holder: nothing changes
    store.release(slow)
    stored = item(platform, "c-1")
    assert stored is not None
    assert stored[STATUS_ATTR] == {"S": "INPROGRESS"}
    assert stored[IN_PROGRESS_EXPIRY_ATTR] == {"N": str(fresh.in_progress_expiry)}
    store.complete(fresh)
    assert item(platform, "c-1")[STATUS_ATTR] == {"S": "COMPLETED"}  # type: ignore[index]


def test_failure_releases_the_claim_so_the_retry_runs(platform: ResourceNames) -> None:
    store = IdempotencyStore()
    with pytest.raises(TimeoutError):
        run_once(store, NS, "c-1", Effect(fail=TimeoutError("sink timed out")), payload_hash="h")
    assert item(platform, "c-1") is None
    retry = Effect()
    assert run_once(store, NS, "c-1", retry, payload_hash="h") == Once("done-1", False)


def test_completed_key_with_other_payload_is_a_permanent_mismatch(
    platform: ResourceNames,
) -> None:
    store = IdempotencyStore()
    run_once(store, NS, "c-1", Effect(), payload_hash=payload_hash({"n": 1}))
    effect = Effect()
    with pytest.raises(IdempotencyPayloadMismatchError) as raised:
        run_once(store, NS, "c-1", effect, payload_hash=payload_hash({"n": 2}))
    assert isinstance(raised.value, PermanentError)
    assert "cleanse#c-1" in raised.value.reason
    assert effect.calls == 0


def test_in_progress_key_with_other_payload_is_a_mismatch(platform: ResourceNames) -> None:
    store = IdempotencyStore()
    store.claim(NS, "c-1", payload_hash="h1")
    with pytest.raises(IdempotencyPayloadMismatchError):
        store.claim(NS, "c-1", payload_hash="h2")


def test_ttl_attribute_is_set_and_in_the_future(platform: ResourceNames) -> None:
    before = int(time.time())
    store = IdempotencyStore()
    store.claim(NS, "c-1", payload_hash="h1")
    stored = item(platform, "c-1")
    assert stored is not None
    expires_at = int(stored[EXPIRES_AT_ATTR]["N"])
    assert before + DEFAULT_TTL_SECONDS <= expires_at <= int(time.time()) + DEFAULT_TTL_SECONDS
    in_progress = int(stored[IN_PROGRESS_EXPIRY_ATTR]["N"])
    assert in_progress >= (before * 1000) + DEFAULT_REMAINING_MS  # milliseconds, not seconds
    store.complete(store.claim(NS, "c-2"))
    completed = item(platform, "c-2")
    assert completed is not None
    assert int(completed[EXPIRES_AT_ATTR]["N"]) > time.time() + DEFAULT_TTL_SECONDS - 60


def test_ttl_is_settable(platform: ResourceNames) -> None:
    IdempotencyStore(ttl_seconds=3600).claim(NS, "c-1")
    stored = item(platform, "c-1")
    assert stored is not None
    assert abs(int(stored[EXPIRES_AT_ATTR]["N"]) - (time.time() + 3600)) < 5


def test_item_past_its_ttl_counts_as_absent(platform: ResourceNames) -> None:
    # DynamoDB deletes expired items days late (moto never does): the claim ignores them.
    clock = Clock()
    store = IdempotencyStore(clock=clock, ttl_seconds=60)
    run_once(store, NS, "c-1", Effect())
    clock.now += 61
    effect = Effect()
    assert run_once(store, NS, "c-1", effect).duplicate is False
    assert effect.calls == 1


def test_remaining_time_sets_the_in_progress_expiry(platform: ResourceNames) -> None:
    clock = Clock(1_800_000_000.0)
    store = IdempotencyStore(clock=clock)
    claim = store.claim(NS, "c-1", remaining_ms=lambda: 30_000)
    assert claim.in_progress_expiry == 1_800_000_000_000 + 30_000 + IN_PROGRESS_MARGIN_MS


def test_new_key_costs_two_calls_and_a_duplicate_one(
    platform: ResourceNames, dynamodb_calls: Any
) -> None:
    store = IdempotencyStore()
    run_once(store, NS, "c-1", Effect(), payload_hash="h")
    assert dynamodb_calls.operations == ["PutItem", "UpdateItem"]
    dynamodb_calls.clear()
    run_once(store, NS, "c-1", Effect(), payload_hash="h")
    assert dynamodb_calls.operations == ["PutItem"]


def test_disabled_idempotency_runs_fn_without_dynamodb(
    platform: ResourceNames, dynamodb_calls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.config import reset_settings

    monkeypatch.setenv("SLUICE_IDEMPOTENCY", "off")
    reset_settings()
    store, effect = IdempotencyStore(), Effect()
    assert run_once(store, NS, "c-1", effect) == Once("done-1", False)
    assert run_once(store, NS, "c-1", effect) == Once("done-2", False)
    assert dynamodb_calls.count == 0
    assert item(platform, "c-1") is None


def test_store_errors_are_transient_and_not_botocore(platform: ResourceNames) -> None:
    from botocore.exceptions import ClientError

    store = IdempotencyStore(table_name="no-such-table")
    with pytest.raises(IdempotencyStoreError) as raised:
        store.claim(NS, "c-1")
    assert isinstance(raised.value, TransientError)
    assert not isinstance(raised.value, ClientError)
    assert isinstance(raised.value.__cause__, ClientError)


def test_payload_hash_is_stable_and_canonical() -> None:
    assert payload_hash({"b": 1, "a": "é"}) == payload_hash({"a": "é", "b": 1})
    assert payload_hash({"a": 1}) != payload_hash({"a": 2})
    assert len(payload_hash([])) == 64


def test_hashes_of_different_schemes_are_not_compared(platform: ResourceNames) -> None:
    store = IdempotencyStore()
    run_once(store, NS, "c-old", Effect(), payload_hash="ab" * 32)  # before the scheme prefix
    run_once(store, NS, "c-new", Effect(), payload_hash="j2:" + "ab" * 32)

    assert run_once(store, NS, "c-old", Effect(), payload_hash="j2:" + "cd" * 32).duplicate
    with pytest.raises(IdempotencyPayloadMismatchError):
        run_once(store, NS, "c-new", Effect(), payload_hash="j2:" + "cd" * 32)


# ---------------------------------------------------------------------- lost answers
# Each write of the state machine has landed, its answer is lost, and botocore retries it.


def test_a_claim_whose_answer_was_lost_is_ours_on_the_retry(platform: ResourceNames) -> None:
    store, effect = IdempotencyStore(), Effect()
    with lose_answers(aws.dynamodb(), "PutItem") as lost:
        once = run_once(store, NS, "c-1", effect, payload_hash="h")

    assert lost.lost == ["PutItem"]
    assert (once, effect.calls) == (Once("done-1", False), 1)
    assert item(platform, "c-1")[STATUS_ATTR] == {"S": "COMPLETED"}  # type: ignore[index]


def test_a_claim_held_by_another_owner_is_still_refused(platform: ResourceNames) -> None:
    IdempotencyStore().claim(NS, "c-1", payload_hash="h")  # another invocation holds it
    with pytest.raises(ClaimInProgressError):
        IdempotencyStore().claim(NS, "c-1", payload_hash="h")
    stored = item(platform, "c-1")
    assert stored is not None
    assert stored[OWNER_ATTR]["S"]


def test_a_completion_whose_answer_was_lost_still_completes(platform: ResourceNames) -> None:
    store, effect = IdempotencyStore(), Effect()
    with lose_answers(aws.dynamodb(), "UpdateItem") as lost:
        run_once(store, NS, "c-1", effect, payload_hash="h")

    assert lost.lost == ["UpdateItem"]
    assert item(platform, "c-1")[STATUS_ATTR] == {"S": "COMPLETED"}  # type: ignore[index]
    assert run_once(store, NS, "c-1", Effect(), payload_hash="h") == Once(None, True)


def test_a_release_whose_answer_was_lost_still_frees_the_key(platform: ResourceNames) -> None:
    store = IdempotencyStore()
    with lose_answers(aws.dynamodb(), "DeleteItem") as lost, pytest.raises(TimeoutError):
        run_once(store, NS, "c-1", Effect(fail=TimeoutError("sink")), payload_hash="h")

    assert lost.lost == ["DeleteItem"]
    assert item(platform, "c-1") is None
    assert run_once(store, NS, "c-1", Effect(), payload_hash="h") == Once("done-1", False)


# ---------------------------------------------------------------------- leases


def test_a_leased_claim_blocks_a_dead_holders_key_for_one_lease_not_its_whole_timeout(
    platform: ResourceNames,
) -> None:
    clock = Clock()
    holder = IdempotencyStore(clock=clock)
    holder.claim(NS, "obj", remaining_ms=900_000, lease_ms=60_000)  # then it was killed
    clock.now += 60 + IN_PROGRESS_MARGIN_MS / 1000 + 1

    effect = Effect()
    once = run_once(IdempotencyStore(clock=clock), NS, "obj", effect, remaining_ms=900_000)

    assert once == Once("done-1", False)


def test_a_lease_is_renewed_while_the_effect_works_and_only_when_half_of_it_passed(
    platform: ResourceNames, dynamodb_calls: Any
) -> None:
    clock = Clock()
    store = IdempotencyStore(clock=clock)
    expiries: list[int] = []

    def long_effect() -> str:
        for _ in range(4):  # four steps of 20 s: renewed at 40 s and at 80 s (lease 60 s)
            clock.now += 20
            renew_lease()
            stored = item(platform, "obj")
            assert stored is not None
            expiries.append(int(stored[IN_PROGRESS_EXPIRY_ATTR]["N"]))
        return "read"

    start_ms = int(clock.now * 1000)
    once = run_once(store, NS, "obj", long_effect, remaining_ms=900_000, lease_ms=60_000)

    assert once == Once("read", False)
    assert dynamodb_calls.operations.count("UpdateItem") == 3  # two renewals, one completion
    assert len(set(expiries)) == 3  # first lease, renewed once, renewed twice
    assert expiries[-1] == start_ms + 80_000 + 60_000 + IN_PROGRESS_MARGIN_MS


def test_a_lease_taken_over_stops_the_slow_holder(platform: ResourceNames) -> None:
    clock = Clock()
    slow = IdempotencyStore(clock=clock)

    def too_slow() -> str:
        clock.now += 120  # past the lease: another invocation takes the key over
        IdempotencyStore(clock=clock).claim(NS, "obj", remaining_ms=60_000)
        renew_lease()
        return "unreachable"

    with pytest.raises(ClaimLostError):
        run_once(slow, NS, "obj", too_slow, remaining_ms=900_000, lease_ms=60_000)
    stored = item(platform, "obj")
    assert stored is not None
    assert stored[STATUS_ATTR] == {"S": "INPROGRESS"}  # the new holder's claim is untouched
