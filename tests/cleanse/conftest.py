"""Fixtures of the cleanse app's tests: stage `test` on moto, the app imported from cleanse/.

Tables come from infra/platform.yaml's own definitions (as in tests/shared), so the stage is
tested against the key schemas that get deployed; buckets and queues are made by name.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support import chunks
from support import platform as moto_platform
from support.env import aws_env, aws_environment
from support.platform import STAGE

from sluice import aws
from sluice.config import ResourceNames
from sluice.envelope import Chunk

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "cleanse"
SAMPLES = ROOT / "samples"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))


@pytest.fixture(scope="session")
def app_module() -> ModuleType:
    """cleanse/app.py, imported once per test process (each app's tests run in their own),
    in the test environment: its decorator reads SLUICE_STAGE for the queue name."""
    with aws_environment():
        return importlib.import_module("app")


@pytest.fixture
def names(aws_env: None) -> ResourceNames:
    return ResourceNames(stage=STAGE)


@pytest.fixture
def platform(aws_env: None, names: ResourceNames) -> Iterator[ResourceNames]:
    """A moto account with what cleanse touches: tables, buckets, the raw and clean queues."""
    with moto_platform.mocked_platform(
        buckets=(names.quarantine_bucket, names.payload_bucket),
        queues=(names.raw_queue, names.clean_queue),
    ):
        yield names


@pytest.fixture
def clean_messages(platform: ResourceNames) -> Callable[[], list[dict[str, Any]]]:
    """`clean_messages()` drains the clean queue and returns its messages."""

    def drain() -> list[dict[str, Any]]:
        sqs = aws.sqs()
        url = sqs.get_queue_url(QueueName=platform.clean_queue)["QueueUrl"]
        found: list[dict[str, Any]] = []
        while True:
            got = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not got:
                return found
            found.extend(dict(m) for m in got)
            for message in got:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    return drain


ChunkFactory = Callable[..., Chunk]
OrderFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def make_chunk() -> ChunkFactory:
    """`make_chunk(payloads, record_type=..., ordinal=...)`: a raw chunk as ingest sends it."""
    return chunks.make_chunk


@pytest.fixture
def order() -> OrderFactory:
    """`order(**overrides)`: a valid raw order; a None override removes the field."""
    return _order


def _order(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "order_id": "o-1",
        "customer_id": "c-1",
        "email": "ada@example.com",
        "amount": 19.99,
        "currency": "EUR",
        "created_at": "2026-11-27T08:15:00Z",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


__all__ = ["aws_env"]
