"""Idempotency for many keys at once: one claim transaction per 100 keys, batched completion."""

from __future__ import annotations

from typing import Any

import pytest
from support.calls import lose_answers

from sluice import aws
from sluice.config import ResourceNames
from sluice.idempotency import (
    IN_PROGRESS_EXPIRY_ATTR,
    KEY_ATTR,
    STATUS_ATTR,
    BatchOnce,
    ClaimInProgressError,
    IdempotencyStore,
    IdempotencyStoreError,
    run_batch_once,
    run_once,
)

NS = "alerts"


def statuses(names: ResourceNames, keys: list[str]) -> dict[str, str | None]:
    found = {}
    for key in keys:
        got = aws.dynamodb().get_item(
            TableName=names.idempotency_table, Key={KEY_ATTR: {"S": f"{NS}#{key}"}}
        )
        item = got.get("Item")
        found[key] = item[STATUS_ATTR]["S"] if item else None
    return found


class Effect:
    """Does the effect for the keys it is given (all, or all but `refuse`); counts them."""

    def __init__(self, refuse: set[str] | None = None, fail: BaseException | None = None):
        self.refuse = refuse or set()
        self.fail = fail
        self.calls: list[list[str]] = []

    def __call__(self, keys: list[str]) -> set[str]:
        self.calls.append(list(keys))
        if self.fail is not None:
            raise self.fail
        return {k for k in keys if k not in self.refuse}


def test_new_keys_run_once_and_end_completed(platform: ResourceNames) -> None:
    effect = Effect()

    once = run_batch_once(IdempotencyStore(), NS, ["r-1", "r-2", "r-3"], effect)

    assert once == BatchOnce(("r-1", "r-2", "r-3"), (), ())
    assert effect.calls == [["r-1", "r-2", "r-3"]]
    assert set(statuses(platform, ["r-1", "r-2", "r-3"]).values()) == {"COMPLETED"}


def test_keys_done_before_are_skipped_and_the_rest_run(platform: ResourceNames) -> None:
    store = IdempotencyStore()
    run_batch_once(store, NS, ["r-2"], Effect())
    run_once(store, NS, "r-4", lambda: None)  # single-key claims share the keys
    effect = Effect()

    once = run_batch_once(store, NS, ["r-1", "r-2", "r-3", "r-4"], effect)

    assert effect.calls == [["r-1", "r-3"]]
    assert once.done == ("r-1", "r-3")
    assert sorted(once.duplicates) == ["r-2", "r-4"]


def test_a_repeat_of_the_whole_batch_does_nothing(platform: ResourceNames) -> None:
    store = IdempotencyStore()
    run_batch_once(store, NS, ["r-1", "r-2"], Effect())
    effect = Effect()

    once = run_batch_once(store, NS, ["r-2", "r-1", "r-2"], effect)

    assert effect.calls == []
    assert once == BatchOnce((), ("r-2", "r-1"), ())


def test_keys_the_effect_did_not_do_are_released_for_the_retry(platform: ResourceNames) -> None:
    store = IdempotencyStore()

    once = run_batch_once(store, NS, ["r-1", "r-2", "r-3"], Effect(refuse={"r-2"}))
    retry = Effect()
    again = run_batch_once(store, NS, ["r-1", "r-2", "r-3"], retry)

    assert once.failed == ("r-2",)
    assert retry.calls == [["r-2"]]
    assert again.done == ("r-2",)
    assert statuses(platform, ["r-2"]) == {"r-2": "COMPLETED"}


def test_an_effect_that_raises_releases_every_claim(platform: ResourceNames) -> None:
    store = IdempotencyStore()

    with pytest.raises(TimeoutError):
        run_batch_once(store, NS, ["r-1", "r-2"], Effect(fail=TimeoutError("sns")))

    assert statuses(platform, ["r-1", "r-2"]) == {"r-1": None, "r-2": None}


