"""Drift: what the stage's templates declare for its queues, subscriptions and alarms,
compared with what is deployed, and applied again through the APIs.

CloudFormation compares a template with the template it last deployed, not with the
resources: after a redrive policy or a DLQ is deleted by hand, a filter policy changed or a
visibility timeout lowered, an update of the unchanged template reports "no changes" and
leaves the resources as they are. `find_drift` compares the resolved template properties
with the deployed attributes (doctor reports it); `repair_drift` sets them again (the deploy
runs it after the stacks): CreateQueue for a missing queue, SetQueueAttributes, Subscribe
and SetSubscriptionAttributes, PutMetricAlarm.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluice_tools.deploy.state import resolver_for
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import StackSpec, as_json

QUEUE = "queue"
SUBSCRIPTION = "subscription"
ALARM = "alarm"

# Template properties of AWS::SQS::Queue that are not queue attributes.
_QUEUE_NOT_ATTRIBUTES = frozenset({"QueueName", "Tags"})
# Attributes SQS takes only when the queue is created.
_QUEUE_CREATE_ONLY = frozenset({"FifoQueue"})
SUBSCRIPTION_ATTRIBUTES = (
    "RawMessageDelivery",
    "FilterPolicy",
    "FilterPolicyScope",
    "RedrivePolicy",
    "DeliveryPolicy",
)
# What SNS reports for an attribute that was never set.
_SUBSCRIPTION_DEFAULTS = {"RawMessageDelivery": "false", "FilterPolicyScope": "MessageAttributes"}
_ALARM_KEYS = (
    "AlarmName",
    "AlarmDescription",
    "ActionsEnabled",
    "OKActions",
    "AlarmActions",
    "InsufficientDataActions",
    "MetricName",
    "Namespace",
    "Statistic",
    "ExtendedStatistic",
    "Dimensions",
    "Period",
    "Unit",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "EvaluateLowSampleCountPercentile",
    "Metrics",
)


@dataclass(frozen=True)
class Drift:
    """One declared thing that is missing (`attribute` None) or has another value."""

    kind: str  # queue | subscription | alarm
    name: str  # queue or alarm name; a subscription's "protocol:endpoint-name"
    stack: StackSpec
    props: dict[str, Any]  # the resolved template properties
    attribute: str | None = None
    expected: str | None = None
    actual: str | None = None  # None: not set

    @property
    def missing(self) -> bool:
        return self.attribute is None

    def describe(self) -> str:
        """What is wrong, naming the resource, the expected value and what is there."""
        if self.missing:
            where = f" to {self.props['TopicArn']}" if self.kind == SUBSCRIPTION else ""
            return f"{self.kind} {self.name}{where} does not exist"
        found = "not set" if self.actual is None else self.actual
        return (
            f"{self.kind} {self.name}: {self.attribute} is {found}, "
            f"the template says {self.expected}"
        )


def attribute_text(value: Any) -> str:
    """A template value as the string SQS and SNS attributes hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return as_json(value)
    return str(value)


def queue_attributes(props: dict[str, Any]) -> dict[str, str]:
    """The SQS attributes a queue's template properties declare."""
    return {k: attribute_text(v) for k, v in props.items() if k not in _QUEUE_NOT_ATTRIBUTES}


def subscription_attributes(props: dict[str, Any]) -> dict[str, str]:
    """The SNS subscription attributes a subscription's template properties declare."""
    return {k: attribute_text(props[k]) for k in SUBSCRIPTION_ATTRIBUTES if k in props}


def alarm_arguments(props: dict[str, Any]) -> dict[str, Any]:
    """PutMetricAlarm's arguments from an alarm's template properties."""
    args = {k: props[k] for k in _ALARM_KEYS if k in props}
    for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
        if key in args:
            args[key] = int(args[key])
    if "Threshold" in args:
        args["Threshold"] = float(args["Threshold"])
    return args


def same_value(expected: str, actual: str | None) -> bool:
    """Equal as attribute strings, or as JSON documents (key order, 5 vs "5")."""
    if actual is None:
        return False
    if expected == actual:
        return True
    try:
        return bool(_normal(json.loads(expected)) == _normal(json.loads(actual)))
    except ValueError:
        return False


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value if isinstance(value, str) else json.dumps(value)


def find_drift(target: Target, stacks: list[StackSpec]) -> list[Drift]:
    """Every declared queue, subscription and alarm that is missing or differs, in order."""
    found: list[Drift] = []
    sqs, sns = target.client("sqs"), target.client("sns")
    for spec in stacks:
        resolver = resolver_for(target, spec)
        for logical in spec.resources("AWS::SQS::Queue"):
            found += _queue_drift(sqs, spec, resolver.properties(logical))
        for logical in spec.resources("AWS::SNS::Subscription"):
            found += _subscription_drift(sns, spec, resolver.properties(logical))
        alarms = {resolver.name_of(a): a for a in spec.resources("AWS::CloudWatch::Alarm")}
        for name in sorted(set(alarms) - existing_alarms(target, list(alarms))):
            found.append(Drift(ALARM, name, spec, resolver.properties(alarms[name])))
    return found


def _queue_drift(sqs: Any, spec: StackSpec, props: dict[str, Any]) -> list[Drift]:
    name = props["QueueName"]
    current = queue_state(sqs, name)
    if current is None:
        return [Drift(QUEUE, name, spec, props)]
    return [
        Drift(QUEUE, name, spec, props, key, wanted, current.get(key))
        for key, wanted in queue_attributes(props).items()
        if not same_value(wanted, current.get(key))
    ]


