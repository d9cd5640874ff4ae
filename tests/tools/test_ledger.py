"""`sluice ledger`: reconcile() on hand-made entries, filter policies, and the command on moto."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from support.platform import STAGE

from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import ResourceNames
from sluice.envelope import Chunk, Record, derive_chunk_id, object_correlation_id
from sluice.ledger import LedgerWriter
from sluice_tools.cli import main
from sluice_tools.ledger import format_report, ledger_report
from sluice_tools.ledger.command import repo_sinks
from sluice_tools.ledger.filters import (
    FilterPolicy,
    FilterPolicyError,
    SinkPolicy,
    consumer_policies,
)
from sluice_tools.ledger.reconcile import (
    DEFAULT_GRACE,
    ClaimState,
    DeadChunk,
    Exit,
    LandedObject,
    LedgerEntry,
    reconcile,
)
from sluice_tools.stages import PIPELINE_STAGES

REPO = Path(__file__).resolve().parents[2]
CORR = "ingest-abc"
HIGH_EU = json.dumps({"priority": "high", "region": "eu"}, separators=(",", ":"))
NORMAL_EU = json.dumps({"priority": "normal", "region": "eu"}, separators=(",", ":"))
SINKS = {
    "warehouse": SinkPolicy("warehouse", FilterPolicy.parse({"record_type": [{"exists": True}]})),
    "alerts": SinkPolicy("alerts", FilterPolicy.parse({"priority": ["high"]}), direct=True),
}


def stage(name: str, chunk: str, n: int, out: int | None = None, **counts: Any) -> LedgerEntry:
    return LedgerEntry(
        CORR,
        name,
        chunk,
        type="order",
        source="s3://landing/incoming/order/a.jsonl",
        records_in=n,
        out=n if out is None else out,
        **counts,
    )


def sink(name: str, chunk: str, n: int, delivered: int | None = None) -> LedgerEntry:
    return LedgerEntry(
        CORR,
        name,
        chunk,
        is_sink=True,
        type="order",
        records_in=n,
        delivered=n if delivered is None else delivered,
    )


def balanced(**overrides: list[LedgerEntry]) -> dict[str, list[LedgerEntry]]:
    """10 read, 1 quarantined at ingest and 1 at cleanse; 8 routed: 3 high, 5 normal."""
    entries = {
        "ingest": [stage("ingest", "c1", 10, out=9, quarantined=1)],
        "cleanse": [stage("cleanse", "c1", 9, out=8, quarantined=1)],
        "router": [stage("router", "c2", 8, routes={HIGH_EU: 3, NORMAL_EU: 5})],
        "warehouse": [
            stage("consumer-warehouse", "h", 3),
            stage("consumer-warehouse", "n", 5),
            sink("warehouse", "h", 3),
            sink("warehouse", "n", 5),
        ],
        "alerts": [stage("consumer-alerts", "h", 3), sink("alerts", "h", 3)],
    }
    entries.update(overrides)
    return entries


def flat(entries: dict[str, list[LedgerEntry]]) -> list[LedgerEntry]:
    return [e for group in entries.values() for e in group]


def hop(report: Any, name: str) -> Any:
    return next(h for h in report.flows[0].hops if h.name == name)


def test_a_balanced_flow_accounts_for_every_record_and_exits_zero() -> None:
    report = reconcile(flat(balanced()), [], {}, sinks=SINKS)

    assert report.exit_code == Exit.BALANCED
    flow = report.flows[0]
    assert flow.read == 10
    assert hop(report, "consumer-warehouse").expected == 8
    assert hop(report, "consumer-alerts").expected == 3  # only the high-priority route
    assert hop(report, "sink:alerts").delivered == 3
    assert all(h.status == "ok" for h in flow.hops)


def test_records_missing_between_hops_but_in_the_dlq_are_dead_letters_never_balanced() -> None:
    entries = balanced(cleanse=[stage("cleanse", "c1", 4, out=4)])  # 5 of 9 never recorded
    entries.update(router=[stage("router", "c2", 4, routes={NORMAL_EU: 4})], alerts=[])
    entries["warehouse"] = [stage("consumer-warehouse", "n", 4), sink("warehouse", "n", 4)]
    dead = [DeadChunk("sluice-test-raw-dlq", "cleanse", CORR, "c9", 5)]

    report = reconcile(flat(entries), dead, {}, sinks=SINKS)

    assert report.exit_code == Exit.DEAD_LETTERS, report.to_dict()
    assert int(Exit.DEAD_LETTERS) == 3
    assert report.flows[0].status == "dead letters"
    assert hop(report, "cleanse").dead == 5
    assert hop(report, "cleanse").missing == 0  # accounted for: known to be in the DLQ
    assert hop(report, "cleanse").status == "dead letters"
    assert report.dead_letters == {"sluice-test-raw-dlq": 1}


def test_a_dead_chunk_that_was_processed_after_all_is_not_counted_twice() -> None:
    dead = [DeadChunk("sluice-test-raw-dlq", "cleanse", CORR, "c1", 9)]  # c1 has an entry

    report = reconcile(flat(balanced()), dead, {}, sinks=SINKS)

    assert hop(report, "cleanse").dead == 0
    assert report.exit_code == Exit.BALANCED


def test_records_neither_recorded_nor_dead_lettered_are_unaccounted_and_exit_one() -> None:
    entries = balanced(router=[stage("router", "c2", 6, routes={HIGH_EU: 3, NORMAL_EU: 3})])
    entries["warehouse"] = [
        stage("consumer-warehouse", "h", 3),
        stage("consumer-warehouse", "n", 3),
        sink("warehouse", "h", 3),
        sink("warehouse", "n", 3),
    ]

    report = reconcile(flat(entries), [], {}, sinks=SINKS)

    assert report.exit_code == Exit.UNACCOUNTED
    assert hop(report, "router").missing == 2
    assert hop(report, "router").status == "unaccounted"
    assert any(p.kind == "unaccounted" and p.where == "router" for p in report.flows[0].problems)


def test_a_gap_while_the_hops_queue_still_holds_messages_is_in_flight_and_exits_two() -> None:
    entries = balanced(router=[], warehouse=[], alerts=[])

    report = reconcile(flat(entries), [], {"router": 1}, sinks=SINKS)

    assert report.exit_code == Exit.NOT_SETTLED
    assert hop(report, "router").status == "in flight"


def test_records_quarantined_at_each_stage_are_accounted_for() -> None:
    entries = balanced(
        router=[stage("router", "c2", 8, out=7, quarantined=1, routes={NORMAL_EU: 7})],
        alerts=[],
    )
    entries["warehouse"] = [
        stage("consumer-warehouse", "n", 7, out=5, quarantined=2),
        sink("warehouse", "n", 7, delivered=5),
    ]

    report = reconcile(flat(entries), [], {}, sinks=SINKS)

    assert report.exit_code == Exit.BALANCED, report.to_dict()
    assert [hop(report, n).quarantined for n in PIPELINE_STAGES] == [1, 1, 1]
    assert hop(report, "sink:warehouse").quarantined == 2


def test_a_sink_that_delivered_fewer_records_than_its_routes_promise_is_a_shortfall() -> None:
    entries = balanced(alerts=[stage("consumer-alerts", "h", 3), sink("alerts", "h", 3, 1)])

    report = reconcile(flat(entries), [], {}, sinks=SINKS)

    assert report.exit_code == Exit.UNACCOUNTED
    assert hop(report, "sink:alerts").missing == 2


def test_a_sink_that_never_received_its_routed_records_is_a_shortfall() -> None:
    report = reconcile(flat(balanced(alerts=[])), [], {}, sinks=SINKS)

    assert report.exit_code == Exit.UNACCOUNTED
    assert hop(report, "consumer-alerts").missing == 3


def test_a_failures_queue_holding_the_sinks_chunk_makes_the_flow_dead_letters() -> None:
    dead = [DeadChunk("sluice-test-consumer-alerts-failures", "consumer-alerts", CORR, "h", 3)]

    report = reconcile(flat(balanced(alerts=[])), dead, {}, sinks=SINKS)

    assert report.exit_code == Exit.DEAD_LETTERS
    assert hop(report, "consumer-alerts").missing == 0


def test_an_entry_whose_counts_do_not_add_up_is_inconsistent() -> None:
    entries = balanced(ingest=[stage("ingest", "c1", 10, out=9)])  # 1 record vanished inside

    report = reconcile(flat(entries), [], {}, sinks=SINKS)

    assert report.exit_code == Exit.UNACCOUNTED
    assert any(p.kind == "inconsistent" for p in report.flows[0].problems)


def test_router_entries_without_routes_check_filtered_sinks_only_as_an_upper_bound() -> None:
    entries = balanced(router=[stage("router", "c2", 8)])

    report = reconcile(flat(entries), [], {}, sinks=SINKS)

    assert report.exit_code == Exit.BALANCED
    assert hop(report, "consumer-alerts").status == "bounded"
    assert hop(report, "consumer-warehouse").status == "ok"  # its policy reads record_type only


def test_filter_policies_match_like_sns_for_the_supported_operators() -> None:
    policy = FilterPolicy.parse(
        {
            "record_type": ["order", {"prefix": "cust"}],
            "region": [{"anything-but": ["other"]}],
            "priority": [{"exists": True}],
        }
    )

    assert policy.matches({"record_type": "customer", "region": "eu", "priority": "high"})
    assert not policy.matches({"record_type": "order", "region": "other", "priority": "high"})
    assert not policy.matches({"record_type": "order", "region": "eu"})
    assert FilterPolicy.parse({"x": [{"exists": False}]}).matches({})


def test_an_unsupported_filter_operator_is_a_clear_error() -> None:
    with pytest.raises(FilterPolicyError, match="numeric"):
        FilterPolicy.parse({"amount": [{"numeric": [">", 10]}]})


def test_the_repositorys_consumer_policies_are_read_from_their_resources() -> None:
    policies = consumer_policies(REPO / "consumers")

    assert policies["alerts"].direct
    assert policies["alerts"].policy.matches({"priority": "high", "record_type": "order"})
    assert not policies["alerts"].policy.matches({"priority": "normal", "record_type": "order"})
    assert policies["warehouse"].policy.matches({"record_type": "anything"})


# ---------------------------------------------------------------- anchored at the landing

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
LANDED_KEY = "incoming/order/a.jsonl"
ETAG = "0cc175b9c0f1b6a831c399e269772661"


def landed(etag: str = ETAG, age: timedelta = timedelta(hours=1), **kw: Any) -> LandedObject:
    return LandedObject("sluice-test-landing", LANDED_KEY, etag, landed_at=NOW - age, **kw)


def of(obj: LandedObject, entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """The entries, as the stages would write them for this landed object."""
    return [replace(e, correlation_id=obj.correlation_id, source=obj.uri) for e in entries]


def ingest_claim(obj: LandedObject, status: str = "INPROGRESS", **kw: Any) -> ClaimState:
    return ClaimState(f"ingest#{obj.bucket}/{obj.key}/{obj.etag}", status, **kw)


def anchored(*objects: LandedObject, **kw: Any) -> Any:
    entries = kw.pop("entries", [])
    return reconcile(
        entries,
        kw.pop("dead", []),
        kw.pop("in_flight", {}),
        sinks=SINKS,
        landed=objects,
        now=NOW,
        **kw,
    )


def test_the_correlation_id_of_an_object_is_the_one_ingest_has_always_derived() -> None:
    assert (
        object_correlation_id("sluice-test-landing", LANDED_KEY, ETAG)
        == landed().correlation_id
        == "ingest-08030573705734cbd824497fe230c6d5"
    )


def test_a_landed_object_ingest_never_recorded_is_unaccounted_and_exits_one() -> None:
    obj = landed(age=DEFAULT_GRACE + timedelta(seconds=1))

    report = anchored(obj)

    (flow,) = report.flows
    assert (flow.correlation_id, flow.status, report.exit_code) == (
        obj.correlation_id,
        "unaccounted",
        Exit.UNACCOUNTED,
    )
    assert flow.source == obj.uri
    assert "no ledger entry" in flow.problems[0].message


def test_a_landed_object_not_yet_recorded_within_the_grace_is_in_flight() -> None:
    report = anchored(landed(age=DEFAULT_GRACE - timedelta(seconds=1)))

    assert (report.flows[0].status, report.exit_code) == ("in flight", Exit.NOT_SETTLED)
    assert "grace" in report.flows[0].problems[0].message


def test_the_grace_is_an_option() -> None:
    report = anchored(landed(age=timedelta(minutes=2)), grace=timedelta(minutes=1))

    assert report.exit_code == Exit.UNACCOUNTED


def test_a_landed_object_is_in_flight_while_the_runtimes_s3_event_queue_holds_events() -> None:
    old = landed(age=timedelta(days=1))

    assert anchored(old, ingest_events=1).exit_code == Exit.NOT_SETTLED
    # An empty event queue is the answer where there is one: no grace for a young object.
    assert anchored(landed(age=timedelta(0)), ingest_events=0).exit_code == Exit.UNACCOUNTED


def test_a_landed_object_is_in_flight_while_its_ingest_claim_is_in_progress() -> None:
    obj = landed(age=timedelta(days=1))
    live = ingest_claim(obj, in_progress_expiry=int((NOW.timestamp() + 60) * 1000))
    lapsed = ingest_claim(obj, in_progress_expiry=int((NOW.timestamp() - 60) * 1000))

    assert anchored(obj, claims=[live]).exit_code == Exit.NOT_SETTLED
    assert anchored(obj, claims=[lapsed]).exit_code == Exit.UNACCOUNTED


def test_a_landed_object_ingest_completed_without_an_entry_is_unaccounted_even_if_young() -> None:
    obj = landed(age=timedelta(seconds=5))

    report = anchored(obj, claims=[ingest_claim(obj, "COMPLETED")])

    assert report.exit_code == Exit.UNACCOUNTED
    assert "COMPLETED" in report.flows[0].problems[0].message


def test_a_recorded_object_is_in_flight_while_ingest_still_holds_its_claim() -> None:
    obj = landed(age=timedelta(days=1))
    live = ingest_claim(obj, in_progress_expiry=int((NOW.timestamp() + 60) * 1000))

    report = anchored(obj, entries=of(obj, flat(balanced())), claims=[live])

    assert report.exit_code == Exit.NOT_SETTLED
    assert report.flows[0].problems[-1].message.startswith("ingest may still read more")


def test_two_versions_of_a_key_with_different_bytes_are_two_expected_flows() -> None:
    first = landed("e1", version_id="v1", age=timedelta(days=1))
    second = landed("e2", version_id="v2", age=timedelta(days=1))

    report = anchored(first, second, entries=of(first, flat(balanced())))

    flows = {f.correlation_id: f for f in report.flows}
    assert set(flows) == {first.correlation_id, second.correlation_id}
    assert flows[first.correlation_id].status == "balanced"
    assert flows[second.correlation_id].status == "unaccounted"
    assert flows[first.correlation_id].versions == ["v1"]


def test_an_identical_reupload_is_one_flow_with_the_second_upload_noted_as_a_duplicate() -> None:
    first = landed(version_id="v1", age=timedelta(days=2))
    again = landed(version_id="v2", age=timedelta(days=1))

    report = anchored(again, first, entries=of(first, flat(balanced())))

    (flow,) = report.flows
    assert (flow.status, report.exit_code) == ("balanced", Exit.BALANCED)
    assert flow.versions == ["v1", "v2"]
    (note,) = [p for p in flow.problems if p.where == "landing"]
    assert note.kind == "note"
    assert "duplicates of version v1" in note.message


def test_objects_landed_before_the_ledgers_retention_are_not_expected() -> None:
    report = anchored(landed(age=timedelta(days=31)))

    assert (report.flows, report.exit_code) == ([], Exit.BALANCED)
    assert "not checked" in report.problems[0].message


def test_an_unknown_correlation_id_is_not_found_and_exits_four() -> None:
    obj = landed()

    report = anchored(obj, entries=of(obj, flat(balanced())), correlation_id="ingest-nope")

    assert (report.flows, report.status, report.exit_code) == ([], "not found", 4)


def test_a_correlation_id_selects_one_landed_object() -> None:
    obj, other = landed("e1"), landed("e2")

    report = anchored(
        obj, other, entries=of(obj, flat(balanced())), correlation_id=obj.correlation_id
    )

    assert [f.correlation_id for f in report.flows] == [obj.correlation_id]
    assert report.exit_code == Exit.BALANCED


def test_an_object_whose_s3_event_was_dead_lettered_before_ingest_recorded_it() -> None:
    obj = landed(age=timedelta(days=1))
    dead = DeadChunk("sluice-test-ingest-failures", "ingest", obj.correlation_id, source=obj.uri)

    report = anchored(obj, dead=[dead])

    assert (report.flows[0].status, report.exit_code) == ("dead letters", Exit.DEAD_LETTERS)


def test_dead_letters_never_hide_records_unaccounted_elsewhere() -> None:
    lost = landed("e2", age=timedelta(days=1))
    dead = [DeadChunk("sluice-test-raw-dlq", "cleanse", CORR, "c9", 5)]
    entries = balanced(cleanse=[stage("cleanse", "c1", 4, out=4)])
    entries.update(router=[stage("router", "c2", 4, routes={NORMAL_EU: 4})], alerts=[])
    entries["warehouse"] = [stage("consumer-warehouse", "n", 4), sink("warehouse", "n", 4)]

    report = anchored(lost, entries=flat(entries), dead=dead)

    assert sorted(f.status for f in report.flows) == ["dead letters", "unaccounted"]
    assert report.exit_code == Exit.UNACCOUNTED


def test_an_object_ingest_skipped_is_accounted_for_with_its_reason() -> None:
    obj = landed(age=timedelta(days=1))
    skipped = stage("ingest", "c-tail", 0, skipped="object version is gone")

    report = anchored(obj, entries=of(obj, [skipped]))

    (flow,) = report.flows
    assert (flow.status, report.exit_code) == ("skipped: object version is gone", 0)


# ---------------------------------------------------------------- a stage killed mid-way


def killed_after_send() -> list[LedgerEntry]:
    """cleanse sent its chunk, the router recorded it, cleanse's own entry is not written."""
    return flat(balanced(cleanse=[]))


