"""A short seeded chaos run (sluice_tools.chaos): nothing lost, nothing doubled, under faults.

One seed, a few hundred orders, every fault kind on: API faults at the emulator on every
function (S3- and SNS-triggered ones included), SIGKILLed workers, duplicate S3 notifications
inside and outside the duplicate window, identical re-uploads and an overwritten key. Counted
at the sinks themselves; the ledger's verdict must agree with them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from sluice_tools.chaos import ChaosOptions, SeedResult, format_result, run_seed

from .conftest import ROOT

pytestmark = pytest.mark.slow

SEED = 20261204
RECORDS = 600


@pytest.fixture(scope="module")
def chaos(aws_env: None) -> SeedResult:
    options = ChaosOptions(
        records=RECORDS,
        objects=4,
        rate=0.02,
        async_rate=0.1,
        # The end-to-end tests' state dir: chalice's zip cache is shared, the deploy is quick.
        state_dir=ROOT / ".sluice" / "tests-local",
        root=ROOT,
        drain_timeout_s=240,
    )
    result = run_seed(SEED, options, say=lambda _line: None)
    print(format_result(result))  # shown by pytest when a test fails
    return result


def _sink(result: SeedResult, name: str) -> Any:
    (found,) = [s for s in result.sinks if s.sink == name]
    return found


def test_the_run_met_faults_in_every_kind_of_function(chaos: SeedResult):
    assert chaos.drained
    assert sum(chaos.fault_counts.values()) > 0
    ingest = [f for f in chaos.faults_by_function if f.endswith("on_object_created")]
    assert ingest, chaos.faults_by_function  # the S3-triggered function met faults too
    assert chaos.notifications["inside window"] + chaos.notifications["outside window"] > 0
    assert chaos.uploads["identical re-upload"]
    assert chaos.uploads["overwrite"]


@pytest.mark.parametrize("sink", ["warehouse", "index"])
def test_every_order_reaches_the_warehouse_and_the_index_exactly_once(chaos: SeedResult, sink):
    found = _sink(chaos, sink)
    assert found.expected == RECORDS
    assert (found.lost, found.doubled, found.dead, found.unexpected) == (0, 0, 0, 0), format_result(
        chaos
    )


def test_every_high_value_order_is_alerted_at_least_once(chaos: SeedResult):
    # The alerts contract is at least once for now (issue 24 will state it exactly).
    alerts = _sink(chaos, "alerts")
    assert alerts.expected > 0
    assert (alerts.lost, alerts.dead, alerts.unexpected) == (0, 0, 0), format_result(chaos)


def test_no_dead_letters_once_the_faults_stop(chaos: SeedResult):
    assert chaos.dead_letters == {}, format_result(chaos)


def test_the_ledgers_verdict_agrees_with_the_sinks(chaos: SeedResult):
    assert chaos.ledger_agrees, format_result(chaos)
    assert chaos.ledger_exit == 0, format_result(chaos)


def test_each_delivered_object_emits_object_delivered_exactly_once(chaos: SeedResult):
    # Counted as the messages a rule on the bus delivered (not deduplicated by event_id),
    # after one scheduled check (the backstop for an emission a fault stopped). PutEvents
    # suffers the same faults as every other call: a message beyond the first is allowed
    # only for a PutEvents whose answer was lost after EventBridge took it, and carries the
    # same event_id.
    assert chaos.balanced_flows
    assert set(chaos.delivered_events) == set(chaos.balanced_flows), format_result(chaos)
    assert all(len(ids) == 1 for ids in chaos.delivered_event_ids.values()), format_result(chaos)
    assert chaos.events_repeated <= chaos.lost_put_events, format_result(chaos)
    if not chaos.lost_put_events:
        assert chaos.delivered_events == Counter(chaos.balanced_flows), format_result(chaos)
