"""The router through its Chalice handler, on moto: routing, filtering, retries, duplicates.

The router runs with the tests' own routing document (conftest.TEST_ROUTING: priority and
region, so a chunk splits into several messages) unless a test says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from chalice.test import Client
from support.calls import Fault, failing
from support.events import sqs_event

from chalicelib.rules import RoutingRules
from chalicelib.service import Router
from sluice import aws
from sluice.envelope import Chunk, chunk_from_sqs_body

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

APP_DIR = Path(__file__).resolve().parents[2] / "router"
Platform = Any  # conftest.Platform: names, topic_arn, high_priority and everything subscribers
ORDERS = [
    (5000, "EUR"),  # high, eu
    (10, "EUR"),  # normal, eu
    (20, "USD"),  # normal, americas
    (2000, "EUR"),  # high, eu
    (1500, "JPY"),  # high, apac
]


@pytest.fixture
def client(
    app_module: ModuleType, platform: Platform, service: ModuleType, routing_rules: RoutingRules
) -> Iterator[Client]:
    service.reset(Router(rules=routing_rules))
    with Client(app_module.app, stage_name="test", project_dir=str(APP_DIR)) as client:
        yield client


def _invoke(client: Client, event: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = client.lambda_.invoke("route", event).payload
    return payload


def _attributes(message: MessageTypeDef) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}


def _ordinals(messages: Sequence[MessageTypeDef]) -> list[int]:
    return sorted(r.ordinal for m in messages for r in chunk_from_sqs_body(m["Body"]).records)


def _ledger(platform: Platform, chunk: Chunk) -> dict[str, Any]:
    item = (
        aws.dynamodb()
        .get_item(
            TableName=platform.names.ledger_table,
            Key={
                "correlation_id": {"S": chunk.correlation_id},
                "entry": {"S": f"router#{chunk.chunk_id}"},
            },
        )
        .get("Item")
    )
    assert item is not None, "no ledger entry for the chunk"
    return {k: int(v["N"]) for k, v in item.items() if "N" in v and k != "expires_at"}


def test_only_high_priority_records_reach_the_queue_filtering_on_priority_high(
    client: Client, platform: Platform, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk([order(amount=a, currency=c) for a, c in ORDERS])
    assert _invoke(client, sqs_event(chunk)) == {"batchItemFailures": []}

    high = platform.high_priority.drain()
    assert _ordinals(high) == [0, 3, 4]
    by_region = {_attributes(m)["region"]: m for m in high}
    assert set(by_region) == {"eu", "apac"}
    eu = by_region["eu"]
    body = Chunk.decode(eu["Body"])
    assert _attributes(eu) == {
        "record_type": "order",
        "correlation_id": "corr-1",
        "chunk_id": body.chunk_id,
        "priority": "high",
        "region": "eu",
    }
    assert [r.id for r in body.records] == [chunk.records[0].id, chunk.records[3].id]
    assert dict(body.attributes) == {"priority": "high", "region": "eu"}


def test_an_unfiltered_subscriber_receives_every_record_exactly_once(
    client: Client, platform: Platform, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk([order(amount=a, currency=c) for a, c in ORDERS])
    _invoke(client, sqs_event(chunk))
    everything = platform.everything.drain()
    assert len(everything) == 4  # {high,eu} {normal,eu} {normal,americas} {high,apac}
    assert _ordinals(everything) == [0, 1, 2, 3, 4]
    assert len({_attributes(m)["chunk_id"] for m in everything}) == 4


def test_with_the_shipped_routing_json_a_chunk_becomes_one_message_per_priority(
    client: Client, platform: Platform, service: ModuleType, make_chunk: Any, order: Any
) -> None:
    service.reset(Router())  # rules from router/chalicelib/routing.json
    chunk = make_chunk([order(amount=a, currency=c) for a, c in ORDERS])
    assert _invoke(client, sqs_event(chunk)) == {"batchItemFailures": []}

    everything = platform.everything.drain()
    assert sorted(_attributes(m)["priority"] for m in everything) == ["high", "normal"]
    assert all("region" not in _attributes(m) for m in everything)
    assert _ordinals(everything) == [0, 1, 2, 3, 4]
    assert _ordinals(platform.high_priority.drain()) == [0, 3, 4]


def test_the_ledger_counts_the_records_published(
    client: Client, platform: Platform, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk([order(amount=a, currency=c) for a, c in ORDERS])
    _invoke(client, sqs_event(chunk))
    assert _ledger(platform, chunk) == {
        "records_in": 5,
        "out": 5,
        "quarantined": 0,
        "duplicate": 0,
        "failed": 0,
    }


def test_a_record_that_cannot_be_routed_is_quarantined_and_the_rest_published(
    client: Client, platform: Platform, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk([order(amount=5000), order(amount=None), order(amount=10)])
    assert _invoke(client, sqs_event(chunk)) == {"batchItemFailures": []}

    assert _ordinals(platform.everything.drain()) == [0, 2]
    listed = aws.s3().list_objects_v2(Bucket=platform.names.quarantine_bucket)
    [key] = [o["Key"] for o in listed.get("Contents", [])]
    assert key.startswith("router/order/")
    assert chunk.records[1].id in key
    doc = json.loads(
        aws.s3().get_object(Bucket=platform.names.quarantine_bucket, Key=key)["Body"].read()
    )
    assert "'amount'" in doc["reason"]
    assert _ledger(platform, chunk)["quarantined"] == 1
    assert _ledger(platform, chunk)["out"] == 2


def test_a_redelivered_chunk_is_published_once(
    client: Client, platform: Platform, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk([order(amount=a, currency=c) for a, c in ORDERS])
    assert _invoke(client, sqs_event(chunk, prefix="first")) == {"batchItemFailures": []}
    assert _invoke(client, sqs_event(chunk, prefix="again")) == {"batchItemFailures": []}
    assert _ordinals(platform.everything.drain()) == [0, 1, 2, 3, 4]


def test_the_same_chunk_twice_in_one_batch_is_published_once(
    client: Client, platform: Platform, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk([order(amount=5000)])
    assert _invoke(client, sqs_event(chunk, chunk)) == {"batchItemFailures": []}
    assert len(platform.everything.drain()) == 1


def _publishes_of(correlation_id: str) -> Callable[[Mapping[str, Any]], bool]:
    """Whether a PublishBatch call carries a chunk of `correlation_id`."""

    def carries(params: Mapping[str, Any]) -> bool:
        entries = params["PublishBatchRequestEntries"]
        return any(
            e["MessageAttributes"]["correlation_id"]["StringValue"] == correlation_id
            for e in entries
        )

    return carries


@pytest.mark.parametrize("fault", list(Fault))
def test_only_the_message_whose_publish_failed_is_retried_and_its_retry_publishes_the_same(
    client: Client, platform: Platform, make_chunk: Any, order: Any, fault: Fault
) -> None:
    good_1 = make_chunk([order(amount=5000)], ordinal=0)
    bad = make_chunk([order(amount=7000)], ordinal=1, correlation_id="corr-bad")
    good_2 = make_chunk([order(amount=10)], ordinal=2)

    with failing(aws.sns(), "PublishBatch", fault, when=_publishes_of("corr-bad")) as injected:
        response = _invoke(client, sqs_event(good_1, bad, good_2))
    # The retry (SQS redelivers only msg-1) publishes it: its claim was released.
    retry = _invoke(client, sqs_event(bad, prefix="retry"))

    assert len(injected.failed) == 1
    assert response == {"batchItemFailures": [{"itemIdentifier": "msg-1"}]}
    assert retry == {"batchItemFailures": []}
    received = platform.everything.drain()
    good = [m for m in received if _attributes(m)["correlation_id"] == "corr-1"]
    copies = [m for m in received if _attributes(m)["correlation_id"] == "corr-bad"]
    assert _ordinals(good) == [0, 2000]
    # A lost publish went out, so the retry publishes a second copy: byte for byte the same
    # message (same chunk id), which consumers drop by chunk id.
    assert len(copies) == (2 if fault is Fault.LOST else 1)
    assert len({m["Body"] for m in copies}) == 1
    assert len(good) + len(copies) == len(received)
    assert _ledger(platform, bad)["out"] == 1


def test_publish_failing_everywhere_fails_every_message_and_writes_no_ledger(
    client: Client, platform: Platform, make_chunk: Any, order: Any
) -> None:
    aws.sns().delete_topic(TopicArn=platform.topic_arn)
    chunk = make_chunk([order()])
    response = _invoke(client, sqs_event(chunk))
    assert response == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}
    with pytest.raises(AssertionError, match="no ledger entry"):
        _ledger(platform, chunk)


def test_a_chunk_cut_for_sqs_is_published_in_parts_that_each_fit_sns(
    client: Client,
    platform: Platform,
    service: ModuleType,
    make_chunk: Any,
    order: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ingest and cleanse cut chunks up to an SQS message (1 MiB); SNS takes 256 KiB.
    from sluice.config import DEFAULT_CHUNK_MAX_BYTES, MAX_CHUNK_MAX_BYTES, reset_settings

    monkeypatch.setenv("SLUICE_CHUNK_MAX_BYTES", str(MAX_CHUNK_MAX_BYTES))
    monkeypatch.setenv("SLUICE_CHUNK_MAX_RECORDS", "1000")
    reset_settings()
    service.reset(Router())
    chunk = make_chunk([order(amount=10 + i, note="x" * 900) for i in range(900)])
    assert chunk.encoded_size() > 3 * DEFAULT_CHUNK_MAX_BYTES

    assert _invoke(client, sqs_event(chunk)) == {"batchItemFailures": []}
    everything = platform.everything.drain()
    assert len(everything) >= 4
    assert all(len(m["Body"].encode()) <= DEFAULT_CHUNK_MAX_BYTES for m in everything)
    assert _ordinals(everything) == list(range(900))


def test_payloads_are_published_as_they_came_not_encoded_again(
    client: Client, platform: Platform, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk([order(amount=a, currency=c) for a, c in ORDERS])
    body = chunk.encode()
    assert "records_z" not in body  # plain, so the test can write the payloads' JSON its way
    # Valid JSON that decoding and encoding again would write otherwise.
    body = body.replace('"amount":10,', '"amount":1.0e1,').replace(
        '"currency":"JPY"', '"currency":"\\u004aPY"'
    )
    assert _invoke(client, sqs_event(body)) == {"batchItemFailures": []}
    everything = platform.everything.drain()
    published = "".join(m["Body"] for m in everything)
    assert '"amount":1.0e1,' in published
    assert '"currency":"\\u004aPY"' in published
    routed = {
        r.ordinal: _attributes(m)
        for m in everything
        for r in chunk_from_sqs_body(m["Body"]).records
    }
    assert routed[1]["priority"] == "normal"
    assert routed[4]["region"] == "apac"  # the escaped "JPY" was read as JPY