def test_a_hop_receiving_more_than_its_upstream_recorded_is_in_flight_while_upstream_has_work() -> (
    None
):
    by_queue = reconcile(killed_after_send(), [], {"cleanse": 1}, sinks=SINKS)
    live = ClaimState(
        "cleanse#c1", "INPROGRESS", in_progress_expiry=int(NOW.timestamp() * 1000) + 1
    )
    by_claim = reconcile(killed_after_send(), [], {}, sinks=SINKS, claims=[live], now=NOW)

    for report in (by_queue, by_claim):
        assert report.exit_code == Exit.NOT_SETTLED, report.to_dict()
        assert hop(report, "router").status == "in flight"
        assert not any(p.kind in ("inconsistent", "unaccounted") for p in report.flows[0].problems)


def test_a_hop_receiving_more_than_its_idle_upstream_recorded_is_inconsistent() -> None:
    report = reconcile(killed_after_send(), [], {}, sinks=SINKS)

    assert report.exit_code == Exit.UNACCOUNTED
    assert hop(report, "router").status == "inconsistent"


def test_a_sink_delivering_more_than_its_consumer_recorded_is_in_flight_while_it_has_work() -> None:
    entries = balanced(alerts=[sink("alerts", "h", 3)])  # killed before its stage entry

    report = reconcile(flat(entries), [], {"consumer-alerts": 1}, sinks=SINKS)

    assert report.exit_code == Exit.NOT_SETTLED, report.to_dict()


