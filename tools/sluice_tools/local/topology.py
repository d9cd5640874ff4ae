"""What was deployed, read back from the emulated APIs: functions and the triggers that feed them.

Read-only: nothing here changes the emulator. The runtime builds its data plane from this
(`runtime.py`), so it delivers exactly what the deploy configured, no more.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CONCURRENCY = 2
CHALICE_TAG = "aws-chalice"


@dataclass(frozen=True)
class FunctionSpec:
    """One deployed function, as Lambda would run it."""

    name: str
    arn: str
    handler: str
    timeout_s: int
    memory_mb: int
    environment: dict[str, str]
    app: str  # the Chalice app (from the `aws-chalice` tag), else the function name
    on_failure: str | None = None  # the async on-failure destination (an SQS queue ARN)
    maximum_retry_attempts: int = 2
    code_sha256: str = ""  # a redeploy of changed code changes it
    role: str = ""


@dataclass(frozen=True)
class SqsMapping:
    """An SQS event source mapping."""

    uuid: str
    function: str
    queue_arn: str
    batch_size: int
    batching_window_s: int
    report_batch_item_failures: bool
    maximum_concurrency: int
    enabled: bool


@dataclass(frozen=True)
class S3Trigger:
    """One `LambdaFunctionConfiguration` of a bucket's notification configuration."""

    bucket: str
    function: str
    config_id: str
    events: tuple[str, ...]
    filter: dict[str, Any] | None


@dataclass(frozen=True)
class SnsTrigger:
    """A `lambda` subscription to a topic, with its filter policy."""

    subscription_arn: str
    topic_arn: str
    function: str
    filter_policy: str | None
    filter_policy_scope: str | None


@dataclass(frozen=True)
class ScheduleTrigger:
    """An EventBridge rule with a schedule expression and a Lambda target."""

    rule: str
    rule_arn: str
    expression: str
    function: str
    enabled: bool
    input: str | None = None


@dataclass(frozen=True)
class EventRuleTrigger:
    """An EventBridge rule with an event pattern (on any bus) and a Lambda target."""

    rule: str
    rule_arn: str
    bus: str
    pattern: str
    function: str
    target_id: str
    enabled: bool


@dataclass
class Topology:
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    sqs: list[SqsMapping] = field(default_factory=list)
    s3: list[S3Trigger] = field(default_factory=list)
    sns: list[SnsTrigger] = field(default_factory=list)
    schedules: list[ScheduleTrigger] = field(default_factory=list)
    events: list[EventRuleTrigger] = field(default_factory=list)

    def summary(self) -> list[str]:
        """One line per trigger, for the console."""
        lines = [
            f"sqs  {_arn_name(m.queue_arn)} -> {m.function} (batch {m.batch_size}, "
            f"{'partial' if m.report_batch_item_failures else 'whole-batch'} failures, "
            f"concurrency {m.maximum_concurrency}{'' if m.enabled else ', disabled'})"
            for m in self.sqs
        ]
        lines += [f"s3   {t.bucket} {','.join(t.events)} -> {t.function}" for t in self.s3]
        lines += [f"sns  {_arn_name(t.topic_arn)} -> {t.function}" for t in self.sns]
        lines += [f"cron {t.expression} -> {t.function}" for t in self.schedules]
        lines += [
            f"rule {t.bus}/{t.rule} -> {t.function}{'' if t.enabled else ' (disabled)'}"
            for t in self.events
        ]
        return lines


def function_name_of(arn_or_name: str) -> str:
    """`arn:aws:lambda:r:a:function:NAME[:qualifier]` → NAME; a plain name stays as it is."""
    if not arn_or_name.startswith("arn:"):
        return arn_or_name
    parts = arn_or_name.split(":")
    return parts[6]


def _arn_name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


