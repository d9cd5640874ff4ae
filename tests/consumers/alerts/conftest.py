"""The alerts consumer's tests: the fixtures every consumer's tests share
(consumers/fixtures.py), and a queue subscribed to its alerts topic."""

from __future__ import annotations

import pytest
from consumers.fixtures import account, app_dir, app_module, aws_env

from consumers import testkit

__all__ = ["account", "app_dir", "app_module", "aws_env"]


@pytest.fixture
def alerts_inbox(account: testkit.Account) -> str:
    """A queue subscribed to the alerts topic (SNS JSON envelope, so Subject is kept)."""
    from sluice import aws

    url = aws.sqs().create_queue(QueueName="alerts-inbox")["QueueUrl"]
    arn = aws.sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    aws.sns().subscribe(
        TopicArn=account.alerts_topic_arn,
        Protocol="sqs",
        Endpoint=arn["Attributes"]["QueueArn"],
    )
    return url