# ---------------------------------------------------------------- records failed one by one

FAILED = derive_chunk_id("n", "failed")


def failed_in_warehouse(**overrides: list[LedgerEntry]) -> list[LedgerEntry]:
    """2 of the 5 normal-priority records failed in the warehouse consumer's code."""
    entries = balanced(
        warehouse=[
            stage("consumer-warehouse", "h", 3),
            stage("consumer-warehouse", "n", 5, out=3, failed=2),
            sink("warehouse", "h", 3),
            sink("warehouse", "n", 5, delivered=3),
            *overrides.pop("retries", []),
        ]
    )
    return flat(entries)


def failed_chunk(records: int = 2, parent: str = "n", chunk: str = FAILED) -> DeadChunk:
    return DeadChunk(
        "sluice-test-consumer-warehouse-dlq",
        "consumer-warehouse",
        CORR,
        chunk,
        records,
        failed_from=parent,
    )


def test_failed_records_in_the_dlq_are_dead_letters_not_subtracted_twice() -> None:
    report = reconcile(failed_in_warehouse(), [failed_chunk()], {}, sinks=SINKS)

    assert report.exit_code == Exit.DEAD_LETTERS, report.to_dict()
    consumer = hop(report, "consumer-warehouse")
    assert (consumer.received, consumer.failed, consumer.dead, consumer.missing) == (8, 2, 2, 0)
    assert consumer.status == "dead letters"
    assert hop(report, "sink:warehouse").missing == 0


