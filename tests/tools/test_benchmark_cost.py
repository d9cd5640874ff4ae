"""The benchmark's cost model: GB-seconds from measured CPU plus assumed waits per AWS call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import cost
from benchmarks.meter import Tally
from benchmarks.pipeline import FunctionUse, RunFigures

ROOT = Path(__file__).resolve().parents[2]
ENTRY = "PublishBatchRequestEntries.member.1"
PRICES: dict[str, Any] = {
    "lambda": {
        "per_million_requests": 0.20,
        "per_gb_second": 0.0000166667,
        "request_wait_ms": {"sqs": 10, "dynamodb": 5, "default": 20},
    },
    "sqs": {"per_million_requests": 0.40},
    "sns": {"per_million_publishes": 0.50},
    "dynamodb": {"per_million_write_request_units": 0.625, "per_million_read_request_units": 0.125},
    "s3": {"per_thousand_put_copy_post_list": 0.005, "per_thousand_get_and_other": 0.0004},
}


def figures() -> RunFigures:
    run = RunFigures(
        "t", records=1000, file_bytes=0, seconds=1.0, drained=True, chunk_max_records=None
    )
    # 2 s of wall time at moto, of which 100 ms was the function's own CPU.
    run.functions["cleanse.cleanse"] = FunctionUse(
        invocations=4, duration_ms=2000.0, cpu_ms=100.0, memory_mb=1024
    )
    run.tallies[("cleanse.cleanse", "dynamodb", "PutItem", "t")] = Tally(requests=8, wru=8)
    run.tallies[("cleanse.cleanse", "sqs", "SendMessage", "q")] = Tally(requests=4, units=16)
    run.tallies[("cleanse.cleanse", "kinesis", "PutRecord", "s")] = Tally(requests=1)
    # The mapping's own receives are the poller's, not time the handler waited.
    run.tallies[("runtime", "sqs", "ReceiveMessage", "raw")] = Tally(requests=2, units=8)
    return run


def test_modelled_gb_seconds_are_cpu_plus_each_call_times_its_assumed_wait() -> None:
    waits = cost.call_wait_ms(figures(), PRICES)
    assert waits == {"cleanse.cleanse": 8 * 5 + 4 * 10 + 1 * 20}

    stages, _, _ = cost.costs(figures(), PRICES, ROOT, "prod")
    cleanse = stages["cleanse"]
    gb = 1024 / 1024  # cleanse's prod memory in cleanse/deploy.yaml
    assert cost.memory_mb(ROOT, "cleanse", "cleanse", "prod") == 1024
    assert cleanse.gb_seconds == (100 + 100) / 1000 * gb
    assert cleanse.gb_seconds_cpu == 0.1 * gb
    assert cleanse.gb_seconds_at_emulator == 2.0 * gb


def test_the_wall_time_figure_prices_the_same_requests_with_the_slower_gb_seconds() -> None:
    stages, _, _ = cost.costs(figures(), PRICES, ROOT, "prod")
    modelled = cost.path_total(stages, ("cleanse",))[1]
    at_moto = cost.path_total_at_emulator(stages, ("cleanse",), PRICES, 1000)
    per_m = 1_000_000 / 1000
    gap = (2.0 - 0.2) * PRICES["lambda"]["per_gb_second"] * per_m
    assert abs((at_moto - modelled) - gap) < 1e-9


def test_sqs_and_sns_units_count_the_messages_not_their_escaped_http_encoding() -> None:
    from benchmarks.meter import _received_payload, _sent_payload

    body = '{"records": [' + ",".join(['{"k": "v"}'] * 7000) + "]}"  # 70,014 bytes of JSON
    attributes = {"record_type": {"DataType": "String", "StringValue": "order"}}
    sent = _sent_payload(
        "SendMessageBatch", {"Entries": [{"MessageBody": body, "MessageAttributes": attributes}]}
    )
    assert sent == len(body) + len("record_type") + len("String") + len("order")
    published = _sent_payload(
        "PublishBatch",
        {
            "Action": "PublishBatch",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:records",
            "PublishBatchRequestEntries.member.1.Id": "0",
            "PublishBatchRequestEntries.member.1.Message": body,
            f"{ENTRY}.MessageAttributes.entry.1.Name": "priority",
            f"{ENTRY}.MessageAttributes.entry.1.Value.DataType": "String",
            f"{ENTRY}.MessageAttributes.entry.1.Value.StringValue": "high",
        },
    )
    assert published == len(body) + len("priority") + len("String") + len("high")
    received = json.dumps({"Messages": [{"Body": body, "ReceiptHandle": "r" * 500}]}).encode()
    assert len(received) > 1.1 * len(body)  # the escaped quotes
    assert _received_payload(received) == len(body)
    assert _sent_payload("DeleteMessageBatch", {}) is None


def test_the_ledgers_transaction_puts_events_and_progress_reads_are_priced() -> None:
    from benchmarks.meter import _dynamodb_units

    item = {"Put": {"TableName": "ledger", "Item": {"k": {"S": "v" * 100}}}}
    update = {"Update": {"TableName": "ledger", "Key": {"k": {"S": "object"}}}}
    doc = {"TransactItems": [item, update]}
    # Two items under 1 KB each: two write units each (a transactional write costs double).
    assert _dynamodb_units("TransactWriteItems", doc, len(json.dumps(doc))) == (4.0, 0.0)
    read = {"TableName": "ledger", "ConsistentRead": True}
    assert _dynamodb_units("GetItem", read, 100) == (0.0, 1.0)
    prices = {**PRICES, "events": {"per_million_events": 1.0}}
    events = Tally(requests=1, units=2)  # one PutEvents of two entries
    assert cost._dollars("events", "PutEvents", events, prices) == 2.0 / 1e6
    shipped = json.loads((ROOT / "benchmarks" / "prices.json").read_text())
    assert shipped["events"]["per_million_events"] == 1.0
