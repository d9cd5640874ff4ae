"""`sluice doctor`: read a deployed stage and list what makes it unsafe to run.

Every queue of the templates has a DLQ that exists; every SQS mapping reports batch item
failures; every async function has an on-failure destination; every subscription carries its
filter policy; every alarm of the templates exists; function environments name only
resources that exist. Read-only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sluice_tools.deploy.apps import AppSpec, discover_apps, select_apps
from sluice_tools.deploy.post_deploy import REPORT_FAILURES
from sluice_tools.deploy.state import (
    FunctionState,
    filter_policy_of,
    read_functions,
    resolver_for,
)
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import StackSpec, stage_stacks


@dataclass
class DoctorReport:
    """Problems found (empty: healthy) and how many things of each kind were checked."""

    stage: str
    problems: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, kind: str, n: int = 1) -> None:
        self.checked[kind] = self.checked.get(kind, 0) + n

    def render(self) -> str:
        counts = ", ".join(f"{n} {kind}" for kind, n in self.checked.items())
        if self.ok:
            return f"doctor: stage {self.stage} OK ({counts})"
        lines = [f"doctor: stage {self.stage} has {len(self.problems)} problem(s):"]
        lines += [f"  - {p}" for p in self.problems]
        lines.append(f"checked: {counts}")
        return "\n".join(lines)


def run_doctor(
    target: Target,
    only: list[str] | None = None,
    apps: list[AppSpec] | None = None,
) -> DoctorReport:
    """Check the target stage; `only` limits the function checks to those apps."""
    apps = select_apps(apps if apps is not None else discover_apps(target.root), only)
    stacks = stage_stacks(target.root, target.stage, target.prefix)
    report = DoctorReport(stage=target.stage)
    inventory = Inventory.read(target)
    _check_queues(target, stacks, inventory, report)
    _check_alarms(target, stacks, report)
    functions = read_functions(target, apps, stacks)
    _check_functions_exist(target, apps, functions, report)
    _check_mappings(functions, inventory, set(_template_queues(target, stacks)[0]), report)
    _check_async(target, functions, inventory, report)
    _check_subscriptions(target, stacks, functions, report)
    _check_environment(target, functions, inventory, report)
    return report


@dataclass
class Inventory:
    """Names of what exists: queues (name → attributes), buckets, topics, tables."""

    queues: dict[str, dict[str, str]]
    queue_arns: dict[str, str]
    buckets: set[str]
    topics: set[str]  # ARNs
    tables: set[str]

    @classmethod
    def read(cls, target: Target) -> Inventory:
        sqs = target.client("sqs")
        queues, arns = {}, {}
        urls: list[str] = []
        for page in sqs.get_paginator("list_queues").paginate(
            QueueNamePrefix=f"{target.prefix}-{target.stage}-"
        ):
            urls += page.get("QueueUrls", [])
        for url in urls:
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            name = url.rstrip("/").rsplit("/", 1)[-1]
            queues[name] = attrs
            arns[attrs["QueueArn"]] = name
        buckets = {b["Name"] for b in target.client("s3").list_buckets().get("Buckets", [])}
        topics: set[str] = set()
        for page in target.client("sns").get_paginator("list_topics").paginate():
            topics |= {t["TopicArn"] for t in page["Topics"]}
        tables: set[str] = set()
        for page in target.client("dynamodb").get_paginator("list_tables").paginate():
            tables |= set(page["TableNames"])
        return cls(queues, arns, buckets, topics, tables)

    def names(self) -> set[str]:
        return (
            set(self.queues)
            | self.buckets
            | {t.rsplit(":", 1)[-1] for t in self.topics}
            | self.tables
        )


def _template_queues(target: Target, stacks: list[StackSpec]) -> tuple[list[str], set[str]]:
    """(every queue name of the templates, those that are a DLQ or an async failure queue)."""
    names: list[str] = []
    terminal: set[str] = set()
    for spec in stacks:
        resolver = resolver_for(target, spec)
        for logical in spec.resources("AWS::SQS::Queue"):
            props = resolver.properties(logical)
            names.append(props["QueueName"])
            redrive = props.get("RedrivePolicy")
            if redrive:
                terminal.add(str(redrive["deadLetterTargetArn"]).rsplit(":", 1)[-1])
    terminal |= {n for n in names if n.endswith("-failures")}
    return names, terminal


def _check_queues(
    target: Target, stacks: list[StackSpec], inv: Inventory, report: DoctorReport
) -> None:
    names, terminal = _template_queues(target, stacks)
    for name in names:
        report.count("queues")
        if name not in inv.queues:
            report.problems.append(f"queue {name} does not exist")
            continue
        if name in terminal:
            continue
        _check_dlq(name, inv, report)


def _check_dlq(name: str, inv: Inventory, report: DoctorReport) -> None:
    raw = inv.queues[name].get("RedrivePolicy")
    if not raw:
        report.problems.append(f"queue {name} has no DLQ (no RedrivePolicy)")
        return
    dlq_arn = json.loads(raw).get("deadLetterTargetArn", "")
    if dlq_arn not in inv.queue_arns:
        report.problems.append(
            f"queue {name} has no DLQ: its RedrivePolicy points to {dlq_arn}, which does not exist"
        )


def _check_alarms(target: Target, stacks: list[StackSpec], report: DoctorReport) -> None:
    wanted = []
    for spec in stacks:
        resolver = resolver_for(target, spec)
        wanted += [resolver.name_of(a) for a in spec.resources("AWS::CloudWatch::Alarm")]
    cloudwatch, existing = target.client("cloudwatch"), set()
    for i in range(0, len(wanted), 100):
        found = cloudwatch.describe_alarms(AlarmNames=wanted[i : i + 100])["MetricAlarms"]
        existing |= {a["AlarmName"] for a in found}
    for name in wanted:
        report.count("alarms")
        if name not in existing:
            report.problems.append(f"alarm {name} does not exist")


def _check_functions_exist(
    target: Target, apps: list[AppSpec], functions: list[FunctionState], report: DoctorReport
) -> None:
    deployed = {f.name for f in functions}
    for app in apps:
        for handler in app.handlers(target.stage):
            report.count("functions")
            name = app.function_name(target.stage, handler)
            if name not in deployed:
                report.problems.append(f"function {name} ({app.rel}) is not deployed")


def _check_mappings(
    functions: list[FunctionState], inv: Inventory, template_queues: set[str], report: DoctorReport
) -> None:
    for state in functions:
        sources = [m["EventSourceArn"] for m in state.sqs_mappings]
        for arn in sorted({a for a in sources if sources.count(a) > 1}):
            report.problems.append(
                f"function {state.name} has {sources.count(arn)} mappings from "
                f"{arn.rsplit(':', 1)[-1]}: every message would be delivered more than once"
            )
        for mapping in state.sqs_mappings:
            report.count("mappings")
            queue = mapping["EventSourceArn"].rsplit(":", 1)[-1]
            if REPORT_FAILURES not in (mapping.get("FunctionResponseTypes") or []):
                report.problems.append(
                    f"mapping {queue} → {state.name} does not report batch item failures "
                    f"(FunctionResponseTypes lacks {REPORT_FAILURES})"
                )
            if queue not in inv.queues:
                report.problems.append(f"mapping {queue} → {state.name}: queue does not exist")
            elif queue not in template_queues:  # those are checked with the templates
                _check_dlq(queue, inv, report)


def _check_async(
    target: Target, functions: list[FunctionState], inv: Inventory, report: DoctorReport
) -> None:
    lam = target.client("lambda")
    for state in functions:
        if not state.async_triggers:
            continue
        report.count("async functions")
        try:
            config: dict[str, Any] = lam.get_function_event_invoke_config(FunctionName=state.name)
        except Exception:
            config = {}
        destination = ((config.get("DestinationConfig") or {}).get("OnFailure") or {}).get(
            "Destination"
        )
        triggers = ", ".join(state.async_triggers)
        if not destination:
            report.problems.append(
                f"function {state.name} ({triggers}) has no on-failure destination"
            )
        elif ":sqs:" in destination and destination not in inv.queue_arns:
            report.problems.append(
                f"function {state.name}: its on-failure destination {destination} does not exist"
            )


def _check_subscriptions(
    target: Target, stacks: list[StackSpec], functions: list[FunctionState], report: DoctorReport
) -> None:
    sns = target.client("sns")
    for spec in stacks:
        resolver = resolver_for(target, spec)
        for logical in spec.resources("AWS::SNS::Subscription"):
            props = resolver.properties(logical)
            report.count("subscriptions")
            label = f"subscription {props['Protocol']}:{props['Endpoint'].rsplit(':', 1)[-1]}"
            sub = _find_subscription(sns, props["TopicArn"], props["Endpoint"])
            if sub is None:
                report.problems.append(f"{label} to {props['TopicArn']} does not exist")
                continue
            _compare_filter(sns, sub, props.get("FilterPolicy"), label, report)
        meta = spec.sluice_metadata
        if meta.get("Direct"):
            consumer_functions = [f for f in functions if f.app.key == spec.role]
            for state in consumer_functions:
                report.count("subscriptions")
                if not state.sns_subscriptions:
                    report.problems.append(f"direct consumer {state.name} has no subscription")
                for direct in state.sns_subscriptions:
                    label = f"subscription of {state.name} to {direct['TopicArn']}"
                    _compare_filter(
                        sns, direct["SubscriptionArn"], meta.get("FilterPolicy"), label, report
                    )


def _find_subscription(sns: Any, topic: str, endpoint: str) -> str | None:
    try:
        pages = list(sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic))
    except Exception:
        return None
    for page in pages:
        for sub in page["Subscriptions"]:
            if sub["Endpoint"] == endpoint:
                return str(sub["SubscriptionArn"])
    return None


def _compare_filter(
    sns: Any, subscription: str, wanted: Any, label: str, report: DoctorReport
) -> None:
    if wanted is None:
        return
    if isinstance(wanted, str):
        wanted = json.loads(wanted)
    current, _scope = filter_policy_of(sns, subscription)
    if current is None:
        report.problems.append(f"{label} lacks its filter policy")
    elif current != wanted:
        report.problems.append(
            f"{label} has filter policy {json.dumps(current)}, the template says "
            f"{json.dumps(wanted)}"
        )


_ARN = re.compile(r"^arn:[a-z-]+:(sqs|sns|s3|dynamodb):[^:]*:[^:]*:(?:table/)?([^/:]+)")
_QUEUE_URL = re.compile(r"^https?://[^/]+/\d{12}/([^/]+)$")


def resource_name_in(value: str, prefix: str, stage: str) -> str | None:
    """The Sluice resource a variable's value names (name, ARN or queue URL), else None."""
    for pattern in (_ARN, _QUEUE_URL):
        match = pattern.match(value)
        if match:
            value = match.group(match.lastindex or 1)
            break
    if re.fullmatch(rf"{re.escape(prefix)}-[a-z0-9-]+", value):
        return value
    return None


def _check_environment(
    target: Target, functions: list[FunctionState], inv: Inventory, report: DoctorReport
) -> None:
    existing = inv.names()
    for state in functions:
        report.count("environments")
        stage = state.environment.get("SLUICE_STAGE")
        if stage != target.stage:
            report.problems.append(
                f"function {state.name}: SLUICE_STAGE is {stage!r}, not {target.stage!r}"
            )
        for key, value in sorted(state.environment.items()):
            name = resource_name_in(value, target.prefix, target.stage)
            if name and name not in existing:
                report.problems.append(
                    f"function {state.name}: {key}={value} names {name}, which does not exist"
                )