def test_failed_records_neither_dead_lettered_nor_processed_again_are_unaccounted() -> None:
    report = reconcile(failed_in_warehouse(), [], {}, sinks=SINKS)

    assert report.exit_code == Exit.UNACCOUNTED
    assert hop(report, "consumer-warehouse").status == "unaccounted"


def test_failed_records_processed_again_move_from_failed_to_their_outcome() -> None:
    retries = [
        replace(stage("consumer-warehouse", FAILED, 2), retry_of="n"),
        replace(sink("warehouse", FAILED, 2), retry_of="n"),
    ]

    report = reconcile(failed_in_warehouse(retries=retries), [], {}, sinks=SINKS)

    assert report.exit_code == Exit.BALANCED, report.to_dict()
    consumer = hop(report, "consumer-warehouse")
    assert (consumer.received, consumer.out, consumer.failed) == (8, 8, 0)
    delivery = hop(report, "sink:warehouse")
    assert (delivery.received, delivery.delivered, delivery.missing) == (8, 8, 0)


def test_records_failing_again_when_processed_again_are_dead_letters_of_the_retry() -> None:
    again = derive_chunk_id(FAILED, "failed")
    retries = [
        replace(stage("consumer-warehouse", FAILED, 2, out=1, failed=1), retry_of="n"),
        replace(sink("warehouse", FAILED, 2, delivered=1), retry_of="n"),
    ]
    dead = [failed_chunk(1, parent=FAILED, chunk=again)]

    report = reconcile(failed_in_warehouse(retries=retries), dead, {}, sinks=SINKS)

    assert report.exit_code == Exit.DEAD_LETTERS, report.to_dict()
    consumer = hop(report, "consumer-warehouse")
    assert (consumer.received, consumer.failed, consumer.dead, consumer.missing) == (8, 1, 1, 0)


