"""The pipeline's events in `sluice logs events` and `sluice trace`, on AWS (moto's).

The bus's logging rule (infra/platform.yaml) writes every `sluice.*` event to the stage's
`/aws/events/...` log group; moto delivers to log-group targets itself, so the events here
are written by EventBridge's rule as on AWS, then read back by the commands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from moto import mock_aws
from support.platform import PARAMETERS as PLATFORM_PARAMETERS
from support.platform import STAGE, create_buckets, create_tables, platform_template
from support.platform import sub as platform_sub

from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import ResourceNames
from sluice.envelope import Chunk, Record
from sluice.ledger import LedgerWriter
from sluice_tools.cli import main
from sluice_tools.trace.command import event_log, object_events
from sluice_tools.trace.logsource import EVENTS, LogQuery, events_log_group

NAMES = ResourceNames(stage=STAGE)
BUS = f"{NAMES.prefix}-{STAGE}-events"
PARAMETERS = {
    **PLATFORM_PARAMETERS,
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
}
CID = "ingest-0123456789abcdef0123456789abcdef"
OTHER = "ingest-ffffffffffffffffffffffffffffffff"
KEY = "incoming/order/o.jsonl"


def sub(value: Any) -> str:
    return platform_sub(value, PARAMETERS)


def put(
    events: Any,
    detail_type: str,
    correlation_id: str = CID,
    source: str = "sluice.ingest",
    **detail: Any,
) -> None:
    body = {"version": "1", "event_id": f"{correlation_id}-{detail_type}"}
    body |= {"correlation_id": correlation_id, "bucket": NAMES.landing_bucket, "key": KEY}
    answer = events.put_events(
        Entries=[
            {
                "EventBusName": BUS,
                "Source": source,
                "DetailType": detail_type,
                "Detail": json.dumps(body | detail),
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0


@pytest.fixture
def stage(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        create_tables()
        create_buckets([NAMES.landing_bucket, NAMES.quarantine_bucket, NAMES.curated_bucket])
        logs, events = aws.client("logs"), aws.client("events")
        # The log group and the rule as infra/platform.yaml defines them.
        resources = platform_template()["Resources"]
        group = sub(resources["EventsLogGroup"]["Properties"]["LogGroupName"])
        assert group == events_log_group(NAMES.prefix, STAGE)
        logs.create_log_group(logGroupName=group)
        rule = resources["EventsToLogsRule"]["Properties"]
        events.create_event_bus(Name=BUS)
        assert sub(rule["EventBusName"]) == BUS
        events.put_rule(
            Name=sub(rule["Name"]), EventBusName=BUS, EventPattern=json.dumps(rule["EventPattern"])
        )
        targets = [{"Id": t["Id"], "Arn": sub(t["Arn"])} for t in rule["Targets"]]
        events.put_targets(Rule=sub(rule["Name"]), EventBusName=BUS, Targets=targets)
        put(events, "Object Landed", source="billing.app")  # not the pipeline's: not logged
        put(events, "Object Landed", record_type="order", counts={"records": 3})
        put(events, "Object Landed", correlation_id=OTHER)
        put(events, "Records Quarantined", counts={"invalid": 1})
        put(events, "Object Delivered", counts={"records": 3, "delivered": 2, "quarantined": 1})
        yield events


def test_sluice_logs_events_prints_each_event_with_its_detail(stage):
    result = CliRunner().invoke(main, ["logs", EVENTS, "--stage", STAGE, "--since", "1h"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 4
    delivered = next(line for line in lines if "Object Delivered" in line)
    assert " events Object Delivered source=sluice.ingest correlation_id=" + CID in delivered
    assert f"key={KEY}" in delivered
    assert 'counts={"records": 3, "delivered": 2, "quarantined": 1}' in delivered
    assert "version=" not in delivered
    only = CliRunner().invoke(main, ["logs", EVENTS, "--stage", STAGE, "--correlation-id", OTHER])
    assert only.exit_code == 0, only.output
    assert only.output.count("\n") == 1
    assert OTHER in only.output


def test_an_objects_events_are_listed_oldest_first_with_their_counts(stage):
    found = object_events(event_log(NAMES), CID)
    assert [e["detail_type"] for e in found] == [
        "Object Landed",
        "Records Quarantined",
        "Object Delivered",
    ]
    assert found[2]["counts"] == {"records": 3, "delivered": 2, "quarantined": 1}
    assert found[0]["event_id"] == f"{CID}-Object Landed"
    assert all(e["time"].endswith("Z") for e in found)


def test_sluice_trace_of_an_object_shows_its_events(stage):
    chunk = Chunk(
        "c-1",
        "order",
        f"s3://{NAMES.landing_bucket}/{KEY}",
        CID,
        (Record("r-1", 0, "2026-12-04T10:00:00.000Z", {}),),
    )
    LedgerWriter(table_name=NAMES.ledger_table).record_chunk(
        "ingest", chunk, ChunkOutcome(records_in=1, out=1)
    )
    result = CliRunner().invoke(main, ["trace", CID, "--stage", STAGE])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "events (3):" in text
    landed, quarantined, delivered = (
        line.split() for line in text.splitlines() if line.startswith("    2")
    )
    assert landed[1:3] == ["Object", "Landed"]
    assert quarantined[1:3] == ["Records", "Quarantined"]
    assert delivered[1:3] == ["Object", "Delivered"]
    as_json = CliRunner().invoke(main, ["trace", CID, "--stage", STAGE, "--json"])
    events = json.loads(as_json.output)["events"]
    assert events[1]["counts"] == {"invalid": 1}


def test_a_stage_without_the_events_log_group_has_no_events(aws_env):
    with mock_aws():
        assert event_log(NAMES).read(LogQuery()) == []


def test_following_the_events_sees_one_put_after_it_started(stage):
    follow = event_log(NAMES).follow(LogQuery(since_ms=int(time.time() * 1000) + 1), poll_s=0)
    time.sleep(0.01)
    put(stage, "Object Stuck", correlation_id=OTHER, reason="deadline")
    line = next(follow)
    assert line.get("detail-type") == "Object Stuck"
    assert line.fields["detail"]["reason"] == "deadline"
