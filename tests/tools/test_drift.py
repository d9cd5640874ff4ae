"""Drift: resources changed outside the deploy are reported by `sluice doctor` with the
command that repairs them, and that command (`sluice deploy`) repairs them. Last, the
repairs as on AWS (no moto gap-filling first) from a small template, in-process.

The stage deployed into moto's server once per session (support.deployed) is broken;
what is broken is chosen from the templates and the deployed mappings, not from a list.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from support.deployed import STAGE, Deployed

from sluice_tools.cli import main
from sluice_tools.deploy.apps import discover_apps
from sluice_tools.deploy.doctor import DoctorReport, Inventory, repair_command, stack_repair
from sluice_tools.deploy.doctor import _check_queues as check_queues
from sluice_tools.deploy.drift import find_drift, queue_attributes, repair_drift
from sluice_tools.deploy.post_deploy import ASYNC_RETRIES
from sluice_tools.deploy.state import read_functions, resolver_for
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import StackSpec, stage_stacks
from sluice_tools.motocompat.cfn import put_function_event_invoke_config


@dataclass
class Victims:
    """What a consumer stack declares: a mapped queue, its DLQ, a subscription."""

    stack: StackSpec
    queue: dict[str, Any]  # resolved properties
    dlq: str
    subscription: dict[str, Any]
    function: str  # the function the queue feeds
    timeout: int


def victims(deployed: Deployed) -> Victims:
    """The first consumer stack whose queue has a DLQ, a subscription and a mapping."""
    target = deployed.target
    mappings = deployed.client("lambda").list_event_source_mappings()["EventSourceMappings"]
    mapped = {m["EventSourceArn"].rsplit(":", 1)[-1]: m["FunctionArn"] for m in mappings}
    for spec in stage_stacks(target.root, STAGE)[1:]:
        resolver = resolver_for(target, spec)
        queues = [resolver.properties(q) for q in spec.resources("AWS::SQS::Queue")]
        subs = [resolver.properties(s) for s in spec.resources("AWS::SNS::Subscription")]
        for queue in queues:
            if "RedrivePolicy" in queue and queue["QueueName"] in mapped and subs:
                function = mapped[queue["QueueName"]].rsplit(":", 1)[-1]
                config = deployed.client("lambda").get_function_configuration(FunctionName=function)
                dlq = queue["RedrivePolicy"]["deadLetterTargetArn"].rsplit(":", 1)[-1]
                return Victims(spec, queue, dlq, subs[0], function, int(config["Timeout"]))
    raise AssertionError("no consumer stack with a mapped queue, a DLQ and a subscription")


def doctor() -> Any:
    return CliRunner().invoke(main, ["doctor", "--stage", STAGE], catch_exceptions=False)


def queue_url(deployed: Deployed, name: str) -> str:
    return str(deployed.client("sqs").get_queue_url(QueueName=name)["QueueUrl"])


def subscription_arn(deployed: Deployed, props: dict[str, Any]) -> str:
    subs = deployed.client("sns").list_subscriptions_by_topic(TopicArn=props["TopicArn"])
    return next(
        str(s["SubscriptionArn"])
        for s in subs["Subscriptions"]
        if s["Endpoint"] == props["Endpoint"]
    )


@pytest.mark.slow
def test_doctor_reports_drift_with_its_repair_and_deploy_repairs_it(deployed: Deployed) -> None:
    v = victims(deployed)
    sqs, sns = deployed.client("sqs"), deployed.client("sns")
    queue = v.queue["QueueName"]
    declared = queue_attributes(v.queue)
    lowered = max(1, v.timeout // 2)
    changed_filter = {"record_type": ["drifted"]}
    sqs.set_queue_attributes(
        QueueUrl=queue_url(deployed, queue),
        Attributes={"RedrivePolicy": "", "VisibilityTimeout": str(lowered)},
    )
    sqs.delete_queue(QueueUrl=queue_url(deployed, v.dlq))
    sns.set_subscription_attributes(
        SubscriptionArn=subscription_arn(deployed, v.subscription),
        AttributeName="FilterPolicy",
        AttributeValue=json.dumps(changed_filter),
    )

    found = doctor()

    assert found.exit_code == 1, found.output
    text = found.output
    repair = stack_repair(deployed.target, v.stack)
    assert f"queue {v.dlq} does not exist\n    repair: {repair}\n" in text
    assert (
        f"queue {queue} has no DLQ (no RedrivePolicy); the template says "
        f"{declared['RedrivePolicy']}\n    repair: {repair}\n"
    ) in text
    assert (
        f"queue {queue}: VisibilityTimeout is {lowered}, the template says "
        f"{declared['VisibilityTimeout']} ({v.function} has a {v.timeout} s timeout: AWS "
        f"requires at least {v.timeout}, the design 6 x: {6 * v.timeout})\n"
        f"    repair: {repair}\n"
    ) in text
    label = f"{v.subscription['Protocol']}:{queue}"
    assert (
        f"subscription {label}: FilterPolicy is {json.dumps(changed_filter)}, the template "
        f"says {declared_filter(v.subscription)}\n    repair: {repair}\n"
    ) in text

    commands = sorted(
        {line.split("repair: ", 1)[1] for line in text.splitlines() if "repair: " in line}
    )
    assert commands == [repair]
    args = [*shlex.split(repair)[1:], "--build-dir", str(deployed.build_dir)]
    repaired = CliRunner().invoke(main, args, catch_exceptions=False)

    assert repaired.exit_code == 0, repaired.output
    assert "drift (changes CloudFormation does not see), applied from the templates:" in (
        repaired.output
    )
    assert f"queue {v.dlq} created (CreateQueue" in repaired.output
    assert f"queue {queue}: RedrivePolicy set to" in repaired.output
    assert f"stage {STAGE} OK" in repaired.output
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url(deployed, queue), AttributeNames=["All"]
    )["Attributes"]
    assert attributes["VisibilityTimeout"] == declared["VisibilityTimeout"]
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith(f":{v.dlq}")
    policy = sns.get_subscription_attributes(
        SubscriptionArn=subscription_arn(deployed, v.subscription)
    )["Attributes"]["FilterPolicy"]
    assert json.loads(policy) == v.subscription["FilterPolicy"]
    assert doctor().exit_code == 0


def declared_filter(props: dict[str, Any]) -> str:
    return queue_attributes({"FilterPolicy": props["FilterPolicy"]})["FilterPolicy"]


@pytest.mark.slow
def test_doctor_names_a_drifted_async_retry_count_and_deploy_of_its_app_repairs_it(
    deployed: Deployed,
) -> None:
    lam = deployed.client("lambda")
    target = deployed.target
    stacks = stage_stacks(target.root, STAGE)
    functions = read_functions(target, discover_apps(target.root), stacks)
    state = next(s for s in functions if s.async_triggers)
    config = lam.get_function_event_invoke_config(FunctionName=state.name)
    put_function_event_invoke_config(
        lam,
        FunctionName=state.name,
        MaximumRetryAttempts=0,
        DestinationConfig=config["DestinationConfig"],
    )

    found = doctor()
    repair = repair_command(target, state.app.rel)
    CliRunner().invoke(main, [*shlex.split(repair)[1:], "--build-dir", str(deployed.build_dir)])

    assert found.exit_code == 1
    assert (
        f"function {state.name}: MaximumRetryAttempts is 0, expected {ASYNC_RETRIES}\n"
        f"    repair: sluice deploy --stage {STAGE} --only {state.app.rel}\n"
    ) in found.output
    config = lam.get_function_event_invoke_config(FunctionName=state.name)
    assert config["MaximumRetryAttempts"] == ASYNC_RETRIES
    assert doctor().exit_code == 0


def test_repair_commands_name_the_stage_prefix_and_app() -> None:
    target = Target(stage="dev", prefix="acme", region="eu-west-1")
    platform, *consumers = stage_stacks(target.root, "dev", "acme")

    assert stack_repair(target, platform) == "sluice deploy --stage dev --prefix acme"
    assert stack_repair(target, consumers[0]) == (
        f"sluice deploy --stage dev --prefix acme --only consumers/{consumers[0].role[9:]}"
    )


TEMPLATE = """
Parameters:
  Stage: {Type: String}
  ResourcePrefix: {Type: String, Default: sluice}