def test_a_failed_chunk_still_in_the_dlq_after_it_was_processed_again_is_a_stale_copy() -> None:
    retries = [
        replace(stage("consumer-warehouse", FAILED, 2), retry_of="n"),
        replace(sink("warehouse", FAILED, 2), retry_of="n"),
    ]

    report = reconcile(failed_in_warehouse(retries=retries), [failed_chunk()], {}, sinks=SINKS)

    assert report.exit_code == Exit.BALANCED, report.to_dict()
    assert any("stale" in p.message for p in report.flows[0].problems)


# ---------------------------------------------------------------- the command, on moto

LANDING = f"sluice-{STAGE}-landing"


@pytest.fixture
def platform(aws_env: None) -> Iterator[None]:
    """A moto account with the ledger table (as infra/platform.yaml defines it) and queues."""
    from moto import mock_aws

    with mock_aws():
        template = yaml.safe_load((REPO / "infra" / "platform.yaml").read_text(encoding="utf-8"))
        for table in ("LedgerTable", "IdempotencyTable"):
            props = template["Resources"][table]["Properties"]
            aws.dynamodb().create_table(
                TableName=re.sub(
                    r"\$\{[^}]+\}",
                    lambda m: {"${Stage}": STAGE}.get(m.group(0), "sluice"),
                    props["TableName"]["Fn::Sub"],
                ),
                KeySchema=props["KeySchema"],
                AttributeDefinitions=props["AttributeDefinitions"],
                BillingMode=props["BillingMode"],
                **{k: props[k] for k in ("GlobalSecondaryIndexes",) if k in props},
            )
        aws.s3().create_bucket(Bucket=LANDING)
        sqs = aws.sqs()
        for queue in ("raw", "clean", "consumer-warehouse"):
            dlq = sqs.create_queue(QueueName=f"sluice-{STAGE}-{queue}-dlq")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
            policy = {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": 5}
            sqs.create_queue(
                QueueName=f"sluice-{STAGE}-{queue}",
                Attributes={"RedrivePolicy": json.dumps(policy)},
            )
        yield


def chunk(chunk_id: str, n: int, corr: str = "ingest-one", **attributes: str) -> Chunk:
    records = tuple(
        Record(f"r-{chunk_id}-{i}", i, "2026-11-27T07:00:00.000Z", {"amount": i}) for i in range(n)
    )
    return Chunk(
        chunk_id,
        "order",
        "s3://sluice-test-landing/incoming/order/a.jsonl",
        corr,
        records,
        attributes,
    )


def write_pipeline(
    writer: LedgerWriter, *, warehouse: int = 4, corr: str = "ingest-one", cleanse: bool = True
) -> None:
    """One object through every stage as the stages record it: 5 read, 1 bad line."""
    raw = chunk("c-raw", 4, corr)
    writer.record_chunk("ingest", raw, ChunkOutcome(records_in=5, out=4, quarantined=1))
    clean = chunk("c-clean", 4, corr)
    if cleanse:
        writer.record_chunk("cleanse", raw, ChunkOutcome(records_in=4, out=4))
    high = chunk("c-high", 1, corr, priority="high")
    normal = chunk("c-normal", 3, corr, priority="normal")
    routes = {'{"priority":"high"}': 1, '{"priority":"normal"}': 3}
    writer.record_chunk("router", clean, ChunkOutcome(records_in=4, out=4, routes=routes))
    for sub in (high, normal)[: 2 if warehouse == 4 else 1]:
        n = len(sub.records)
        writer.record_chunk("consumer-warehouse", sub, ChunkOutcome(records_in=n, out=n))
        writer.record_delivery("warehouse", sub, n)
    for sub in (high, normal):
        n = len(sub.records)
        writer.record_chunk("consumer-index", sub, ChunkOutcome(records_in=n, out=n))
        writer.record_delivery("index", sub, n)
    writer.record_chunk("consumer-alerts", high, ChunkOutcome(records_in=1, out=1))
    writer.record_delivery("alerts", high, 1)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["ledger", "--stage", STAGE, "--repo", str(REPO), *args])


