"""What event consumers' tests share: their template's EventBridge rules in the moto account.

An event consumer (`sluice new-consumer --on-event`) is fed by a rule on the stage's bus;
`testkit.mocked_account` makes its queues, this makes the bus and the rule, from the same
resources.yaml that gets deployed. Used by tests/consumers/<name>/conftest.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from consumers import testkit
from sluice import aws


def create_event_rules(account: testkit.Account, template: Mapping[str, Any]) -> None:
    """The template's rules with their queue targets, on their bus (created here when the
    account has none: the platform stack creates it when deployed)."""
    events, sqs = aws.client("events"), aws.sqs()
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::Events::Rule":
            continue
        props = resource["Properties"]
        bus = testkit.sub(props["EventBusName"])
        if bus not in {b["Name"] for b in events.list_event_buses()["EventBuses"]}:
            events.create_event_bus(Name=bus)
        name = testkit.sub(props["Name"])
        events.put_rule(
            Name=name,
            EventBusName=bus,
            EventPattern=json.dumps(props["EventPattern"]),
            State=props.get("State", "ENABLED"),
        )
        targets = []
        for target in props["Targets"]:
            url = account.queues[target["Arn"]["Fn::GetAtt"][0]]
            got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            targets.append({"Id": target["Id"], "Arn": got["Attributes"]["QueueArn"]})
        events.put_targets(Rule=name, EventBusName=bus, Targets=targets)