Resources:
  DeadLetterQueue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: {"Fn::Sub": "${ResourcePrefix}-${Stage}-x-dlq"}
      MessageRetentionPeriod: 1209600
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: {"Fn::Sub": "${ResourcePrefix}-${Stage}-x"}
      VisibilityTimeout: 360
      SqsManagedSseEnabled: true
      RedrivePolicy:
        deadLetterTargetArn: {"Fn::GetAtt": [DeadLetterQueue, Arn]}
        maxReceiveCount: "5"
  Subscription:
    Type: AWS::SNS::Subscription
    Properties:
      TopicArn: {"Fn::Sub": "arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:t"}
      Protocol: sqs
      Endpoint: {"Fn::GetAtt": [Queue, Arn]}
      RawMessageDelivery: true
      FilterPolicy: {"record_type": ["order"]}
  Alarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmName: {"Fn::Sub": "${ResourcePrefix}-${Stage}-x-dlq-depth"}
      Namespace: AWS/SQS
      MetricName: ApproximateNumberOfMessagesVisible
      Statistic: Maximum
      Period: 60
      EvaluationPeriods: 1
      Threshold: 0
      ComparisonOperator: GreaterThanThreshold
"""


def test_repair_creates_what_is_missing_and_resets_what_changed(
    aws_env: None, tmp_path: Path
) -> None:
    from moto import mock_aws

    with mock_aws():
        target = Target(stage="test", root=tmp_path, region="us-east-1")
        spec = StackSpec(
            "sluice-test-x", "consumer-x", tmp_path / "x.yaml", yaml.safe_load(TEMPLATE)
        )
        sqs, sns = target.client("sqs"), target.client("sns")
        sns.create_topic(Name="t")
        log: list[str] = []

        created = repair_drift(target, [spec], log=log.append)
        url = sqs.get_queue_url(QueueName="sluice-test-x")["QueueUrl"]
        sqs.set_queue_attributes(
            QueueUrl=url, Attributes={"VisibilityTimeout": "30", "RedrivePolicy": ""}
        )
        sub = sns.list_subscriptions()["Subscriptions"][0]["SubscriptionArn"]
        sns.set_subscription_attributes(
            SubscriptionArn=sub, AttributeName="RawMessageDelivery", AttributeValue="false"
        )
        drifted = {(d.kind, d.name, d.attribute) for d in find_drift(target, [spec])}
        repaired = repair_drift(target, [spec], log=log.append)

        assert [line.split(" (")[0] for line in created] == [
            "queue sluice-test-x-dlq created",
            "queue sluice-test-x created",
            "subscription sqs:sluice-test-x to arn:aws:sns:us-east-1:123456789012:t created",
            "alarm sluice-test-x-dlq-depth created",
        ]
        assert drifted == {
            ("queue", "sluice-test-x", "VisibilityTimeout"),
            ("queue", "sluice-test-x", "RedrivePolicy"),
            ("subscription", "sqs:sluice-test-x", "RawMessageDelivery"),
        }
        assert len(repaired) == 3
        assert find_drift(target, [spec]) == []
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] in (5, "5")


def test_a_repair_that_fails_is_logged_and_left_to_doctor(aws_env: None, tmp_path: Path) -> None:
    from moto import mock_aws

    with mock_aws():
        target = Target(stage="test", root=tmp_path, region="us-east-1")
        spec = StackSpec(
            "sluice-test-x", "consumer-x", tmp_path / "x.yaml", yaml.safe_load(TEMPLATE)
        )
        log: list[str] = []

        repaired = repair_drift(target, [spec], log=log.append)  # topic t does not exist

        assert not any(line.startswith("subscription") for line in repaired)
        assert any(
            line.startswith("  could not repair: subscription sqs:sluice-test-x") for line in log
        )
        assert [d.kind for d in find_drift(target, [spec])] == ["subscription"]


def test_doctor_names_a_mapped_queue_whose_visibility_is_below_its_function_timeout() -> None:
    """A queue no template declares (or declares too low): the AWS rule, not a drift."""
    target = Target(stage="test", region="us-east-1")
    inventory = Inventory(
        queues={"sluice-test-q": {"VisibilityTimeout": "30"}},
        queue_arns={},
        buckets=set(),
        topics=set(),
        tables=set(),
    )
    report = DoctorReport(stage="test")

    check_queues(target, [], inventory, [], {"sluice-test-q": [("fn", 60), ("ok", 30)]}, report)

    assert report.problems == [
        "queue sluice-test-q: VisibilityTimeout is 30, below the 60 s timeout of fn (AWS "
        "requires at least the function's timeout, the design 6 x: 360): set it"
    ]