def test_ledger_json_reports_a_balanced_object_from_the_real_ledger_table(platform: None) -> None:
    write_pipeline(LedgerWriter())

    result = invoke("--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    (flow,) = report["correlations"]
    assert flow["correlation_id"] == "ingest-one"
    assert flow["read"] == 5
    hops = {h["name"]: h for h in flow["hops"]}
    assert hops["consumer-alerts"]["expected"] == 1
    assert hops["consumer-index"]["expected"] == 4  # index keeps every order
    assert hops["sink:warehouse"]["delivered"] == 4


def test_ledger_exits_one_and_names_the_hop_when_records_are_unaccounted(platform: None) -> None:
    write_pipeline(LedgerWriter(), warehouse=1)

    result = invoke("--correlation-id", "ingest-one")

    assert result.exit_code == 1, result.output
    assert "unaccounted: consumer-warehouse: 3 of 4 records" in result.output


def test_ledger_reports_records_waiting_in_a_dlq_as_dead_letters_and_exits_three(
    platform: None,
) -> None:
    write_pipeline(LedgerWriter(), warehouse=1)
    sqs = aws.sqs()
    dlq = sqs.get_queue_url(QueueName=f"sluice-{STAGE}-consumer-warehouse-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody=chunk("c-normal", 3, priority="normal").encode())

    result = invoke("--json")

    report = json.loads(result.output)
    hops = {h["name"]: h for h in report["correlations"][0]["hops"]}
    assert hops["consumer-warehouse"]["dead"] == 3
    assert hops["consumer-warehouse"]["missing"] == 0
    assert hops["consumer-warehouse"]["status"] == "dead letters"
    assert (report["status"], report["correlations"][0]["status"]) == ("dead letters",) * 2
    assert result.exit_code == 3, result.output
    assert (
        sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]["ApproximateNumberOfMessages"]
        == "1"
    )  # peeked, not consumed


def test_ledger_exits_two_while_a_hops_queue_still_holds_messages(platform: None) -> None:
    writer = LedgerWriter()
    writer.record_chunk("ingest", chunk("c-raw", 4), ChunkOutcome(records_in=4, out=4))
    sqs = aws.sqs()
    raw = sqs.get_queue_url(QueueName=f"sluice-{STAGE}-raw")["QueueUrl"]
    sqs.send_message(QueueUrl=raw, MessageBody=chunk("c-raw", 4).encode())

    result = invoke()

    assert result.exit_code == 2, result.output
    assert "in flight" in result.output


# ---------------------------------------------------------------- ledger_report, on moto


def put(body: bytes, key: str = LANDED_KEY) -> LandedObject:
    """Land an object as a producer would; what the ledger will list for it."""
    s3 = aws.s3()
    put = s3.put_object(Bucket=LANDING, Key=key, Body=body)
    version = put.get("VersionId")
    args: dict[str, Any] = {"Bucket": LANDING, "Key": key}
    if version:
        args["VersionId"] = version
    head = s3.head_object(**args)
    return LandedObject(LANDING, key, put["ETag"].strip('"'), head["LastModified"], version)


def report_at(now: datetime, **kw: Any) -> Any:
    return ledger_report(ResourceNames(stage=STAGE), sinks=repo_sinks(REPO), now=now, **kw)


def queue_url(role: str) -> str:
    return str(aws.sqs().get_queue_url(QueueName=f"sluice-{STAGE}-{role}")["QueueUrl"])


def drain(url: str) -> None:
    sqs = aws.sqs()
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for m in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_report_calls_a_landed_object_without_entries_unaccounted_after_the_grace(
    platform: None,
) -> None:
    obj = put(b'{"order_id": "o-1"}\n')

    late = report_at(obj.landed_at + DEFAULT_GRACE + timedelta(seconds=1))
    early = report_at(obj.landed_at + timedelta(seconds=1))

    assert [f.correlation_id for f in late.flows] == [obj.correlation_id]
    assert (late.flows[0].status, late.exit_code) == ("unaccounted", 1)
    assert (early.flows[0].status, early.exit_code) == ("in flight", 2)


def test_report_is_in_flight_while_the_runtimes_s3_event_queue_holds_the_objects_event(
    platform: None,
) -> None:
    sqs, s3 = aws.sqs(), aws.s3()
    events = sqs.create_queue(QueueName="sluice-ingest-test-on_object_created-rt-s3")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=events, AttributeNames=["QueueArn"])["Attributes"]
    s3.put_bucket_notification_configuration(
        Bucket=LANDING,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "sluice-rt-0123456789ab",
                    "QueueArn": arn["QueueArn"],
                    "Events": ["s3:ObjectCreated:*"],
                }
            ]
        },
    )
    drain(events)  # the s3:TestEvent of the configuration
    obj = put(b'{"order_id": "o-1"}\n')
    much_later = obj.landed_at + timedelta(days=1)

    pending = report_at(much_later)
    drain(events)  # the event was lost, say
    lost = report_at(much_later)

    assert (pending.flows[0].status, pending.exit_code) == ("in flight", 2)
    assert "S3 event(s) wait" in pending.flows[0].problems[0].message
    assert (lost.flows[0].status, lost.exit_code) == ("unaccounted", 1)