def queue_state(sqs: Any, name: str) -> dict[str, str] | None:
    """A queue's attributes, None if it does not exist."""
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except Exception as exc:
        if _error_code(exc) in _NO_QUEUE:
            return None
        raise
    return dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


def _subscription_drift(sns: Any, spec: StackSpec, props: dict[str, Any]) -> list[Drift]:
    label = subscription_label(props)
    arn = find_subscription(sns, props["TopicArn"], props["Endpoint"])
    if arn is None:
        return [Drift(SUBSCRIPTION, label, spec, props)]
    current = sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]
    drifts = []
    for key, wanted in subscription_attributes(props).items():
        actual = current.get(key) or _SUBSCRIPTION_DEFAULTS.get(key)
        if not same_value(wanted, actual):
            drifts.append(Drift(SUBSCRIPTION, label, spec, props, key, wanted, actual))
    return drifts


_NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


def _error_code(exc: Exception) -> str:
    """A botocore ClientError's code ("" for anything else)."""
    return str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))


def subscription_label(props: dict[str, Any]) -> str:
    return f"{props['Protocol']}:{str(props['Endpoint']).rsplit(':', 1)[-1]}"


def find_subscription(sns: Any, topic: str, endpoint: str) -> str | None:
    """The ARN of `topic`'s subscription of `endpoint`; None if none (or no such topic)."""
    try:
        pages = list(sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic))
    except Exception as exc:
        if _error_code(exc) == "NotFound":
            return None
        raise
    for page in pages:
        for sub in page["Subscriptions"]:
            if sub["Endpoint"] == endpoint:
                return str(sub["SubscriptionArn"])
    return None


def existing_alarms(target: Target, names: list[str]) -> set[str]:
    cloudwatch, existing = target.client("cloudwatch"), set()
    for i in range(0, len(names), 100):
        found = cloudwatch.describe_alarms(AlarmNames=names[i : i + 100])["MetricAlarms"]
        existing |= {a["AlarmName"] for a in found}
    return existing


def repair_drift(
    target: Target, stacks: list[StackSpec], log: Callable[[str], None] = print
) -> list[str]:
    """Apply again every declared setting that drifted; returns what was repaired.

    A repair that fails is logged, not raised: doctor, at the end of the deploy, reports
    what is still wrong (e.g. SQS refuses a queue name for 60 s after its deletion).
    """
    drifts = find_drift(target, stacks)
    # Missing queues first (a DLQ before the redrive policy that names it).
    drifts.sort(key=lambda d: (d.kind != QUEUE, not d.missing))
    if drifts:
        log("drift (changes CloudFormation does not see), applied from the templates:")
    repaired: list[str] = []
    for drift in drifts:
        try:
            repaired.append(_REPAIR[drift.kind](target, drift))
        except Exception as exc:
            log(f"  could not repair: {drift.describe()}: {exc}")
            continue
        log(f"  {repaired[-1]}")
    return repaired


def _repair_queue(target: Target, drift: Drift) -> str:
    sqs = target.client("sqs")
    if drift.missing:
        attributes = queue_attributes(drift.props)
        tags = {t["Key"]: str(t["Value"]) for t in drift.props.get("Tags") or []}
        sqs.create_queue(QueueName=drift.name, Attributes=attributes, tags=tags)
        return f"queue {drift.name} created (CreateQueue, {len(attributes)} attributes)"
    if drift.attribute in _QUEUE_CREATE_ONLY:
        raise ValueError(f"{drift.attribute} is set only when a queue is created")
    url = sqs.get_queue_url(QueueName=drift.name)["QueueUrl"]
    attributes = {str(drift.attribute): str(drift.expected)}
    if target.emulator:
        # moto 5.2.5 drops a queue's policy on any SetQueueAttributes that does not repeat it
        # (sluice_tools.motocompat); AWS keeps it. Repeat it there.
        now = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])
        policy = (now.get("Attributes") or {}).get("Policy")
        if policy and drift.attribute != "Policy":
            attributes["Policy"] = policy
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return f"queue {drift.name}: {drift.attribute} set to {drift.expected} (SetQueueAttributes)"


def _repair_subscription(target: Target, drift: Drift) -> str:
    sns = target.client("sns")
    if drift.missing:
        props = drift.props
        sns.subscribe(
            TopicArn=props["TopicArn"],
            Protocol=props["Protocol"],
            Endpoint=props["Endpoint"],
            Attributes=subscription_attributes(props),
            ReturnSubscriptionArn=True,
        )
        return f"subscription {drift.name} to {props['TopicArn']} created (Subscribe)"
    arn = find_subscription(sns, drift.props["TopicArn"], drift.props["Endpoint"])
    sns.set_subscription_attributes(
        SubscriptionArn=arn, AttributeName=drift.attribute, AttributeValue=drift.expected
    )
    return (
        f"subscription {drift.name}: {drift.attribute} set to {drift.expected} "
        "(SetSubscriptionAttributes)"
    )


def _repair_alarm(target: Target, drift: Drift) -> str:
    target.client("cloudwatch").put_metric_alarm(**alarm_arguments(drift.props))
    return f"alarm {drift.name} created (PutMetricAlarm)"


_REPAIR: dict[str, Callable[[Target, Drift], str]] = {
    QUEUE: _repair_queue,
    SUBSCRIPTION: _repair_subscription,
    ALARM: _repair_alarm,
}
