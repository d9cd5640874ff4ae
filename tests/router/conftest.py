"""Fixtures of the router app's tests: stage `test` on moto, the app imported from router/.

Tables come from infra/platform.yaml's own definitions (as in tests/shared); buckets, the
clean queue, the records topic and two subscriber queues (raw delivery) are made by name.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from support import platform as moto_platform
from support.chunks import make_chunk
from support.env import aws_env, aws_environment
from support.platform import STAGE

from sluice import aws
from sluice.config import ResourceNames
from sluice.envelope import Chunk
from sluice.registry import load_registry

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

    from chalicelib.rules import RoutingRules

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "router"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

HIGH_PRIORITY_QUEUE = "sluice-test-consumer-urgent"
EVERYTHING_QUEUE = "sluice-test-consumer-all"


# The routing document the engine's tests use. The shipped routing.json declares only what a
# consumer's filter policy reads (priority); this one adds `region`, so a chunk splits into
# several groups and the tests see `in` cases, defaults and `if_missing` at work.
TEST_ROUTING: dict[str, Any] = {
    "version": 1,
    "attributes": {
        "priority": {"values": ["high", "normal"]},
        "region": {"values": ["eu", "americas", "apac", "other"]},
    },
    "types": {
        "order": {
            "priority": {
                "field": "amount",
                "cases": [{"gt": 1000, "value": "high"}],
                "default": "normal",
            },
            "region": {
                "field": "currency",
                "cases": [
                    {"in": ["EUR", "GBP", "CHF", "SEK", "DKK", "NOK", "PLN"], "value": "eu"},
                    {"in": ["USD", "CAD", "BRL", "MXN"], "value": "americas"},
                    {
                        "in": ["JPY", "AUD", "NZD", "SGD", "HKD", "INR", "CNY", "KRW"],
                        "value": "apac",
                    },
                ],
                "default": "other",
            },
        },
        "customer": {
            "region": {
                "field": "country",
                "cases": [
                    {"in": ["AT", "BE", "CH", "DE", "FR", "GB", "IT", "NL", "SE"], "value": "eu"},
                    {"in": ["AR", "BR", "CA", "MX", "US"], "value": "americas"},
                    {"in": ["AU", "CN", "IN", "JP", "KR", "NZ", "SG"], "value": "apac"},
                ],
                "default": "other",
                "if_missing": "other",
            }
        },
    },
}


@pytest.fixture
def routing_file(tmp_path: Path) -> Path:
    """TEST_ROUTING's attributes written as a routing.json of its own."""
    path = tmp_path / "routing.json"
    declared = {k: v for k, v in TEST_ROUTING.items() if k != "types"}
    path.write_text(json.dumps(declared), encoding="utf-8")
    return path


@pytest.fixture
def routing_registry(tmp_path: Path) -> Path:
    """A copy of the registry whose types route by TEST_ROUTING's rules."""
    root = tmp_path / "types"
    shutil.copytree(load_registry().root, root)
    for record_type, rules in TEST_ROUTING["types"].items():
        path = root / record_type / "type.json"
        declared = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**declared, "routing": rules}), encoding="utf-8")
    return root


@pytest.fixture
def routing_rules(routing_file: Path, routing_registry: Path) -> RoutingRules:
    """TEST_ROUTING's rules (priority and region), loaded as the router loads them."""
    from chalicelib.rules import load_rules

    return load_rules(routing_file, routing_registry)


@pytest.fixture(scope="session")
def app_module() -> ModuleType:
    """router/app.py, imported once per test process (each app's tests run in their own),
    in the test environment: its decorator reads SLUICE_STAGE for the queue name."""
    with aws_environment():
        return importlib.import_module("app")


@pytest.fixture(scope="session")
def service() -> ModuleType:
    return importlib.import_module("chalicelib.service")


@pytest.fixture(autouse=True)
def _no_router_left(service: ModuleType) -> Iterator[None]:
    """Each test builds the process's router afresh (its settings, clients and rules)."""
    service.reset(None)
    yield
    service.reset(None)


@pytest.fixture
def names(aws_env: None) -> ResourceNames:
    return ResourceNames(stage=STAGE)


@dataclass
class Subscriber:
    """An SQS queue subscribed to the records topic with raw delivery."""

    queue_url: str

    def drain(self) -> list[MessageTypeDef]:
        sqs = aws.sqs()
        found: list[MessageTypeDef] = []
        while True:
            got = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not got:
                return found
            found.extend(got)
            for message in got:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@dataclass
class Platform:
    names: ResourceNames
    topic_arn: str
    high_priority: Subscriber
    everything: Subscriber


def _subscribe(topic_arn: str, queue: str, filter_policy: dict[str, Any] | None) -> Subscriber:
    sqs, sns = aws.sqs(), aws.sns()
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    attributes = {"RawMessageDelivery": "true"}
    if filter_policy is not None:
        attributes["FilterPolicy"] = json.dumps(filter_policy)
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    return Subscriber(url)


@pytest.fixture
def platform(aws_env: None, names: ResourceNames) -> Iterator[Platform]:
    """A moto account with what the router touches, and two consumers of the records topic:
    one filtering on `{"priority": ["high"]}`, one taking everything."""
    with moto_platform.mocked_platform(
        buckets=(names.quarantine_bucket, names.payload_bucket), queues=(names.clean_queue,)
    ):
        topic_arn = aws.sns().create_topic(Name=names.records_topic)["TopicArn"]
        yield Platform(
            names=names,
            topic_arn=topic_arn,
            high_priority=_subscribe(topic_arn, HIGH_PRIORITY_QUEUE, {"priority": ["high"]}),
            everything=_subscribe(topic_arn, EVERYTHING_QUEUE, None),
        )


ChunkFactory = Callable[..., Chunk]


def order(amount: Any = 19.99, currency: Any = "EUR", **extra: Any) -> dict[str, Any]:
    """A clean order; a None argument leaves that field out."""
    base: dict[str, Any] = {
        "order_id": "o-1",
        "customer_id": "c-1",
        "email": "ada@example.com",
        "amount": amount,
        "currency": currency,
        "created_at": "2026-11-27T08:15:00.000Z",
        **extra,
    }
    return {k: v for k, v in base.items() if v is not None}


def customer(country: Any = "DE", **extra: Any) -> dict[str, Any]:
    """A clean customer; `country=None` leaves the country out."""
    base: dict[str, Any] = {
        "customer_id": "c-1",
        "email": "ada@example.com",
        "name": "Ada",
        "country": country,
        "created_at": "2026-11-27T08:15:00.000Z",
        **extra,
    }
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture(name="make_chunk")
def make_chunk_fixture() -> ChunkFactory:
    """`make_chunk(payloads, record_type=..., ordinal=..., correlation_id=...)`."""
    return make_chunk


@pytest.fixture(name="order")
def order_fixture() -> Callable[..., dict[str, Any]]:
    """`order(amount=..., currency=..., **extra)`: a clean order payload."""
    return order


@pytest.fixture(name="customer")
def customer_fixture() -> Callable[..., dict[str, Any]]:
    """`customer(country=..., **extra)`: a clean customer payload."""
    return customer


__all__ = ["aws_env"]