def test_report_is_in_flight_while_ingest_holds_its_claim_on_the_object(platform: None) -> None:
    obj = put(b'{"order_id": "o-1"}\n')
    much_later = obj.landed_at + timedelta(days=1)
    aws.dynamodb().put_item(
        TableName=f"sluice-{STAGE}-idempotency",
        Item={
            "pk": {"S": f"ingest#{LANDING}/{obj.key}/{obj.etag}"},
            "status": {"S": "INPROGRESS"},
            "in_progress_expiry": {"N": str(int(much_later.timestamp() * 1000) + 60_000)},
            "expires_at": {"N": str(int(much_later.timestamp()) + 3600)},
        },
    )

    report = report_at(much_later)

    assert (report.flows[0].status, report.exit_code) == ("in flight", 2)
    assert "claim" in report.flows[0].problems[0].message


def test_report_expects_each_version_of_a_key_and_one_flow_for_identical_bytes(
    platform: None,
) -> None:
    aws.s3().put_bucket_versioning(Bucket=LANDING, VersioningConfiguration={"Status": "Enabled"})
    first = put(b'{"order_id": "o-1"}\n')
    changed = put(b'{"order_id": "o-2"}\n')
    again = put(b'{"order_id": "o-2"}\n')
    for obj in (first, changed):
        write_pipeline(LedgerWriter(), corr=obj.correlation_id)

    report = report_at(again.landed_at + timedelta(days=1))

    assert report.exit_code == 0, format_report(report)
    flows = {f.correlation_id: f for f in report.flows}
    assert set(flows) == {first.correlation_id, changed.correlation_id}
    assert flows[changed.correlation_id].versions == [changed.version_id, again.version_id]
    assert flows[first.correlation_id].versions == [first.version_id]


