"""The index consumer keeps every version of each entity; the newest is latest, whatever the
delivery order. Versions are written with BatchWriteItem, a redelivered chunk writes nothing."""

from __future__ import annotations

import base64
import json
import random
import zlib
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from chalice.test import Client
from support.calls import CallCounter, Fault, count_calls, failing
from support.events import sqs_event

from consumers import testkit
from sluice import aws, envelope
from sluice.errors import PermanentError
from sluice.registry import load_registry

T1 = "2026-11-27T06:00:00.000Z"
T2 = "2026-11-27T07:00:00.000Z"


def invoke(app_module: ModuleType, app_dir: Path, event: dict[str, Any]) -> Any:
    with Client(app_module.app, stage_name="test", project_dir=str(app_dir)) as client:
        return client.lambda_.invoke("consume", event).payload


def latest(record_type: str, natural_key: str) -> dict[str, Any] | None:
    from chalicelib import service

    return service.records_table().latest(record_type, natural_key)


def versions(account: testkit.Account, pk: str) -> list[str]:
    """The sort keys of an entity's items, oldest first."""
    got = aws.dynamodb().query(
        TableName=account.names.records_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
    )
    return [item["sk"]["S"] for item in got["Items"]]


def order(status: str, amount: float = 10.5, order_id: str = "o-1") -> dict[str, Any]:
    return {"order_id": order_id, "customer_id": "c-1", "amount": amount, "status": status}


def to_table(counter: CallCounter, table: str) -> list[tuple[str, int]]:
    """(operation, items) of each DynamoDB call `counter` saw that went to `table`."""
    found = []
    for operation, params in counter.calls:
        requests = (params.get("RequestItems") or {}).get(table)
        if requests is not None:
            found.append((operation, len(requests)))
        elif params.get("TableName") == table:
            found.append((operation, 1))
    return found


