"""Which consumers each route reaches: the records topic's subscriptions, read and cached."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.subscriptions import TopicSubscriptions, consumer_of
from sluice import aws
from sluice.config import ResourceNames

HIGH = json.dumps({"priority": "high"}, separators=(",", ":"))
LOW = json.dumps({"priority": "low"}, separators=(",", ":"))


def test_a_subscription_names_its_consumer_by_queue_or_function() -> None:
    names = ResourceNames(stage="dev")
    queue = "arn:aws:sqs:us-east-1:123456789012:sluice-dev-consumer-warehouse"
    function = "arn:aws:lambda:us-east-1:123456789012:function:sluice-consumer-alerts-dev-consume"
    assert consumer_of(queue, "sqs", names) == "warehouse"
    assert consumer_of(function, "lambda", names) == "alerts"
    # The local runtime's own queue for a function, another stage's queue, a stray queue:
    runtime = "arn:aws:sqs:us-east-1:123456789012:sluice-consumer-alerts-dev-consume-rt-sns"
    assert consumer_of(runtime, "sqs", names) is None
    assert consumer_of("arn:aws:sqs:us-east-1:1:sluice-prod-consumer-index", "sqs", names) is None
    assert consumer_of("arn:aws:sqs:us-east-1:1:audit", "sqs", names) is None
    assert consumer_of("ops@example.com", "email", names) is None


def test_routes_count_for_every_consumer_whose_policy_passes_them(platform: Any) -> None:
    sns = aws.sns()
    # A direct (Lambda) consumer taking only this correlation id's orders:
    sub = sns.subscribe(
        TopicArn=platform.topic_arn,
        Protocol="lambda",
        Endpoint="arn:aws:lambda:us-east-1:123456789012:function:sluice-consumer-audit-test-consume",
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    sns.set_subscription_attributes(
        SubscriptionArn=sub,
        AttributeName="FilterPolicy",
        AttributeValue=json.dumps({"record_type": ["order"], "correlation_id": ["corr-1"]}),
    )
    calls: list[str] = []
    subscriptions = TopicSubscriptions(lambda: platform.topic_arn, clock=lambda: 0.0)
    real = subscriptions.client
    subscriptions._client = _Counting(real, calls)

    assert subscriptions.route_sinks({HIGH: 2, LOW: 3}, "order", "corr-1") == {
        "urgent": 2,  # {"priority": ["high"]}
        "all": 5,  # no policy
        "audit": 5,
    }
    assert subscriptions.route_sinks({LOW: 1}, "customer", "corr-2") == {"all": 1}
    # Read once, then from the cache (a minute per container).
    assert calls.count("list_subscriptions_by_topic") == 1


class _Counting:
    def __init__(self, client: Any, calls: list[str]) -> None:
        self.client, self.calls = client, calls

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self.client, name)


def test_the_cache_is_read_again_after_a_minute(platform: Any) -> None:
    now = [0.0]
    subscriptions = TopicSubscriptions(lambda: platform.topic_arn, clock=lambda: now[0])
    assert {s.consumer for s in subscriptions.subscribers()} == {"urgent", "all"}
    aws.sns().subscribe(
        TopicArn=platform.topic_arn,
        Protocol="sqs",
        Endpoint="arn:aws:sqs:us-east-1:123456789012:sluice-test-consumer-late",
    )
    now[0] = 59.0
    assert {s.consumer for s in subscriptions.subscribers()} == {"urgent", "all"}
    now[0] = 60.0
    assert {s.consumer for s in subscriptions.subscribers()} == {"urgent", "all", "late"}