def test_report_of_an_unknown_correlation_id_says_not_found_and_exits_four(
    platform: None,
) -> None:
    write_pipeline(LedgerWriter())

    result = invoke("--correlation-id", "ingest-0000")

    assert result.exit_code == 4, result.output
    assert "not found" in result.output
    assert "balanced" not in result.output


def test_report_shows_an_object_ingest_skipped_with_its_reason(platform: None) -> None:
    obj = put(b'{"order_id": "o-1"}\n')
    stand_in = Chunk("c-tail", "order", obj.uri, obj.correlation_id, ())
    LedgerWriter().record_skipped("ingest", stand_in, "object version is gone")

    report = report_at(obj.landed_at + timedelta(days=1))

    assert (report.flows[0].status, report.exit_code) == ("skipped: object version is gone", 0)
    assert "SKIPPED: object version is gone" in format_report(report)


def test_report_is_in_flight_when_a_stage_was_killed_between_its_send_and_its_entry(
    platform: None,
) -> None:
    write_pipeline(LedgerWriter(), cleanse=False)  # the router got cleanse's chunk
    aws.sqs().send_message(QueueUrl=queue_url("raw"), MessageBody=chunk("c-raw", 4).encode())
    retry_pending = report_at(NOW)
    drain(queue_url("raw"))
    nothing_pending = report_at(NOW)

    assert retry_pending.exit_code == 2, format_report(retry_pending)
    statuses = {h.name: h.status for h in retry_pending.flows[0].hops}
    assert statuses["router"] == "in flight"
    assert nothing_pending.exit_code == 1
    statuses = {h.name: h.status for h in nothing_pending.flows[0].hops}
    assert (statuses["cleanse"], statuses["router"]) == ("unaccounted", "inconsistent")


def write_failed_in_warehouse(writer: LedgerWriter) -> Chunk:
    """The pipeline, one of warehouse's 3 normal records failed; returns the failed chunk."""
    write_pipeline(writer, warehouse=1)
    normal = chunk("c-normal", 3, priority="normal")
    writer.record_chunk("consumer-warehouse", normal, ChunkOutcome(records_in=3, out=2, failed=1))
    writer.record_delivery("warehouse", normal, 2)
    failed = normal.derive(normal.records[:1], chunk_id=derive_chunk_id("c-normal", "failed"))
    return failed


def test_report_counts_failed_records_in_a_dlq_as_dead_letters_once(platform: None) -> None:
    failed = write_failed_in_warehouse(LedgerWriter())
    strings = {
        "failed_from": "c-normal",
        "error_type": "ValueError",
        "error_message": "amount is negative",
        "failed_stage": "consumer-warehouse",
        "attempt": "3",
    }
    attributes: dict[str, Any] = dict(failed.message_attributes())
    attributes.update({k: {"DataType": "String", "StringValue": v} for k, v in strings.items()})
    aws.sqs().send_message(
        QueueUrl=queue_url("consumer-warehouse-dlq"),
        MessageBody=failed.encode(),
        MessageAttributes=attributes,
    )

    report = report_at(NOW)

    assert report.exit_code == 3, format_report(report)
    consumer = hop(report, "consumer-warehouse")
    assert (consumer.received, consumer.failed, consumer.dead, consumer.missing) == (4, 1, 1, 0)
    assert hop(report, "sink:warehouse").missing == 0


def test_report_balances_once_failed_records_were_processed_again(platform: None) -> None:
    writer = LedgerWriter()
    failed = write_failed_in_warehouse(writer)
    outcome = ChunkOutcome(records_in=1, out=1)
    writer.record_chunk("consumer-warehouse", failed, outcome, retry_of="c-normal")
    writer.record_delivery("warehouse", failed, 1, retry_of="c-normal")

    report = report_at(NOW)

    assert report.exit_code == 0, format_report(report)
    consumer = hop(report, "consumer-warehouse")
    assert (consumer.received, consumer.out, consumer.failed) == (4, 4, 0)
    assert hop(report, "sink:warehouse").delivered == 4


def test_ledger_exits_five_when_what_it_reconciles_cannot_be_read(platform: None) -> None:
    aws.s3().delete_bucket(Bucket=LANDING)

    result = invoke()

    assert result.exit_code == 5, result.output
    assert "NoSuchBucket" in result.output