def test_each_record_is_stored_as_a_version_under_its_type_and_natural_key(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    orders = testkit.make_chunk("order", [order("new", 1250.75)], chunk_id="c-o")
    customers = testkit.make_chunk(
        "customer", [{"customer_id": "c-9", "name": "Ada"}], chunk_id="c-c"
    )

    response = invoke(app_module, app_dir, sqs_event(orders, customers))

    assert response == {"batchItemFailures": []}
    item = latest("order", "o-1")
    assert item is not None
    assert item["payload"]["amount"] == Decimal("1250.75")
    assert (item["pk"], item["sk"]) == (
        "order#o-1",
        "v#2026-11-27T06:15:00.000000Z#0000000000#r-c-o-0",
    )
    assert (item["record_id"], item["ingested_at"], item["type"], item["chunk_id"]) == (
        "r-c-o-0",
        testkit.INGESTED_AT,
        "order",
        "c-o",
    )
    assert latest("customer", "c-9")["payload"]["name"] == "Ada"  # type: ignore[index]
    assert latest("customer", "c-404") is None
    (sk,) = versions(account, "order#o-1")
    stored = aws.dynamodb().get_item(
        TableName=account.names.records_table, Key={"pk": {"S": "order#o-1"}, "sk": {"S": sk}}
    )["Item"]
    assert set(stored) == {"pk", "sk", "ingested_at", "correlation_id", "chunk_id", "payload"}
    assert testkit.ledger_items()["sink:index#c-o"]["delivered"] == {"N": "1"}


def test_newer_then_older_update_leaves_the_newer_as_latest_and_keeps_both_versions(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    newer = testkit.make_chunk("order", [order("shipped")], chunk_id="c-new", ingested_at=T2)
    older = testkit.make_chunk("order", [order("new")], chunk_id="c-old", ingested_at=T1)

    invoke(app_module, app_dir, sqs_event(newer, prefix="a"))
    invoke(app_module, app_dir, sqs_event(older, prefix="b"))

    assert latest("order", "o-1")["payload"]["status"] == "shipped"  # type: ignore[index]
    assert versions(account, "order#o-1") == [
        "v#2026-11-27T06:00:00.000000Z#0000000000#r-c-old-0",
        "v#2026-11-27T07:00:00.000000Z#0000000000#r-c-new-0",
    ]
    ledger = testkit.ledger_items()
    assert ledger["consumer-index#c-old"]["out"] == {"N": "1"}
    assert ledger["sink:index#c-old"]["delivered"] == {"N": "1"}


def test_older_then_newer_update_leaves_the_newer_as_latest(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    older = testkit.make_chunk("order", [order("new")], chunk_id="c-old", ingested_at=T1)
    newer = testkit.make_chunk("order", [order("shipped")], chunk_id="c-new", ingested_at=T2)

    invoke(app_module, app_dir, sqs_event(older, newer))

    assert latest("order", "o-1")["payload"]["status"] == "shipped"  # type: ignore[index]


@pytest.mark.parametrize("arrival", ["b-first", "a-first"])
def test_equal_ingestion_times_are_decided_by_the_higher_record_id(
    account: testkit.Account, app_module: ModuleType, app_dir: Path, arrival: str
) -> None:
    # Record ids r-c-b-0 > r-c-a-0: c-b wins whichever arrives first.
    a = testkit.make_chunk("order", [order("from-a")], chunk_id="c-a", ingested_at=T1)
    b = testkit.make_chunk("order", [order("from-b")], chunk_id="c-b", ingested_at=T1)

    invoke(app_module, app_dir, sqs_event(*((b, a) if arrival == "b-first" else (a, b))))

    item = latest("order", "o-1")
    assert item is not None
    assert (item["record_id"], item["payload"]["status"]) == ("r-c-b-0", "from-b")


def test_ingestion_times_written_in_other_iso_forms_sort_as_the_times_they_are(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    # 08:00+02:00 is 06:00Z: older than 06:30Z, though it sorts after it as text.
    offset = testkit.make_chunk(
        "order", [order("older")], chunk_id="c-x", ingested_at="2026-11-27T08:00:00+02:00"
    )
    plain = testkit.make_chunk(
        "order", [order("newer")], chunk_id="c-y", ingested_at="2026-11-27T06:30:00Z"
    )

    invoke(app_module, app_dir, sqs_event(plain, offset))

    assert latest("order", "o-1")["payload"]["status"] == "newer"  # type: ignore[index]


def test_sort_time_is_utc_with_microseconds_so_text_order_is_time_order() -> None:
    from chalicelib.store import sort_time

    assert sort_time("2026-11-27T06:00:00Z") == "2026-11-27T06:00:00.000000Z"
    assert sort_time("2026-11-27T06:00:00.000Z") == "2026-11-27T06:00:00.000000Z"
    assert sort_time("2026-11-27T06:00:00.5Z") == "2026-11-27T06:00:00.500000Z"
    assert sort_time("2026-11-27T08:00:00+02:00") == "2026-11-27T06:00:00.000000Z"
    assert sort_time("2026-11-27T06:00:00") == "2026-11-27T06:00:00.000000Z"  # naive: UTC
    with pytest.raises(PermanentError, match="not an ISO 8601 time"):
        sort_time("yesterday")


def test_a_redelivered_chunk_rewrites_its_items_unchanged_without_claims(
    account: testkit.Account,
    app_module: ModuleType,
    app_dir: Path,
) -> None:
    # No claim per chunk (a PutItem and an UpdateItem each time): a redelivery writes the
    # same items again, and the ledger keeps the counts of the first delivery.
    chunk = testkit.make_chunk("order", [order("new")])
    invoke(app_module, app_dir, sqs_event(chunk))
    ledger_before = testkit.ledger_items()
    latest_before = latest("order", "o-1")
    dynamodb = count_calls(aws.dynamodb())

    response = invoke(app_module, app_dir, sqs_event(chunk, prefix="again"))

    assert response == {"batchItemFailures": []}
    assert to_table(dynamodb, account.names.idempotency_table) == []
    assert to_table(dynamodb, account.names.records_table) == [("BatchWriteItem", 1)]
    assert testkit.ledger_items() == ledger_before
    assert latest("order", "o-1") == latest_before
    assert versions(account, "order#o-1") == [
        "v#2026-11-27T06:15:00.000000Z#0000000000#r-c-test-0-0"
    ]


def test_sixty_records_are_written_in_three_batch_write_requests(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    chunk = testkit.make_chunk("order", [order("new", order_id=f"o-{i}") for i in range(60)])
    dynamodb = count_calls(aws.dynamodb())

    response = invoke(app_module, app_dir, sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    assert to_table(dynamodb, account.names.records_table) == [
        ("BatchWriteItem", 25),
        ("BatchWriteItem", 25),
        ("BatchWriteItem", 10),
    ]
    assert latest("order", "o-59") is not None
    assert testkit.ledger_items()["sink:index#c-test-0"]["delivered"] == {"N": "60"}


def test_a_record_repeated_within_a_chunk_is_written_once(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    from sluice.envelope import Chunk

    once = testkit.make_chunk("order", [order("new")])
    twice = Chunk(once.chunk_id, once.type, once.source, once.correlation_id, once.records * 2)

    response = invoke(app_module, app_dir, sqs_event(twice))

    assert response == {"batchItemFailures": []}
    assert len(versions(account, "order#o-1")) == 1
    ledger = testkit.ledger_items()
    stage, sink = ledger["consumer-index#c-test-0"], ledger["sink:index#c-test-0"]
    assert (stage["out"]["N"], stage["duplicate"]["N"], sink["delivered"]["N"]) == ("1", "1", "2")


class UnprocessedFirst:
    """A DynamoDB client stub whose BatchWriteItem leaves the first two items unprocessed
    `rounds` times, then writes everything."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.requests: list[list[str]] = []

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        self.requests.append([r["PutRequest"]["Item"]["sk"]["S"] for r in requests])
        if self.rounds:
            self.rounds -= 1
            return {"UnprocessedItems": {table: requests[:2]}}
        return {"UnprocessedItems": {}}


def version_items(n: int) -> list[dict[str, Any]]:
    from chalicelib.store import version_key

    return [version_key("order", f"o-{i}", T1, f"r-{i}") for i in range(n)]


def test_unprocessed_items_are_retried_with_backoff_until_written() -> None:
    from chalicelib.store import RecordsTable

    client, slept = UnprocessedFirst(rounds=2), list[float]()
    table = RecordsTable(client, table_name="records", sleep=slept.append)  # type: ignore[arg-type]

    written = table.put_versions(version_items(3))

    assert written == 3
    assert [len(r) for r in client.requests] == [3, 2, 2]
    assert client.requests[1] == client.requests[0][:2]
    assert slept == [0.05, 0.1]


def test_items_still_unprocessed_after_the_last_attempt_fail_the_chunk_for_a_retry() -> None:
    from chalicelib.store import RecordsTable, RecordsTableError

    client, slept = UnprocessedFirst(rounds=99), list[float]()
    table = RecordsTable(
        client,  # type: ignore[arg-type]
        table_name="records",
        sleep=slept.append,
        max_attempts=4,
    )

    with pytest.raises(RecordsTableError, match="2 item"):
        table.put_versions(version_items(3))
    assert slept == [0.05, 0.1, 0.2]


@pytest.mark.parametrize("fault", list(Fault))
def test_a_failed_write_fails_the_chunk_so_the_redelivered_chunk_is_written_once(
    account: testkit.Account, app_module: ModuleType, app_dir: Path, fault: Fault
) -> None:
    chunk = testkit.make_chunk("order", [order("new"), order("paid", order_id="o-2")])

    with failing(aws.dynamodb(), "BatchWriteItem", fault) as injected:
        first = invoke(app_module, app_dir, sqs_event(chunk))
    written = {pk: versions(account, pk) for pk in ("order#o-1", "order#o-2")}
    ledger = testkit.ledger_items()
    second = invoke(app_module, app_dir, sqs_event(chunk, prefix="again"))

    assert len(injected.failed) == 1
    assert first == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}
    assert second == {"batchItemFailures": []}
    assert "sink:index#c-test-0" not in ledger  # no delivery recorded before the retry
    # A lost write went through; the retry writes the same items again, one version each.
    expected = ["v#2026-11-27T06:15:00.000000Z#0000000000#r-c-test-0-0"]
    assert written["order#o-1"] == (expected if fault is Fault.LOST else [])
    assert versions(account, "order#o-1") == expected
    assert len(versions(account, "order#o-2")) == 1
    assert testkit.ledger_items()["sink:index#c-test-0"]["delivered"] == {"N": "2"}


def test_an_oversize_payload_is_quarantined_while_the_rest_of_the_chunk_is_written(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    # Over 400 KB even compressed: base64 of random bytes packs to ~3/4 of its text.
    noise = base64.b64encode(random.Random(5).randbytes(450 * 1024)).decode("ascii")
    big = {**order("new", order_id="o-big"), "notes": noise}
    chunk = testkit.make_chunk("order", [order("new"), big, order("new", order_id="o-2")])

    response = invoke(app_module, app_dir, sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    assert latest("order", "o-1") is not None
    assert latest("order", "o-2") is not None
    assert latest("order", "o-big") is None
    assert "consumer-index/order/2026-11-27/r-c-test-0-1.json" in testkit.quarantined_keys()
    ledger = testkit.ledger_items()
    assert ledger["consumer-index#c-test-0"]["quarantined"] == {"N": "1"}
    assert ledger["sink:index#c-test-0"]["delivered"] == {"N": "2"}


def test_item_size_counts_names_and_values_as_dynamodb_does() -> None:
    from chalicelib.store import item_size

    item = {
        "pk": {"S": "order#ü"},  # 2 + 8 bytes
        "n": {"N": "12345"},  # 1 + at most 6
        "m": {"M": {"a": {"BOOL": True}, "l": {"L": [{"NULL": True}, {"S": "xy"}]}}},
    }
    # m: 1 + 3 + (1 + 1 + 1) + (1 + 1 + (3 + (1 + 1) + (1 + 2)))
    assert item_size(item) == 10 + 7 + 17


def test_item_size_of_string_and_binary_attributes_is_the_general_walk_s() -> None:
    from chalicelib.store import _value_size, item_size

    items: list[dict[str, Any]] = [
        {"pk": {"S": "order#o-1"}, "payload": {"B": b"\x78\x9c" * 40}},
        {"pk": {"S": "order#ü€😀"}, "sk": {"S": "v#2026"}, "naïve": {"S": "ascii"}},
        {"b": {"B": bytearray(b"abc")}, "s": {"S": ""}, "n": {"N": "1"}, "x": {"BOOL": False}},
    ]
    for item in items:
        general = sum(len(k.encode("utf-8")) + _value_size(v) for k, v in item.items())
        assert item_size(item) == general


def test_record_without_its_natural_key_is_quarantined(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    chunk = testkit.make_chunk("order", [{"customer_id": "c-1"}, order("new")])

    response = invoke(app_module, app_dir, sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    assert testkit.quarantined_keys() == ["consumer-index/order/2026-11-27/r-c-test-0-0.json"]
    assert latest("order", "o-1") is not None
    assert testkit.ledger_items()["consumer-index#c-test-0"]["quarantined"] == {"N": "1"}


def test_filter_policy_of_resources_yaml_admits_every_registered_type_and_no_other(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    from chalicelib.service import natural_keys

    registered = load_registry().names()
    assert dict(natural_keys()) == {s.name: s.natural_key for s in load_registry()}
    for i, record_type in enumerate([*registered, "invoice"]):
        key_field = natural_keys().get(record_type, "id")
        account.publish(
            testkit.make_chunk(
                record_type,
                [{key_field: f"k-{i}"}],
                chunk_id=f"c-{record_type}",
                attributes={"priority": "high" if i % 2 else "normal"},
            )
        )

    arrived = testkit.receive_all(account.queues["ConsumerQueue"])
    response = invoke(app_module, app_dir, testkit.as_lambda_event(arrived))

    types = sorted(m["MessageAttributes"]["record_type"]["StringValue"] for m in arrived)
    assert types == sorted(registered)
    assert response == {"batchItemFailures": []}
    for i, record_type in enumerate(registered):
        assert latest(record_type, f"k-{i}") is not None
    assert testkit.quarantined_keys() == []


def test_a_natural_key_with_a_hash_sign_reads_back_whole(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    chunk = testkit.make_chunk("customer", [{"customer_id": "c#9#x", "name": "Ada"}])

    invoke(app_module, app_dir, sqs_event(chunk))

    got = latest("customer", "c#9#x")
    assert got is not None
    assert (got["type"], got["natural_key"], got["payload"]["name"]) == ("customer", "c#9#x", "Ada")


def test_the_payload_is_stored_as_its_compressed_json_text_and_read_back_exactly(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(40):  # deeper than the 32 levels DynamoDB allows a typed map
        deep = {"d": deep}
    payload = {**order("new", 0.1), "big": 12345678901234567890123456789012345678901, "deep": deep}
    payload["note"] = "Grüße, 東京"
    chunk = testkit.make_chunk("order", [payload])

    invoke(app_module, app_dir, sqs_event(chunk))

    (sk,) = versions(account, "order#o-1")
    stored = aws.dynamodb().get_item(
        TableName=account.names.records_table, Key={"pk": {"S": "order#o-1"}, "sk": {"S": sk}}
    )["Item"]
    assert json.loads(zlib.decompress(stored["payload"]["B"])) == payload
    got = latest("order", "o-1")
    assert got is not None
    assert got["payload"]["amount"] == Decimal("0.1")
    assert got["payload"]["big"] == payload["big"]
    assert got["payload"]["note"] == "Grüße, 東京"


def test_the_item_of_a_1kb_record_fits_one_write_unit_and_decodes_to_the_record(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    from benchmarks.synthetic import order as synthetic_order
    from chalicelib.store import decode_item, item_size

    rng = random.Random(20)
    lines = [synthetic_order(n, rng) for n in range(5)]
    assert all(len(line) >= 1000 for line in lines)
    payloads = [json.loads(line) for line in lines]
    # Ids as long as the pipeline's (record ids here are longer still: r-<chunk id>-<n>).
    source = "s3://acme-prod-landing/incoming/2026/11/27/orders-000123.jsonl.gz"
    chunk_id = envelope.chunk_id(source, "etag", 0)
    correlation_id = envelope.object_correlation_id("acme-prod-landing", source, "etag")
    chunk = testkit.make_chunk("order", payloads, chunk_id=chunk_id, correlation_id=correlation_id)

    invoke(app_module, app_dir, sqs_event(chunk))

    for n, payload in enumerate(payloads):
        pk = f"order#{payload['order_id']}"
        (sk,) = versions(account, pk)
        stored = aws.dynamodb().get_item(
            TableName=account.names.records_table, Key={"pk": {"S": pk}, "sk": {"S": sk}}
        )["Item"]
        # DynamoDB bills a write per started 1 KB of the item (names and values).
        assert item_size(stored) <= 1024
        decoded = decode_item(stored)
        assert decoded["payload"] == json.loads(lines[n], parse_float=Decimal)
        assert (decoded["record_id"], decoded["chunk_id"]) == (f"r-{chunk_id}-{n}", chunk_id)


def test_items_written_with_the_payload_as_json_text_are_still_read(
    account: testkit.Account,
) -> None:
    from chalicelib.store import decode_item

    item = {
        "pk": {"S": "order#o-text"},
        "sk": {"S": "v#2026-01-01T00:00:00.000000Z#0000000003#r-text"},
        "chunk_id": {"S": "c-text"},
        "payload": {"S": '{"order_id":"o-text","amount":2.50,"status":"old"}'},
    }
    aws.dynamodb().put_item(TableName=account.names.records_table, Item=item)

    got = latest("order", "o-text")

    assert got is not None
    assert got["payload"] == {"order_id": "o-text", "amount": Decimal("2.50"), "status": "old"}
    assert got["record_id"] == "r-text"
    assert decode_item(item)["payload"] == got["payload"]


def test_items_written_with_a_typed_map_payload_are_still_read(account: testkit.Account) -> None:
    aws.dynamodb().put_item(
        TableName=account.names.records_table,
        Item={
            "pk": {"S": "order#o-old"},
            "sk": {"S": "v#2026-01-01T00:00:00.000000Z#r-old"},
            "payload": {"M": {"amount": {"N": "2.5"}, "status": {"S": "old"}}},
        },
    )

    got = latest("order", "o-old")

    assert got is not None
    assert got["payload"] == {"amount": Decimal("2.5"), "status": "old"}


def test_config_policies_and_queue_timeouts_are_consistent(app_dir: Path) -> None:
    assert testkit.app_config_problems(app_dir) == []


def test_a_key_repeated_on_later_lines_of_one_object_is_latest_in_line_order(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    # Eleven lines of one object update o-1; their record ids do not sort in line order
    # ("r-…-10" < "r-…-9"), and real ids are hashes: the line decides, not the id.
    updates = testkit.make_chunk("order", [order(f"s-{i}") for i in range(11)], chunk_id="c-l")

    invoke(app_module, app_dir, sqs_event(updates))

    assert latest("order", "o-1")["payload"]["status"] == "s-10"  # type: ignore[index]
    assert len(versions(account, "order#o-1")) == 11
