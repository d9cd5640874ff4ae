"""`sluice ledger`: reconcile() on hand-made entries, filter policies, and the command on moto."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import reset_settings
from sluice.envelope import Chunk, Record
from sluice.ledger import LedgerWriter
from sluice_tools.cli import main
from sluice_tools.ledger.filters import (
    FilterPolicy,
    FilterPolicyError,
    SinkPolicy,
    consumer_policies,
)
from sluice_tools.ledger.reconcile import DeadChunk, Exit, LedgerEntry, reconcile

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


def test_records_missing_between_hops_but_in_the_dlq_are_accounted_for() -> None:
    entries = balanced(cleanse=[stage("cleanse", "c1", 4, out=4)])  # 5 of 9 never recorded
    entries.update(router=[stage("router", "c2", 4, routes={NORMAL_EU: 4})], alerts=[])
    entries["warehouse"] = [stage("consumer-warehouse", "n", 4), sink("warehouse", "n", 4)]
    dead = [DeadChunk("sluice-test-raw-dlq", "cleanse", CORR, "c9", 5)]

    report = reconcile(flat(entries), dead, {}, sinks=SINKS)

    assert report.exit_code == Exit.BALANCED, report.to_dict()
    assert hop(report, "cleanse").dead == 5
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
    assert [hop(report, n).quarantined for n in ("ingest", "cleanse", "router")] == [1, 1, 1]
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


def test_a_failures_queue_holding_the_sinks_chunk_accounts_for_it() -> None:
    dead = [DeadChunk("sluice-test-consumer-alerts-failures", "consumer-alerts", CORR, "h", 3)]

    report = reconcile(flat(balanced(alerts=[])), dead, {}, sinks=SINKS)

    assert report.exit_code == Exit.BALANCED


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


# ---------------------------------------------------------------- the command, on moto

STAGE = "test"


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A moto account with the ledger table (as infra/platform.yaml defines it) and queues."""
    from moto import mock_aws

    monkeypatch.setenv("SLUICE_STAGE", STAGE)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_REGION", "AWS_ENDPOINT_URL", "AWS_PROFILE", "SLUICE_RESOURCE_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    reset_settings()
    aws.reset_clients()
    with mock_aws():
        template = yaml.safe_load((REPO / "infra" / "platform.yaml").read_text(encoding="utf-8"))
        props = template["Resources"]["LedgerTable"]["Properties"]
        aws.dynamodb().create_table(
            TableName=re.sub(
                r"\$\{[^}]+\}",
                lambda m: {"${Stage}": STAGE}.get(m.group(0), "sluice"),
                props["TableName"]["Fn::Sub"],
            ),
            KeySchema=props["KeySchema"],
            AttributeDefinitions=props["AttributeDefinitions"],
            BillingMode=props["BillingMode"],
        )
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
    reset_settings()
    aws.reset_clients()


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


def write_pipeline(writer: LedgerWriter, *, warehouse: int = 4) -> None:
    """One object through every stage as the stages record it: 5 read, 1 bad line."""
    raw = chunk("c-raw", 4)
    writer.record_chunk("ingest", raw, ChunkOutcome(records_in=5, out=4, quarantined=1))
    clean = chunk("c-clean", 4)
    writer.record_chunk("cleanse", raw, ChunkOutcome(records_in=4, out=4))
    high, normal = chunk("c-high", 1, priority="high"), chunk("c-normal", 3, priority="normal")
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


def test_ledger_counts_records_waiting_in_a_dlq_as_accounted_for(platform: None) -> None:
    write_pipeline(LedgerWriter(), warehouse=1)
    sqs = aws.sqs()
    dlq = sqs.get_queue_url(QueueName=f"sluice-{STAGE}-consumer-warehouse-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody=chunk("c-normal", 3, priority="normal").encode())

    result = invoke("--json")

    report = json.loads(result.output)
    hops = {h["name"]: h for h in report["correlations"][0]["hops"]}
    assert hops["consumer-warehouse"]["dead"] == 3
    assert hops["consumer-warehouse"]["status"] == "ok"
    assert result.exit_code == 0, result.output
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
    assert "not settled" in result.output