def test_a_key_held_elsewhere_raises_transient_and_claims_nothing(
    platform: ResourceNames,
) -> None:
    store = IdempotencyStore()
    held = store.claim(NS, "r-2", remaining_ms=60_000)
    effect = Effect()

    with pytest.raises(ClaimInProgressError):
        run_batch_once(store, NS, ["r-1", "r-2", "r-3"], effect)

    assert effect.calls == []
    assert statuses(platform, ["r-1", "r-3"]) == {"r-1": None, "r-3": None}
    stored = aws.dynamodb().get_item(
        TableName=platform.idempotency_table, Key={KEY_ATTR: {"S": f"{NS}#r-2"}}
    )["Item"]
    assert stored[IN_PROGRESS_EXPIRY_ATTR] == {"N": str(held.in_progress_expiry)}


def test_more_than_a_hundred_keys_are_claimed_a_hundred_at_a_time(
    platform: ResourceNames, dynamodb_calls: Any
) -> None:
    keys = [f"r-{i}" for i in range(230)]
    effect = Effect()

    once = run_batch_once(IdempotencyStore(), NS, keys, effect)

    assert [len(c) for c in effect.calls] == [100, 100, 30]
    assert len(once.done) == 230
    ops = dynamodb_calls.operations
    assert ops.count("TransactWriteItems") == 3
    assert ops.count("BatchWriteItem") == 4 + 4 + 2  # completions, 25 a call


def test_claim_many_refuses_repeated_or_too_many_keys(platform: ResourceNames) -> None:
    store = IdempotencyStore()
    with pytest.raises(ValueError, match="distinct"):
        store.claim_many(NS, ["r-1", "r-1"])
    with pytest.raises(ValueError, match="at most 100"):
        store.claim_many(NS, [f"r-{i}" for i in range(101)])


def test_claim_errors_are_transient_store_errors(platform: ResourceNames) -> None:
    store = IdempotencyStore(table_name="no-such-table")
    with pytest.raises(IdempotencyStoreError):
        store.claim_many(NS, ["r-1"])


def test_disabled_idempotency_runs_every_key_without_dynamodb(
    platform: ResourceNames, dynamodb_calls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.config import reset_settings

    monkeypatch.setenv("SLUICE_IDEMPOTENCY", "off")
    reset_settings()
    effect = Effect(refuse={"r-2"})

    once = run_batch_once(IdempotencyStore(), NS, ["r-1", "r-2"], effect)

    assert once == BatchOnce(("r-1",), (), ("r-2",))
    assert dynamodb_calls.count == 0


def test_a_claim_transaction_whose_answer_was_lost_holds_every_key(
    platform: ResourceNames,
) -> None:
    # moto ignores ClientRequestToken, so the retry is cancelled on our own claims: they are
    # recognised by their owner (the local emulator, like DynamoDB, answers from the token).
    keys = ["r-1", "r-2", "r-3"]
    effect = Effect()
    with lose_answers(aws.dynamodb(), "TransactWriteItems") as lost:
        done = run_batch_once(IdempotencyStore(), NS, keys, effect)

    assert lost.lost == ["TransactWriteItems"]
    assert done == BatchOnce(tuple(keys), (), ())
    assert effect.calls == [keys]
    assert statuses(platform, keys) == dict.fromkeys(keys, "COMPLETED")


def test_a_completion_batch_whose_answer_was_lost_still_completes(
    platform: ResourceNames,
) -> None:
    keys = ["q-1", "q-2"]
    with lose_answers(aws.dynamodb(), "BatchWriteItem") as lost:
        done = run_batch_once(IdempotencyStore(), NS, keys, Effect())

    assert lost.lost == ["BatchWriteItem"]
    assert done.done == tuple(keys)
    assert statuses(platform, keys) == dict.fromkeys(keys, "COMPLETED")
    assert run_batch_once(IdempotencyStore(), NS, keys, Effect()).duplicates == tuple(keys)
