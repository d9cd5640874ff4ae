"""Pipeline events on the local runtime (issue 22): the samples go through the whole
pipeline, and a test rule on the stage's bus sends every event to an SQS queue (moto
delivers to SQS targets itself).

One runtime for the module; IAM enforced, as in a real account.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import fastjsonschema
import pytest

from sluice.progress import quarantine_category
from sluice_tools.local.commands import landing_key, sample_files
from sluice_tools.local.runtime import LocalRuntime

from .conftest import ROOT, pipeline_options, queue, repo_tree

pytestmark = pytest.mark.slow

SCHEMAS = ROOT / "docs" / "events"


class Events:
    def __init__(self, runtime: LocalRuntime, url: str) -> None:
        self.runtime = runtime
        self.url = url
        self.seen: list[dict[str, Any]] = []

    def take(self) -> list[dict[str, Any]]:
        """Every event the rule delivered so far, with the time SQS received it (ms)."""
        sqs = self.runtime.client("sqs")
        while page := sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, AttributeNames=["SentTimestamp"]
        ).get("Messages"):
            for m in page:
                event = json.loads(m["Body"])
                event["_received_ms"] = int(m["Attributes"]["SentTimestamp"])
                self.seen.append(event)
                sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
        return list(self.seen)


@pytest.fixture(scope="module")
def pipeline(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Events]:
    tree = repo_tree(tmp_path_factory.mktemp("events") / "repo")
    runtime = LocalRuntime(pipeline_options(tree, "tests-events"))
    runtime.start()
    try:
        events, sqs = runtime.client("events"), runtime.client("sqs")
        bus = runtime.names.events_bus
        url, arn = queue(sqs, "test-events-tap")
        events.put_rule(
            Name="test-every-pipeline-event",
            EventBusName=bus,
            EventPattern=json.dumps({"source": [f"sluice.{runtime.names.stage}"]}),
        )
        events.put_targets(
            Rule="test-every-pipeline-event",
            EventBusName=bus,
            Targets=[{"Id": "tap", "Arn": arn}],
        )
        runtime.upload([(p, landing_key(p)) for p in sample_files(ROOT)])
        assert runtime.wait_drained(240), runtime.depths()
        yield Events(runtime, url)
    finally:
        runtime.stop()


def ledger_items(runtime: LocalRuntime) -> list[dict[str, Any]]:
    ddb = runtime.client("dynamodb")
    items: list[dict[str, Any]] = []
    for page in ddb.get_paginator("scan").paginate(TableName=runtime.names.ledger_table):
        items += page["Items"]
    return items


def quarantined(runtime: LocalRuntime) -> list[dict[str, Any]]:
    s3 = runtime.client("s3")
    bucket = runtime.names.quarantine_bucket
    docs = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents") or []:
            if not obj["Key"].endswith(".payload.json"):
                docs.append(json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()))
    return docs


def test_each_sample_object_is_delivered_once_after_its_last_sink_entry(pipeline: Events) -> None:
    runtime = pipeline.runtime
    events = pipeline.take()
    landed = [e for e in events if e["detail-type"] == "Object Landed"]
    delivered = [e for e in events if e["detail-type"] == "Object Delivered"]
    objects = {
        i["correlation_id"]["S"] for i in ledger_items(runtime) if i["entry"]["S"] == "object"
    }
    assert len(objects) == len(sample_files(ROOT))
    # Exactly one of each per sample object.
    assert Counter(e["detail"]["correlation_id"] for e in delivered) == dict.fromkeys(objects, 1)
    assert Counter(e["detail"]["correlation_id"] for e in landed) == dict.fromkeys(objects, 1)
    # Not before the last record was delivered: after every sink and consumer entry of it.
    last_ms: dict[str, int] = {}
    for item in ledger_items(runtime):
        entry = item["entry"]["S"]
        if entry.startswith(("sink:", "consumer-")):
            at = item["recorded_at"]["S"]
            ms = _epoch_ms(at)
            corr = item["correlation_id"]["S"]
            last_ms[corr] = max(last_ms.get(corr, 0), ms)
    for e in delivered:
        corr = e["detail"]["correlation_id"]
        assert e["_received_ms"] >= last_ms[corr], (corr, e["_received_ms"], last_ms[corr])
        assert e["detail"]["delivered_at"] >= max(
            i["recorded_at"]["S"]
            for i in ledger_items(runtime)
            if i["correlation_id"]["S"] == corr and "recorded_at" in i
        )


def test_records_quarantined_counts_what_the_quarantine_bucket_holds(pipeline: Events) -> None:
    runtime = pipeline.runtime
    events = pipeline.take()
    by_object: dict[str, Counter[str]] = {}
    for doc in quarantined(runtime):
        by_object.setdefault(doc["correlation_id"], Counter())[
            quarantine_category(doc["stage"])
        ] += 1
    reported = {
        e["detail"]["correlation_id"]: e["detail"]["counts"]
        for e in events
        if e["detail-type"] == "Records Quarantined"
    }
    assert by_object  # the samples hold bad records
    assert reported == {
        corr: {"quarantined": sum(c.values()), "by_reason": dict(c)}
        for corr, c in by_object.items()
    }
    delivered = {
        e["detail"]["correlation_id"]: e["detail"]["counts"]["quarantined"]
        for e in events
        if e["detail-type"] == "Object Delivered"
    }
    for corr, counts in reported.items():
        assert delivered[corr] == counts["quarantined"]


def test_every_event_matches_its_schema(pipeline: Events) -> None:
    check = {}
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        check[schema["title"]] = fastjsonschema.compile(schema)
    events = pipeline.take()
    assert events
    for e in events:
        assert e["source"] == f"sluice.{pipeline.runtime.names.stage}"
        check[e["detail-type"]](e["detail"])
    # A delivered object is out of the open-objects index; the check finds nothing to do.
    assert not [e for e in events if e["detail-type"] == "Object Stuck"]


def _epoch_ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_the_scheduled_check_reports_an_object_open_past_its_deadline(pipeline: Events) -> None:
    from support.waiting import wait_until

    runtime = pipeline.runtime
    # An object whose cleanse never recorded its records, open since long ago.
    runtime.client("dynamodb").put_item(
        TableName=runtime.names.ledger_table,
        Item={
            "correlation_id": {"S": "corr-stuck-e2e"},
            "entry": {"S": "object"},
            "source": {"S": f"s3://{runtime.names.landing_bucket}/incoming/order/gone.jsonl"},
            "type": {"S": "order"},
            "first_at": {"S": "2026-01-01T00:00:00.000Z"},
            "ingest_total": {"N": "3"},
            "owed_ingest": {"N": "0"},
            "owed_cleanse": {"N": "3"},
            "landed_sent": {"S": "x"},
            "open_shard": {"S": "open"},
            "open_deadline": {"S": "2026-01-01T00:30:00.000Z"},
        },
    )
    runtime.fire("check_objects")

    def stuck() -> list[dict[str, Any]]:
        return [e for e in pipeline.take() if e["detail-type"] == "Object Stuck"]

    wait_until(lambda: bool(stuck()), what="Object Stuck from check_objects")
    assert runtime.wait_drained(60), runtime.depths()
    (event,) = stuck()
    assert event["detail"]["correlation_id"] == "corr-stuck-e2e"
    assert (event["detail"]["reason"], event["detail"]["owed"]) == ("deadline", {"cleanse": 3})
    # The samples' objects are delivered: the check emitted nothing for them.
    assert Counter(e["detail-type"] for e in pipeline.take())["Object Delivered"] == len(
        sample_files(ROOT)
    )
