"""The index consumer keeps each entity's newest record, whatever the delivery order."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

from chalice.test import Client
from support.events import sqs_event

from consumers import testkit
from sluice import aws

T1 = "2026-11-27T06:00:00.000Z"
T2 = "2026-11-27T07:00:00.000Z"


def invoke(app_module: ModuleType, app_dir: Path, event: dict[str, Any]) -> Any:
    with Client(app_module.app, stage_name="test", project_dir=str(app_dir)) as client:
        return client.lambda_.invoke("consume", event).payload


def stored(account: testkit.Account, pk: str) -> dict[str, Any] | None:
    from boto3.dynamodb.types import TypeDeserializer

    item = (
        aws.dynamodb()
        .get_item(
            TableName=account.names.records_table, Key={"pk": {"S": pk}, "sk": {"S": "latest"}}
        )
        .get("Item")
    )
    if item is None:
        return None
    return {k: TypeDeserializer().deserialize(v) for k, v in item.items()}


def order(status: str, amount: float = 10.5) -> dict[str, Any]:
    return {"order_id": "o-1", "customer_id": "c-1", "amount": amount, "status": status}


def test_each_record_is_stored_under_its_type_and_natural_key(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    orders = testkit.make_chunk("order", [order("new", 1250.75)], chunk_id="c-o")
    customers = testkit.make_chunk(
        "customer", [{"customer_id": "c-9", "name": "Ada"}], chunk_id="c-c"
    )

    response = invoke(app_module, app_dir, sqs_event(orders, customers))

    assert response == {"batchItemFailures": []}
    item = stored(account, "order#o-1")
    assert item is not None
    assert item["payload"]["amount"] == Decimal("1250.75")
    assert (item["record_id"], item["ingested_at"], item["type"]) == (
        "r-c-o-0",
        testkit.INGESTED_AT,
        "order",
    )
    assert stored(account, "customer#c-9")["payload"]["name"] == "Ada"  # type: ignore[index]
    assert testkit.ledger_items()["sink:index#c-o"]["delivered"] == {"N": "1"}


def test_newer_then_older_update_keeps_the_newer(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    newer = testkit.make_chunk("order", [order("shipped")], chunk_id="c-new", ingested_at=T2)
    older = testkit.make_chunk("order", [order("new")], chunk_id="c-old", ingested_at=T1)

    invoke(app_module, app_dir, sqs_event(newer, prefix="a"))
    invoke(app_module, app_dir, sqs_event(older, prefix="b"))

    assert stored(account, "order#o-1")["payload"]["status"] == "shipped"  # type: ignore[index]
    ledger = testkit.ledger_items()
    assert ledger["consumer-index#c-old"]["duplicate"] == {"N": "1"}
    assert ledger["consumer-index#c-old"]["out"] == {"N": "0"}


def test_older_then_newer_update_keeps_the_newer(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    older = testkit.make_chunk("order", [order("new")], chunk_id="c-old", ingested_at=T1)
    newer = testkit.make_chunk("order", [order("shipped")], chunk_id="c-new", ingested_at=T2)

    invoke(app_module, app_dir, sqs_event(older, newer))

    assert stored(account, "order#o-1")["payload"]["status"] == "shipped"  # type: ignore[index]


def test_equal_ingestion_times_are_decided_by_the_higher_record_id(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    # Record ids r-c-b-0 > r-c-a-0: c-b wins whichever arrives first.
    a = testkit.make_chunk("order", [order("from-a")], chunk_id="c-a", ingested_at=T1)
    b = testkit.make_chunk("order", [order("from-b")], chunk_id="c-b", ingested_at=T1)

    invoke(app_module, app_dir, sqs_event(b, a))

    item = stored(account, "order#o-1")
    assert item is not None
    assert (item["record_id"], item["payload"]["status"]) == ("r-c-b-0", "from-b")


def test_redelivered_chunk_changes_nothing_and_counts_as_duplicate(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    from chalicelib import service

    chunk = testkit.make_chunk("order", [order("new")])
    invoke(app_module, app_dir, sqs_event(chunk))
    before = stored(account, "order#o-1")

    outcome = service.handle_chunk(chunk, service.runtime(), service.records_table())

    assert (outcome.out, outcome.duplicate) == (0, 1)
    assert stored(account, "order#o-1") == before


def test_record_without_its_natural_key_is_quarantined(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    chunk = testkit.make_chunk("order", [{"customer_id": "c-1"}, order("new")])

    response = invoke(app_module, app_dir, sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    assert testkit.quarantined_keys() == ["consumer-index/order/2026-11-27/r-c-test-0-0.json"]
    assert stored(account, "order#o-1") is not None
    assert testkit.ledger_items()["consumer-index#c-test-0"]["quarantined"] == {"N": "1"}


def test_filter_policy_of_resources_yaml_admits_only_types_with_a_natural_key(
    account: testkit.Account, app_module: ModuleType, app_dir: Path
) -> None:
    from chalicelib.service import natural_keys

    for i, record_type in enumerate(("order", "invoice", "customer")):
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

    assert sorted(m["MessageAttributes"]["record_type"]["StringValue"] for m in arrived) == [
        "customer",
        "order",
    ]
    assert response == {"batchItemFailures": []}
    assert stored(account, "order#k-0") is not None
    assert stored(account, "customer#k-2") is not None
    assert testkit.quarantined_keys() == []


def test_float_payload_values_are_stored_exactly_as_decimals() -> None:
    from chalicelib.store import to_attribute

    assert to_attribute({"amount": 0.1, "n": 3}) == {"M": {"amount": {"N": "0.1"}, "n": {"N": "3"}}}


def test_config_policies_and_queue_timeouts_are_consistent(app_dir: Path) -> None:
    assert testkit.app_config_problems(app_dir) == []