def read_topology(clients: Any) -> Topology:
    """Read functions, mappings, notifications, subscriptions and schedules.

    `clients(service)` returns a boto3 client on the emulator.
    """
    lam = clients("lambda")
    topology = Topology()
    for fn in _paged(lam, "list_functions", "Functions"):
        topology.functions[fn["FunctionName"]] = _function(lam, fn)
    for m in _paged(lam, "list_event_source_mappings", "EventSourceMappings"):
        if ":sqs:" not in m["EventSourceArn"]:
            continue
        scaling = m.get("ScalingConfig") or {}
        topology.sqs.append(
            SqsMapping(
                uuid=m["UUID"],
                function=function_name_of(m["FunctionArn"]),
                queue_arn=m["EventSourceArn"],
                batch_size=int(m.get("BatchSize") or 10),
                batching_window_s=int(m.get("MaximumBatchingWindowInSeconds") or 0),
                report_batch_item_failures="ReportBatchItemFailures"
                in (m.get("FunctionResponseTypes") or []),
                maximum_concurrency=int(scaling.get("MaximumConcurrency") or DEFAULT_CONCURRENCY),
                enabled=m.get("State", "Enabled") in {"Enabled", "Enabling", "Updating"},
            )
        )
    topology.s3 = _s3_triggers(clients("s3"))
    topology.sns = _sns_triggers(clients("sns"))
    rule_targets = _lambda_targets(clients("events"))
    topology.schedules = _schedules(rule_targets)
    topology.events = _event_rules(rule_targets)
    return topology


def _function(lam: Any, fn: dict[str, Any]) -> FunctionSpec:
    name = fn["FunctionName"]
    tags = lam.list_tags(Resource=fn["FunctionArn"]).get("Tags") or {}
    app = _chalice_app(tags.get(CHALICE_TAG, "")) or name
    on_failure = None
    retries = 2
    try:
        invoke_config = lam.get_function_event_invoke_config(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        invoke_config = {}
    destination = ((invoke_config.get("DestinationConfig") or {}).get("OnFailure") or {}).get(
        "Destination"
    )
    if destination:
        on_failure = str(destination)
    if invoke_config.get("MaximumRetryAttempts") is not None:
        retries = int(invoke_config["MaximumRetryAttempts"])
    return FunctionSpec(
        name=name,
        arn=fn["FunctionArn"],
        handler=fn["Handler"],
        timeout_s=int(fn.get("Timeout") or 3),
        memory_mb=int(fn.get("MemorySize") or 128),
        environment=dict((fn.get("Environment") or {}).get("Variables") or {}),
        app=app,
        on_failure=on_failure,
        maximum_retry_attempts=retries,
        code_sha256=str(fn.get("CodeSha256") or ""),
        role=str(fn.get("Role") or ""),
    )


def _chalice_app(tag: str) -> str:
    """`version=1.34.0:stage=local:app=sluice-ingest` → `sluice-ingest`."""
    for part in tag.split(":"):
        key, _, value = part.partition("=")
        if key == "app":
            return value
    return ""


def _s3_triggers(s3: Any) -> list[S3Trigger]:
    triggers = []
    for bucket in s3.list_buckets().get("Buckets") or []:
        config = s3.get_bucket_notification_configuration(Bucket=bucket["Name"])
        for lc in config.get("LambdaFunctionConfigurations") or []:
            triggers.append(
                S3Trigger(
                    bucket=bucket["Name"],
                    function=function_name_of(lc["LambdaFunctionArn"]),
                    config_id=lc.get("Id") or "",
                    events=tuple(lc.get("Events") or []),
                    filter=lc.get("Filter"),
                )
            )
    return triggers


def _sns_triggers(sns: Any) -> list[SnsTrigger]:
    triggers = []
    for sub in _paged(sns, "list_subscriptions", "Subscriptions"):
        if sub.get("Protocol") != "lambda":
            continue
        attrs = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])
        attributes = attrs.get("Attributes") or {}
        policy = attributes.get("FilterPolicy") or None
        triggers.append(
            SnsTrigger(
                subscription_arn=sub["SubscriptionArn"],
                topic_arn=sub["TopicArn"],
                function=function_name_of(sub["Endpoint"]),
                filter_policy=json.dumps(json.loads(policy)) if policy else None,
                filter_policy_scope=attributes.get("FilterPolicyScope") or None,
            )
        )
    return triggers


