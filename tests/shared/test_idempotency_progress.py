"""Claims with progress: an effect done in numbered steps; a takeover keeps the steps done."""

from __future__ import annotations

import time
from typing import Any

import pytest
from support.calls import count_calls, lose_answers

from sluice import aws
from sluice.config import ResourceNames
from sluice.idempotency import (
    IN_PROGRESS_EXPIRY_ATTR,
    IN_PROGRESS_MARGIN_MS,
    KEY_ATTR,
    PROGRESS_ATTR,
    STATUS_ATTR,
    ClaimInProgressError,
    ClaimLostError,
    IdempotencyStore,
)

NS = "alerts"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def stored(names: ResourceNames, key: str) -> dict[str, Any]:
    found = aws.dynamodb().get_item(
        TableName=names.idempotency_table, Key={KEY_ATTR: {"S": f"{NS}#{key}"}}
    )
    return dict(found["Item"])


def test_a_lapsed_claim_is_taken_over_with_the_steps_its_holder_recorded(
    platform: ResourceNames,
) -> None:
    clock = Clock()
    store = IdempotencyStore(clock=clock)
    first = store.claim_with_progress(NS, "c-1", lease_ms=1_000)
    assert first.progress == frozenset()
    first = store.record_progress(first, [0, 1, 2], lease_ms=1_000)
    store.record_progress(first, [3])  # then the holder died
    with pytest.raises(ClaimInProgressError):
        store.claim_with_progress(NS, "c-1", lease_ms=1_000)

    clock.now += (1_000 + IN_PROGRESS_MARGIN_MS) / 1000 + 1
    second = store.claim_with_progress(NS, "c-1", lease_ms=1_000)

    assert second.duplicate is False
    assert second.progress == {0, 1, 2, 3}
    with pytest.raises(ClaimLostError):
        store.record_progress(first, [4])  # the old holder changes nothing now
    store.complete(second, [4, 5])
    item = stored(platform, "c-1")
    assert item[STATUS_ATTR] == {"S": "COMPLETED"}
    assert sorted(int(n) for n in item[PROGRESS_ATTR]["NS"]) == [0, 1, 2, 3, 4, 5]
    assert store.claim_with_progress(NS, "c-1").duplicate is True


def test_a_released_claim_is_taken_over_at_once_with_its_progress(
    platform: ResourceNames,
) -> None:
    store = IdempotencyStore()
    held = store.claim_with_progress(NS, "c-1", lease_ms=60_000)
    store.record_progress(held, [7], release=True)

    again = store.claim_with_progress(NS, "c-1", lease_ms=60_000)

    assert again.progress == {7}
    assert int(stored(platform, "c-1")[IN_PROGRESS_EXPIRY_ATTR]["N"]) > time.time() * 1000


def test_progress_renews_the_lease_in_the_same_single_write(platform: ResourceNames) -> None:
    clock = Clock()
    store = IdempotencyStore(clock=clock)
    held = store.claim_with_progress(NS, "c-1", lease_ms=1_000)
    clock.now += 0.9
    calls = count_calls(aws.dynamodb())

    renewed = store.record_progress(held, [0], lease_ms=1_000)

    assert calls.operations == ["UpdateItem"]
    assert renewed.in_progress_expiry == int(clock.now * 1000) + 1_000 + IN_PROGRESS_MARGIN_MS
    assert int(stored(platform, "c-1")[IN_PROGRESS_EXPIRY_ATTR]["N"]) == (
        renewed.in_progress_expiry
    )


def test_a_claim_whose_answer_was_lost_is_held_with_the_progress_it_took_over(
    platform: ResourceNames,
) -> None:
    clock = Clock()
    store = IdempotencyStore(clock=clock)
    store.record_progress(store.claim_with_progress(NS, "c-1", lease_ms=1_000), [0, 1])
    clock.now += 10  # the holder died after marking two steps

    with lose_answers(aws.dynamodb(), "UpdateItem") as lost:
        taken = store.claim_with_progress(NS, "c-1", lease_ms=1_000)

    assert lost.lost == ["UpdateItem"]
    assert taken.duplicate is False
    assert taken.progress == {0, 1}
