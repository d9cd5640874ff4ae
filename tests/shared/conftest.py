"""Fixtures of the shared package's tests: a moto account built from infra/platform.yaml.

Tables are created from the template's own definitions (key schema, attribute types, TTL),
so the code is tested against the schema that gets deployed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice import aws
from sluice.config import ResourceNames, reset_settings

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "platform.yaml"
STAGE = "test"
PARAMETERS = {"Stage": STAGE, "ResourcePrefix": "sluice"}


def _sub(value: Any, parameters: dict[str, str]) -> str:
    """Resolve a `Fn::Sub` string (or a plain string) against template parameters."""
    if isinstance(value, dict):
        value = value["Fn::Sub"]
    return re.sub(r"\$\{([^}]+)\}", lambda m: parameters[m.group(1)], value)


@pytest.fixture(scope="session")
def platform_template() -> dict[str, Any]:
    """infra/platform.yaml, as CloudFormation reads it (long-form intrinsics only)."""
    with TEMPLATE.open(encoding="utf-8") as f:
        return yaml.safe_load(f)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def table_definitions(platform_template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The template's DynamoDB tables by logical id, with `TableName` resolved for STAGE."""
    tables = {}
    for logical_id, resource in platform_template["Resources"].items():
        if resource["Type"] == "AWS::DynamoDB::Table":
            props = dict(resource["Properties"])
            props["TableName"] = _sub(props["TableName"], PARAMETERS)
            tables[logical_id] = props
    return tables


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Environment of a Sluice function in stage `test`, with fake credentials."""
    monkeypatch.setenv("SLUICE_STAGE", STAGE)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    for name in ("SLUICE_IDEMPOTENCY", "SLUICE_RECORD_MAX_BYTES", "SLUICE_RESOURCE_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    aws.reset_clients()
    yield
    reset_settings()
    aws.reset_clients()


@pytest.fixture
def names(aws_env: None) -> ResourceNames:
    return ResourceNames(stage=STAGE)


@pytest.fixture
def platform(
    aws_env: None, table_definitions: dict[str, dict[str, Any]], names: ResourceNames
) -> Iterator[ResourceNames]:
    """A moto account holding the platform's tables (from the template) and buckets."""
    from moto import mock_aws

    with mock_aws():
        ddb = aws.dynamodb()
        for props in table_definitions.values():
            ddb.create_table(
                TableName=props["TableName"],
                KeySchema=props["KeySchema"],
                AttributeDefinitions=props["AttributeDefinitions"],
                BillingMode=props["BillingMode"],
            )
            ttl = props.get("TimeToLiveSpecification")
            if ttl:
                ddb.update_time_to_live(TableName=props["TableName"], TimeToLiveSpecification=ttl)
        s3 = aws.s3()
        for bucket in (names.quarantine_bucket, names.payload_bucket):
            s3.create_bucket(Bucket=bucket)
        yield names
        aws.reset_clients()


class CallCounter:
    """Counts the API calls a boto3 client sends, by operation name (retries not included)."""

    def __init__(self) -> None:
        self.operations: list[str] = []

    def __call__(self, model: Any, **_: Any) -> None:
        self.operations.append(model.name)

    @property
    def count(self) -> int:
        return len(self.operations)

    def clear(self) -> None:
        self.operations.clear()


@pytest.fixture
def count_calls() -> Callable[[Any], CallCounter]:
    """`count_calls(client)` starts counting that client's calls."""

    def start(client: Any) -> CallCounter:
        counter = CallCounter()
        service = client.meta.service_model.endpoint_prefix
        client.meta.events.register(f"before-call.{service}.*", counter)
        return counter

    return start


@pytest.fixture
def dynamodb_calls(
    platform: ResourceNames, count_calls: Callable[[Any], CallCounter]
) -> CallCounter:
    """Calls made through the process's cached DynamoDB client (the one the code uses)."""
    return count_calls(aws.dynamodb())