RuleTargets = list[tuple[str, dict[str, Any], dict[str, Any]]]  # (bus, rule, target)


def _lambda_targets(events: Any) -> RuleTargets:
    """(bus, rule, target) for every Lambda target of every rule on every bus."""
    found = []
    for bus in _paged(events, "list_event_buses", "EventBuses"):
        for rule in _rules(events, bus["Name"]):
            targets = events.list_targets_by_rule(Rule=rule["Name"], EventBusName=bus["Name"])
            found += [
                (bus["Name"], rule, target)
                for target in targets.get("Targets") or []
                if ":lambda:" in target["Arn"]
            ]
    return found


def _schedules(rule_targets: RuleTargets) -> list[ScheduleTrigger]:
    return [
        ScheduleTrigger(
            rule=rule["Name"],
            rule_arn=rule["Arn"],
            expression=rule["ScheduleExpression"],
            function=function_name_of(target["Arn"]),
            enabled=rule.get("State", "ENABLED") == "ENABLED",
            input=target.get("Input"),
        )
        for _bus, rule, target in rule_targets
        if rule.get("ScheduleExpression")
    ]


def _event_rules(rule_targets: RuleTargets) -> list[EventRuleTrigger]:
    """Rules matching events (not schedules) on every bus, one trigger per Lambda target."""
    return [
        EventRuleTrigger(
            rule=rule["Name"],
            rule_arn=rule["Arn"],
            bus=bus,
            pattern=rule["EventPattern"],
            function=function_name_of(target["Arn"]),
            target_id=target["Id"],
            enabled=rule.get("State", "ENABLED") == "ENABLED",
        )
        for bus, rule, target in rule_targets
        if rule.get("EventPattern") and not rule.get("ScheduleExpression")
    ]


def _rules(events: Any, bus: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = events.list_rules(EventBusName=bus, **({"NextToken": token} if token else {}))
        rules.extend(page.get("Rules") or [])
        token = page.get("NextToken")
        if not token:
            return rules


def deployed_fingerprint(clients: Any) -> str:
    """A digest of what a deploy changes, in a few calls: functions (code, settings), mappings,
    subscriptions, schedule rules and buckets' notifications. Equal digests: nothing to reload.
    """
    lam, s3 = clients("lambda"), clients("s3")
    parts: list[Any] = [
        sorted(
            json.dumps({k: v for k, v in fn.items() if k != "ResponseMetadata"}, sort_keys=True)
            for fn in _paged(lam, "list_functions", "Functions")
        ),
        sorted(
            json.dumps(m, sort_keys=True, default=str)
            for m in _paged(lam, "list_event_source_mappings", "EventSourceMappings")
        ),
        sorted(
            json.dumps(s, sort_keys=True)
            for s in _paged(clients("sns"), "list_subscriptions", "Subscriptions")
        ),
        sorted(
            json.dumps(r, sort_keys=True)
            for bus in _paged(clients("events"), "list_event_buses", "EventBuses")
            for r in _rules(clients("events"), bus["Name"])
        ),
    ]
    for bucket in s3.list_buckets().get("Buckets") or []:
        config = s3.get_bucket_notification_configuration(Bucket=bucket["Name"])
        config.pop("ResponseMetadata", None)
        parts.append([bucket["Name"], config])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _paged(client: Any, operation: str, key: str) -> list[dict[str, Any]]:
    if client.can_paginate(operation):
        items: list[dict[str, Any]] = []
        for page in client.get_paginator(operation).paginate():
            items.extend(page.get(key) or [])
        return items
    return list(getattr(client, operation)().get(key) or [])
