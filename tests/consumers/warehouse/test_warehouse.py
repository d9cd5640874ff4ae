"""The warehouse consumer writes each chunk once, the chunks of a batch into few partitioned
gzip JSON Lines objects with a manifest. Faults at the emulator: test_exactly_once.py."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

from chalice.test import Client
from support.events import sqs_event

from consumers import testkit
from sluice import aws

ORDERS = [
    {"order_id": "o-1", "customer_id": "c-1", "amount": 12.5, "currency": "EUR"},
    {"order_id": "o-2", "customer_id": "c-2", "amount": 1250, "currency": "USD"},
]
PREFIX = "type=order/dt=2026-11-27/hour=06/"
LATER = "2026-11-27T09:30:00.000Z"


def invoke(app_module: ModuleType, app_dir: Path, event: dict[str, Any]) -> Any:
    with Client(app_module.app, stage_name="test", project_dir=str(app_dir)) as client:
        return client.lambda_.invoke("consume", event).payload


def curated_objects(account: testkit.Account) -> dict[str, bytes]:
    s3 = aws.s3()
    bucket = account.names.curated_bucket
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def manifests(account: testkit.Account) -> dict[str, list[tuple[str, int, int]]]:
    """(chunk id, first line, rows) of each curated object's manifest, by key."""
    from chalicelib.curated import manifest_of

    s3 = aws.s3()
    bucket = account.names.curated_bucket
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        o["Key"]: [
            (e.chunk_id, e.first_line, e.rows)
            for e in manifest_of(s3.head_object(Bucket=bucket, Key=o["Key"])["Metadata"])
        ]
        for o in listed
    }


def test_object_key_is_hive_partitioned_by_type_and_ingestion_hour_and_fresh_each_time() -> None:
    from chalicelib.curated import object_key, partition

    prefix = partition("order", "2026-11-27T23:59:59.999+01:00")
    key = object_key(prefix, "c-9")

    assert prefix == "type=order/dt=2026-11-27/hour=22"
    assert re.fullmatch(r"type=order/dt=2026-11-27/hour=22/c-9-[0-9a-f]{16}\.jsonl\.gz", key)
    assert object_key(prefix, "c-9") != key


def test_encoded_lines_are_the_same_bytes_every_time() -> None:
    from chalicelib.curated import decode_lines, encode_lines

    lines: list[dict[str, Any]] = [{"a": 1, "b": "é"}, {"a": 2}]

    data = encode_lines(lines)
    assert data == encode_lines(lines)
    # No time in the bytes (gzip's MTIME header field, bytes 4-7, is zero), so a redelivery
    # next hour writes the same object, not only one within the same second.
    assert data[4:8] == bytes(4)
    assert decode_lines(data) == lines


def test_chunk_becomes_one_object_with_a_row_per_record_and_a_manifest(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    from chalicelib.curated import decode_lines

    chunk = testkit.make_chunk("order", ORDERS, attributes={"priority": "normal"})

    response = invoke(app_module, app_dir, sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    objects = curated_objects(account)
    (key,) = objects
    assert key.startswith(PREFIX + "c-test-0-")
    rows = decode_lines(objects[key])
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
    assert manifests(account) == {key: [("c-test-0", 0, 2)]}
    ledger = testkit.ledger_items()
    assert ledger["sink:warehouse#c-test-0"]["delivered"] == {"N": "2"}
    assert ledger["consumer-warehouse#c-test-0"]["out"] == {"N": "2"}


def test_the_chunks_of_a_batch_share_one_object_per_partition_in_batch_order(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    from chalicelib.curated import decode_lines

    a = testkit.make_chunk("order", ORDERS, chunk_id="c-a")
    later = testkit.make_chunk("order", ORDERS[:1], chunk_id="c-later", ingested_at=LATER)
    b = testkit.make_chunk("order", ORDERS[1:], chunk_id="c-b", correlation_id="corr-b")

    response = invoke(app_module, app_dir, sqs_event(a, later, b))

    assert response == {"batchItemFailures": []}
    objects = curated_objects(account)
    assert len(objects) == 2
    found = manifests(account)
    (six,) = [k for k in objects if k.startswith(PREFIX)]
    (nine,) = [k for k in objects if not k.startswith(PREFIX)]
    assert found[six] == [("c-a", 0, 2), ("c-b", 2, 1)]
    assert found[nine] == [("c-later", 0, 1)]
    assert nine.startswith("type=order/dt=2026-11-27/hour=09/c-later-")
    rows = decode_lines(objects[six])
    assert [(r["_record_id"], r["_correlation_id"]) for r in rows] == [
        ("r-c-a-0", "corr-test"),
        ("r-c-a-1", "corr-test"),
        ("r-c-b-0", "corr-b"),
    ]
    ledger = testkit.ledger_items() | testkit.ledger_items("corr-b")
    assert [ledger[f"sink:warehouse#{c}"]["delivered"]["N"] for c in ("c-a", "c-later", "c-b")] == [
        "2",
        "1",
        "1",
    ]


def test_a_chunk_redelivered_alone_after_its_batch_was_written_lands_nowhere_new(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    a = testkit.make_chunk("order", ORDERS[:1], chunk_id="c-a")
    b = testkit.make_chunk("order", ORDERS[1:], chunk_id="c-b")
    c = testkit.make_chunk("order", ORDERS[:1], chunk_id="c-c")

    invoke(app_module, app_dir, sqs_event(a, b, prefix="first"))
    first = curated_objects(account)
    alone = invoke(app_module, app_dir, sqs_event(b, prefix="alone"))
    mixed = invoke(app_module, app_dir, sqs_event(c, a, prefix="mixed"))

    assert alone == mixed == {"batchItemFailures": []}
    objects = curated_objects(account)
    assert len(first) == 1
    assert len(objects) == 2
    assert all(objects[key] == body for key, body in first.items())
    listed = [entry[0] for entries in manifests(account).values() for entry in entries]
    assert sorted(listed) == ["c-a", "c-b", "c-c"]


def test_duplicate_messages_in_one_batch_leave_one_object(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    chunk = testkit.make_chunk("order", ORDERS)

    response = invoke(app_module, app_dir, sqs_event(chunk, chunk))

    assert response == {"batchItemFailures": []}
    assert list(manifests(account).values()) == [[("c-test-0", 0, 2)]]


def test_record_that_is_not_an_object_is_quarantined_and_the_rest_written(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    from chalicelib.curated import decode_lines

    chunk = testkit.make_chunk("order", [ORDERS[0], ["not", "an", "object"], ORDERS[1]])

    response = invoke(app_module, app_dir, sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    (body,) = curated_objects(account).values()
    rows = decode_lines(body)
    assert [r["_record_id"] for r in rows] == ["r-c-test-0-0", "r-c-test-0-2"]
    assert testkit.quarantined_keys() == ["consumer-warehouse/order/2026-11-27/r-c-test-0-1.json"]
    assert testkit.ledger_items()["sink:warehouse#c-test-0"]["delivered"] == {"N": "2"}


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
    listed = [entry[0] for entries in manifests(account).values() for entry in entries]
    assert sorted(listed) == ["c-high", "c-normal"]
    assert testkit.quarantined_keys() == []


def test_config_policies_and_queue_timeouts_are_consistent(app_dir: Path) -> None:
    assert testkit.app_config_problems(app_dir) == []
