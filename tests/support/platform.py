"""The platform of infra/platform.yaml in a moto account, for every test group's fixtures.

Tables are created from the template's own definitions (key schema, attribute types, TTL),
so code is tested against the schema that gets deployed; buckets and queues by their names.
Call the `create_*` helpers inside `mock_aws()`: they use the process's cached clients.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from sluice import aws

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "platform.yaml"
STAGE = "test"
PARAMETERS: Mapping[str, str] = {"Stage": STAGE, "ResourcePrefix": "sluice"}


def sub(value: Any, parameters: Mapping[str, str] = PARAMETERS) -> str:
    """Resolve a `Fn::Sub` string (or a plain string) against template parameters."""
    if isinstance(value, dict):
        value = value["Fn::Sub"]
    return re.sub(r"\$\{([^}]+)\}", lambda m: parameters[m.group(1)], str(value))


def load_template(path: Path) -> dict[str, Any]:
    """A CloudFormation template as CloudFormation reads it (long-form intrinsics only)."""
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)  # type: ignore[no-any-return]


@cache
def platform_template() -> dict[str, Any]:
    """infra/platform.yaml, read once per test process (callers must not change it)."""
    return load_template(TEMPLATE)


def table_definitions() -> dict[str, dict[str, Any]]:
    """The template's DynamoDB tables by logical id, with `TableName` resolved for STAGE."""
    tables = {}
    for logical_id, resource in platform_template()["Resources"].items():
        if resource["Type"] == "AWS::DynamoDB::Table":
            props = dict(resource["Properties"])
            props["TableName"] = sub(props["TableName"])
            tables[logical_id] = props
    return tables


def create_tables(*, ttl: bool = False) -> None:
    """The template's tables; with `ttl`, their TimeToLiveSpecification applied as well."""
    ddb = aws.dynamodb()
    for props in table_definitions().values():
        extra = {}
        if props.get("GlobalSecondaryIndexes"):
            extra["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        ddb.create_table(
            TableName=props["TableName"],
            KeySchema=props["KeySchema"],
            AttributeDefinitions=props["AttributeDefinitions"],
            BillingMode=props["BillingMode"],
            **extra,
        )
        spec = props.get("TimeToLiveSpecification")
        if ttl and spec:
            ddb.update_time_to_live(TableName=props["TableName"], TimeToLiveSpecification=spec)


def create_buckets(buckets: Iterable[str]) -> None:
    s3 = aws.s3()
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)


def create_queues(queues: Iterable[str]) -> list[str]:
    """The queues, created in order; their URLs in the same order."""
    sqs = aws.sqs()
    return [sqs.create_queue(QueueName=queue)["QueueUrl"] for queue in queues]


@contextmanager
def mocked_platform(
    *, buckets: Iterable[str] = (), queues: Iterable[str] = (), ttl: bool = False
) -> Iterator[list[str]]:
    """A moto account holding the template's tables (`ttl`: with their TTL settings), these
    buckets and these queues (their URLs yielded, in order); the process's cached clients
    are dropped on the way out. Call it inside the test environment (support.env)."""
    from moto import mock_aws

    with mock_aws():
        create_tables(ttl=ttl)
        create_buckets(buckets)
        yield create_queues(queues)
        aws.reset_clients()


def ledger_entries(table: str, correlation_id: str) -> dict[str, dict[str, Any]]:
    """The ledger's items of one correlation id by entry (`<stage>#<chunk>`, `sink:…`), each
    attribute as a plain value (numbers as int, strings as str). Not the object's progress
    item nor ingest's "done" marker (`sluice.ledger.is_entry`)."""
    from sluice.ledger import PARTITION_KEY, SORT_KEY, is_entry, split_item

    found = aws.dynamodb().query(
        TableName=table,
        KeyConditionExpression="#c = :c",
        ExpressionAttributeNames={"#c": PARTITION_KEY},
        ExpressionAttributeValues={":c": {"S": correlation_id}},
    )
    return {
        item[SORT_KEY]["S"]: {k: int(v["N"]) if "N" in v else v.get("S") for k, v in item.items()}
        for whole in found["Items"]
        if is_entry(whole[SORT_KEY]["S"])
        for item in split_item(whole)
    }
