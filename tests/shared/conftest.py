"""Fixtures of the shared package's tests: a moto account built from infra/platform.yaml.

Tables are created from the template's own definitions (key schema, attribute types, TTL),
so the code is tested against the schema that gets deployed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import platform as moto_platform
from support.platform import STAGE

from sluice import aws
from sluice.config import ResourceNames, reset_settings


@pytest.fixture(scope="session")
def platform_template() -> dict[str, Any]:
    """infra/platform.yaml, as CloudFormation reads it (long-form intrinsics only)."""
    return moto_platform.platform_template()


@pytest.fixture(scope="session")
def table_definitions() -> dict[str, dict[str, Any]]:
    """The template's DynamoDB tables by logical id, with `TableName` resolved for STAGE."""
    return moto_platform.table_definitions()


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
def platform(aws_env: None, names: ResourceNames) -> Iterator[ResourceNames]:
    """A moto account holding the platform's tables (from the template) and buckets."""
    from moto import mock_aws

    with mock_aws():
        moto_platform.create_tables(ttl=True)
        moto_platform.create_buckets((names.quarantine_bucket, names.payload_bucket))
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
