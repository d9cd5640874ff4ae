"""Fixtures of the shared package's tests: a moto account built from infra/platform.yaml.

Tables are created from the template's own definitions (key schema, attribute types, TTL),
so the code is tested against the schema that gets deployed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import calls
from support import platform as moto_platform
from support.calls import CallCounter
from support.env import aws_env
from support.platform import STAGE

from sluice import aws
from sluice.config import ResourceNames


@pytest.fixture(scope="session")
def platform_template() -> dict[str, Any]:
    """infra/platform.yaml, as CloudFormation reads it (long-form intrinsics only)."""
    return moto_platform.platform_template()


@pytest.fixture(scope="session")
def table_definitions() -> dict[str, dict[str, Any]]:
    """The template's DynamoDB tables by logical id, with `TableName` resolved for STAGE."""
    return moto_platform.table_definitions()


@pytest.fixture
def names(aws_env: None) -> ResourceNames:
    return ResourceNames(stage=STAGE)


@pytest.fixture
def platform(aws_env: None, names: ResourceNames) -> Iterator[ResourceNames]:
    """A moto account holding the platform's tables (from the template) and buckets."""
    buckets = (names.quarantine_bucket, names.payload_bucket)
    with moto_platform.mocked_platform(buckets=buckets, ttl=True):
        yield names


@pytest.fixture
def count_calls() -> Callable[[Any], CallCounter]:
    """`count_calls(client)` starts counting that client's calls."""
    return calls.count_calls


@pytest.fixture
def dynamodb_calls(
    platform: ResourceNames, count_calls: Callable[[Any], CallCounter]
) -> CallCounter:
    """Calls made through the process's cached DynamoDB client (the one the code uses)."""
    return count_calls(aws.dynamodb())


__all__ = ["aws_env"]
