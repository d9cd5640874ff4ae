"""The tables in infra/platform.yaml have the names, keys and TTL attribute the code uses."""

from __future__ import annotations

from typing import Any

import pytest

from sluice import idempotency, ledger
from sluice.config import ResourceNames

STAGE = "test"


def keys(props: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """{key type: (attribute name, attribute type)} of a table definition."""
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    return {
        k["KeyType"]: (k["AttributeName"], types[k["AttributeName"]]) for k in props["KeySchema"]
    }


def ttl_attribute(props: dict[str, Any]) -> str | None:
    spec = props.get("TimeToLiveSpecification")
    return spec["AttributeName"] if spec and spec.get("Enabled") else None


def test_template_reads_without_custom_yaml_tags(platform_template: dict[str, Any]) -> None:
    assert set(platform_template["Parameters"]) >= {"Stage", "ResourcePrefix"}
    assert platform_template["Parameters"]["ResourcePrefix"]["Default"] == "sluice"


def test_table_names_follow_the_naming_convention(
    table_definitions: dict[str, dict[str, Any]],
) -> None:
    names = ResourceNames(stage=STAGE)
    assert {t["TableName"] for t in table_definitions.values()} == {
        names.idempotency_table,
        names.ledger_table,
        names.records_table,
        names.cursor_table,
    }


def test_idempotency_table_matches_the_code(table_definitions: dict[str, dict[str, Any]]) -> None:
    props = table_definitions["IdempotencyTable"]
    assert props["TableName"] == ResourceNames(stage=STAGE).idempotency_table
    assert keys(props) == {"HASH": (idempotency.KEY_ATTR, "S")}
    assert ttl_attribute(props) == idempotency.EXPIRES_AT_ATTR


def test_ledger_table_matches_the_code(table_definitions: dict[str, dict[str, Any]]) -> None:
    props = table_definitions["LedgerTable"]
    assert props["TableName"] == ResourceNames(stage=STAGE).ledger_table
    assert keys(props) == {"HASH": (ledger.PARTITION_KEY, "S"), "RANGE": (ledger.SORT_KEY, "S")}
    assert ttl_attribute(props) == ledger.EXPIRES_AT_ATTR


def test_records_and_cursor_tables_have_their_keys(
    table_definitions: dict[str, dict[str, Any]],
) -> None:
    assert keys(table_definitions["RecordsTable"]) == {"HASH": ("pk", "S"), "RANGE": ("sk", "S")}
    assert keys(table_definitions["CursorsTable"]) == {"HASH": ("source", "S")}


@pytest.mark.parametrize(
    "logical_id", ["IdempotencyTable", "LedgerTable", "RecordsTable", "CursorsTable"]
)
def test_every_table_is_on_demand_encrypted_and_recoverable(
    table_definitions: dict[str, dict[str, Any]], logical_id: str
) -> None:
    props = table_definitions[logical_id]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_moto_tables_made_from_the_template_accept_the_codes_items(platform: ResourceNames) -> None:
    from sluice import aws

    ddb = aws.dynamodb()
    described = ddb.describe_time_to_live(TableName=platform.idempotency_table)
    assert described["TimeToLiveDescription"]["AttributeName"] == idempotency.EXPIRES_AT_ATTR
    store = idempotency.IdempotencyStore()
    store.complete(store.claim("cleanse", "c-1"))
