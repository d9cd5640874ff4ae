"""The warehouse consumer writes each chunk once, as one partitioned gzip JSON Lines object."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from chalice.test import Client
from support.calls import Fault, failing
from support.events import sqs_event

from consumers import testkit
from sluice import aws

ORDERS = [
    {"order_id": "o-1", "customer_id": "c-1", "amount": 12.5, "currency": "EUR"},
    {"order_id": "o-2", "customer_id": "c-2", "amount": 1250, "currency": "USD"},
]
KEY = "type=order/dt=2026-11-27/hour=06/c-test-0.jsonl.gz"


def invoke(app_module: ModuleType, app_dir: Path, event: dict[str, Any]) -> Any:
    with Client(app_module.app, stage_name="test", project_dir=str(app_dir)) as client:
        return client.lambda_.invoke("consume", event).payload


def curated_objects(account: testkit.Account) -> dict[str, bytes]:
    s3 = aws.s3()
    bucket = account.names.curated_bucket
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def file_names(objects: dict[str, bytes]) -> list[str]:
    return sorted(key.rsplit("/", 1)[1] for key in objects)


def test_object_key_is_hive_partitioned_by_type_and_ingestion_hour() -> None:
    from chalicelib.curated import object_key

    key = object_key("order", "2026-11-27T23:59:59.999+01:00", "c-9")

    assert key == "type=order/dt=2026-11-27/hour=22/c-9.jsonl.gz"


def test_encoded_lines_are_the_same_bytes_every_time() -> None:
    from chalicelib.curated import decode_lines, encode_lines

    lines: list[dict[str, Any]] = [{"a": 1, "b": "é"}, {"a": 2}]

    data = encode_lines(lines)
    assert data == encode_lines(lines)
    # No time in the bytes (gzip's MTIME header field, bytes 4-7, is zero), so a redelivery
    # next hour writes the same object, not only one within the same second.
    assert data[4:8] == bytes(4)
    assert decode_lines(data) == lines


def test_chunk_becomes_one_object_with_a_row_per_record(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    from chalicelib.curated import decode_lines

    chunk = testkit.make_chunk("order", ORDERS, attributes={"priority": "normal"})

    response = invoke(app_module, app_dir, sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    objects = curated_objects(account)
    assert list(objects) == [KEY]
    rows = decode_lines(objects[KEY])
    assert rows == [
        {
            **payload,
            "_record_id": f"r-c-test-0-{i}",
            "_ingested_at": testkit.INGESTED_AT,
            "_correlation_id": "corr-test",
            "_type": "order",
        }
        for i, payload in enumerate(ORDERS)
    ]
    ledger = testkit.ledger_items()
    assert ledger["sink:warehouse#c-test-0"]["delivered"] == {"N": "2"}
    assert ledger["consumer-warehouse#c-test-0"]["out"] == {"N": "2"}


def test_redelivered_chunk_overwrites_its_object_with_identical_content(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    chunk = testkit.make_chunk("order", ORDERS)

    invoke(app_module, app_dir, sqs_event(chunk, prefix="first"))
    first = curated_objects(account)
    response = invoke(app_module, app_dir, sqs_event(chunk, prefix="again"))

    assert response == {"batchItemFailures": []}
    assert curated_objects(account) == first
    assert list(first) == [KEY]


def test_duplicate_messages_in_one_batch_leave_one_object(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    chunk = testkit.make_chunk("order", ORDERS)

    response = invoke(app_module, app_dir, sqs_event(chunk, chunk))

    assert response == {"batchItemFailures": []}
    assert list(curated_objects(account)) == [KEY]


def test_record_that_is_not_an_object_is_quarantined_and_the_rest_written(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    from chalicelib.curated import decode_lines

    chunk = testkit.make_chunk("order", [ORDERS[0], ["not", "an", "object"], ORDERS[1]])

    response = invoke(app_module, app_dir, sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    rows = decode_lines(curated_objects(account)[KEY])
    assert [r["_record_id"] for r in rows] == ["r-c-test-0-0", "r-c-test-0-2"]
    assert testkit.quarantined_keys() == ["consumer-warehouse/order/2026-11-27/r-c-test-0-1.json"]
    assert testkit.ledger_items()["sink:warehouse#c-test-0"]["delivered"] == {"N": "2"}


@pytest.mark.parametrize("fault", list(Fault))
def test_only_the_message_whose_write_failed_is_retried_and_its_retry_writes_the_same_object(
    account: testkit.Account, app_module: ModuleType, app_dir: Path, fault: Fault
) -> None:
    good = testkit.make_chunk("order", ORDERS[:1], chunk_id="c-good")
    bad = testkit.make_chunk("order", ORDERS[1:], chunk_id="c-bad")

    with failing(aws.s3(), "PutObject", fault, when=lambda p: "/c-bad." in p["Key"]) as injected:
        response = invoke(app_module, app_dir, sqs_event(good, bad))
    written = curated_objects(account)
    retry = invoke(app_module, app_dir, sqs_event(bad, prefix="retry"))

    assert len(injected.failed) == 1
    assert response == {"batchItemFailures": [{"itemIdentifier": "msg-1"}]}
    assert retry == {"batchItemFailures": []}
    # A lost write went through; the retry writes the same key with the same bytes.
    assert file_names(written) == (
        ["c-bad.jsonl.gz", "c-good.jsonl.gz"] if fault is Fault.LOST else ["c-good.jsonl.gz"]
    )
    final = curated_objects(account)
    assert file_names(final) == ["c-bad.jsonl.gz", "c-good.jsonl.gz"]
    assert all(final[key] == body for key, body in written.items())
    assert testkit.ledger_items()["sink:warehouse#c-bad"]["delivered"] == {"N": "1"}


def test_filter_policy_of_resources_yaml_lets_every_router_chunk_through(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    high = testkit.make_chunk(
        "order", ORDERS[1:], chunk_id="c-high", attributes={"priority": "high"}
    )
    normal = testkit.make_chunk(
        "order", ORDERS[:1], chunk_id="c-normal", attributes={"priority": "normal"}
    )
    account.publish(high)
    account.publish(normal)
    # Not from the router: no record_type attribute, so the policy keeps it out.
    aws.sns().publish(TopicArn=account.records_topic_arn, Message='{"hello": "world"}')

    arrived = testkit.receive_all(account.queues["ConsumerQueue"])
    response = invoke(app_module, app_dir, testkit.as_lambda_event(arrived))

    assert sorted(m["MessageAttributes"]["chunk_id"]["StringValue"] for m in arrived) == [
        "c-high",
        "c-normal",
    ]
    assert response == {"batchItemFailures": []}
    assert sorted(k.rsplit("/", 1)[1] for k in curated_objects(account)) == [
        "c-high.jsonl.gz",
        "c-normal.jsonl.gz",
    ]
    assert testkit.quarantined_keys() == []


def test_config_policies_and_queue_timeouts_are_consistent(app_dir: Path) -> None:
    assert testkit.app_config_problems(app_dir) == []
