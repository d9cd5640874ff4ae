"""`sluice doctor`: read a deployed stage and list what makes it unsafe to run.

Every queue, subscription and alarm of the templates exists with the attributes the
templates declare (redrive policy and its DLQ, visibility timeout, filter policy, ...: see
`drift`), and every mapped queue's visibility timeout is at least its function's timeout;
every SQS mapping reports batch item failures; every async function sends failures to its
app's queue; direct subscriptions carry their filter policy; function environments name only
resources that exist. Each finding names the command that repairs it. Read-only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sluice_tools.deploy.apps import AppSpec, discover_apps, select_apps
from sluice_tools.deploy.drift import QUEUE, Drift, find_drift
from sluice_tools.deploy.glue import catalog_problems
from sluice_tools.deploy.post_deploy import ASYNC_RETRIES, REPORT_FAILURES, failure_queue_name
from sluice_tools.deploy.registry_check import TAG as REGISTRY_TAG
from sluice_tools.deploy.registry_check import registry_findings, registry_tag
from sluice_tools.deploy.state import (
    FunctionState,
    filter_policy_of,
    read_functions,
    resolver_for,
)
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import StackSpec, stage_stacks


@dataclass(frozen=True)
class Finding:
    """One problem: the resource, what was expected and what is there; how to repair it."""

    text: str
    repair: str | None = None  # a command


@dataclass
class DoctorReport:
    """Findings (empty: healthy) and how many things of each kind were checked."""

    stage: str
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def problems(self) -> list[str]:
        return [f.text for f in self.findings]

    def add(self, text: str, repair: str | None = None) -> None:
        self.findings.append(Finding(text, repair))

    def count(self, kind: str, n: int = 1) -> None:
        self.checked[kind] = self.checked.get(kind, 0) + n

    def render(self) -> str:
        counts = ", ".join(f"{n} {kind}" for kind, n in self.checked.items())
        if self.ok:
            return f"doctor: stage {self.stage} OK ({counts})"
        lines = [f"doctor: stage {self.stage} has {len(self.findings)} problem(s):"]
        for finding in self.findings:
            lines.append(f"  - {finding.text}")
            if finding.repair:
                lines.append(f"    repair: {finding.repair}")
        lines.append(f"checked: {counts}")
        return "\n".join(lines)


def repair_command(target: Target, only: str | None = None) -> str:
    """The deploy that applies a stage's declared settings again (`only`: one app's)."""
    words = ["sluice deploy", f"--stage {target.stage}"]
    if target.prefix != "sluice":
        words.append(f"--prefix {target.prefix}")
    if only:
        words.append(f"--only {only}")
    return " ".join(words)


def stack_repair(target: Target, spec: StackSpec) -> str:
    """The platform stack goes with every deploy; a consumer's stack with its app."""
    consumer = spec.role.removeprefix("consumer-") if spec.role != "platform" else None
    return repair_command(target, f"consumers/{consumer}" if consumer else None)


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
    functions = read_functions(target, apps, stacks)
    drifts = find_drift(target, stacks)
    _check_queues(target, stacks, inventory, drifts, mapped_timeouts(target, functions), report)
    _check_subscriptions_and_alarms(target, stacks, drifts, report)
    _check_functions_exist(target, apps, functions, report)
    _check_mappings(target, functions, inventory, set(_template_queues(target, stacks)[0]), report)
    _check_async(target, functions, inventory, report)
    _check_direct_subscriptions(target, stacks, functions, report)
    _check_environment(target, functions, inventory, report)
    _check_registry(target, functions, report)
    platform = stacks[0]  # its Glue tables: one per registered record type (deploy/glue.py)
    for problem in catalog_problems(
        target.client("glue"), platform, resolver_for(target, platform)
    ):
        report.add(problem, repair_command(target))
    report.count("Glue tables", len(platform.resources("AWS::Glue::Table")))
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


def mapped_timeouts(
    target: Target, functions: list[FunctionState]
) -> dict[str, list[tuple[str, int]]]:
    """{queue name: [(function, its timeout in s)]} of every SQS mapping of `functions`."""
    lam = target.client("lambda")
    found: dict[str, list[tuple[str, int]]] = {}
    for state in functions:
        if not state.sqs_mappings:
            continue
        timeout = int(lam.get_function_configuration(FunctionName=state.name)["Timeout"])
        for mapping in state.sqs_mappings:
            queue = mapping["EventSourceArn"].rsplit(":", 1)[-1]
            if (state.name, timeout) not in found.get(queue, []):
                found.setdefault(queue, []).append((state.name, timeout))
    return found


def _check_queues(
    target: Target,
    stacks: list[StackSpec],
    inv: Inventory,
    drifts: list[Drift],
    timeouts: dict[str, list[tuple[str, int]]],
    report: DoctorReport,
) -> None:
    names, terminal = _template_queues(target, stacks)
    by_queue: dict[str, list[Drift]] = {}
    for drift in drifts:
        if drift.kind == QUEUE:
            by_queue.setdefault(drift.name, []).append(drift)
    for spec in stacks:
        repair = stack_repair(target, spec)
        for logical in spec.resources("AWS::SQS::Queue"):
            name = resolver_for(target, spec).name_of(logical)
            report.count("queues")
            found = by_queue.get(name, [])
            if any(d.missing for d in found):
                report.add(f"queue {name} does not exist", repair)
                continue
            for drift in found:
                report.add(_queue_drift_text(drift, timeouts.get(name, [])), repair)
            redrive_drifted = any(d.attribute == "RedrivePolicy" for d in found)
            if name not in terminal and not redrive_drifted:
                _check_dlq(name, inv, report, repair)
    for name, users in sorted(timeouts.items()):
        drifted = any(d.attribute == "VisibilityTimeout" for d in by_queue.get(name, []))
        if drifted or name not in inv.queues:  # reported above
            continue
        visibility = int(inv.queues[name].get("VisibilityTimeout") or 0)
        for function, timeout in users:
            if visibility < timeout:
                where = "raise it in its template" if name in names else "set it"
                report.add(
                    f"queue {name}: VisibilityTimeout is {visibility}, below the {timeout} s "
                    f"timeout of {function} (AWS requires at least the function's timeout, "
                    f"the design 6 x: {6 * timeout}): {where}"
                )


def _queue_drift_text(drift: Drift, users: list[tuple[str, int]]) -> str:
    if drift.attribute == "RedrivePolicy" and drift.actual is None:
        return (
            f"queue {drift.name} has no DLQ (no RedrivePolicy); the template says {drift.expected}"
        )
    text = drift.describe()
    if drift.attribute == "VisibilityTimeout" and users:
        notes = [
            f"{function} has a {timeout} s timeout: AWS requires at least {timeout}, "
            f"the design 6 x: {6 * timeout}"
            for function, timeout in users
        ]
        text += f" ({'; '.join(notes)})"
    return text


def _check_dlq(name: str, inv: Inventory, report: DoctorReport, repair: str | None) -> None:
    raw = inv.queues[name].get("RedrivePolicy")
    if not raw:
        report.add(f"queue {name} has no DLQ (no RedrivePolicy)", repair)
        return
    dlq_arn = json.loads(raw).get("deadLetterTargetArn", "")
    if dlq_arn not in inv.queue_arns:
        report.add(
            f"queue {name} has no DLQ: its RedrivePolicy points to {dlq_arn}, which does not exist",
            repair,
        )


def _check_subscriptions_and_alarms(
    target: Target, stacks: list[StackSpec], drifts: list[Drift], report: DoctorReport
) -> None:
    """Those of the templates: found by `find_drift` (queues are checked with their DLQs)."""
    for spec in stacks:
        report.count("subscriptions", len(spec.resources("AWS::SNS::Subscription")))
        report.count("alarms", len(spec.resources("AWS::CloudWatch::Alarm")))
    for drift in drifts:
        if drift.kind == QUEUE:
            continue
        text = drift.describe()
        if drift.attribute == "FilterPolicy" and drift.actual is None:
            text = f"subscription {drift.name} lacks its filter policy {drift.expected}"
        report.add(text, stack_repair(target, drift.stack))


def _check_functions_exist(
    target: Target, apps: list[AppSpec], functions: list[FunctionState], report: DoctorReport
) -> None:
    deployed = {f.name for f in functions}
    for app in apps:
        for handler in app.handlers(target.stage):
            report.count("functions")
            name = app.function_name(target.stage, handler)
            if name not in deployed:
                report.add(
                    f"function {name} ({app.rel}) is not deployed",
                    repair_command(target, app.rel),
                )


def _check_mappings(
    target: Target,
    functions: list[FunctionState],
    inv: Inventory,
    template_queues: set[str],
    report: DoctorReport,
) -> None:
    for state in functions:
        repair = repair_command(target, state.app.rel)
        sources = [m["EventSourceArn"] for m in state.sqs_mappings]
        for arn in sorted({a for a in sources if sources.count(a) > 1}):
            report.add(
                f"function {state.name} has {sources.count(arn)} mappings from "
                f"{arn.rsplit(':', 1)[-1]}: every message would be delivered more than once",
                repair,
            )
        for mapping in state.sqs_mappings:
            report.count("mappings")
            queue = mapping["EventSourceArn"].rsplit(":", 1)[-1]
            if REPORT_FAILURES not in (mapping.get("FunctionResponseTypes") or []):
                report.add(
                    f"mapping {queue} → {state.name} does not report batch item failures "
                    f"(FunctionResponseTypes is {mapping.get('FunctionResponseTypes') or []}, "
                    f"expected [{REPORT_FAILURES}])",
                    repair,
                )
            if queue not in inv.queues:
                report.add(f"mapping {queue} → {state.name}: queue does not exist")
            elif queue not in template_queues:  # those are checked with the templates
                _check_dlq(queue, inv, report, None)


def _check_async(
    target: Target, functions: list[FunctionState], inv: Inventory, report: DoctorReport
) -> None:
    lam = target.client("lambda")
    for state in functions:
        if not state.async_triggers:
            continue
        report.count("async functions")
        repair = repair_command(target, state.app.rel)
        try:
            config: dict[str, Any] = lam.get_function_event_invoke_config(FunctionName=state.name)
        except Exception:
            config = {}
        destination = ((config.get("DestinationConfig") or {}).get("OnFailure") or {}).get(
            "Destination"
        )
        triggers = ", ".join(state.async_triggers)
        queue = failure_queue_name(target, state)
        if not destination:
            report.add(
                f"function {state.name} ({triggers}) has no on-failure destination "
                f"(expected {queue})",
                repair,
            )
        elif ":sqs:" in destination and destination not in inv.queue_arns:
            report.add(
                f"function {state.name}: its on-failure destination {destination} does not exist",
                repair,
            )
        elif destination.rsplit(":", 1)[-1] != queue:
            report.add(
                f"function {state.name}: on-failure destination is {destination}, "
                f"expected its app's queue {queue}",
                repair,
            )
        if config and config.get("MaximumRetryAttempts") != ASYNC_RETRIES:
            report.add(
                f"function {state.name}: MaximumRetryAttempts is "
                f"{config.get('MaximumRetryAttempts')}, expected {ASYNC_RETRIES}",
                repair,
            )


def _check_direct_subscriptions(
    target: Target, stacks: list[StackSpec], functions: list[FunctionState], report: DoctorReport
) -> None:
    """Chalice's subscriptions of direct consumers carry the filter in Metadata.Sluice."""
    sns = target.client("sns")
    for spec in stacks:
        meta = spec.sluice_metadata
        if not meta.get("Direct"):
            continue
        repair = stack_repair(target, spec)
        for state in (f for f in functions if f.app.key == spec.role):
            report.count("subscriptions")
            if not state.sns_subscriptions:
                report.add(f"direct consumer {state.name} has no subscription", repair)
            for direct in state.sns_subscriptions:
                label = f"subscription of {state.name} to {direct['TopicArn']}"
                wanted = meta.get("FilterPolicy")
                if wanted is None:
                    continue
                if isinstance(wanted, str):
                    wanted = json.loads(wanted)
                current, scope = filter_policy_of(sns, direct["SubscriptionArn"])
                wanted_scope = meta.get("FilterPolicyScope", "MessageAttributes")
                if current is None:
                    report.add(f"{label} lacks its filter policy {json.dumps(wanted)}", repair)
                elif current != wanted:
                    report.add(
                        f"{label} has filter policy {json.dumps(current)}, the template says "
                        f"{json.dumps(wanted)}",
                        repair,
                    )
                if current is not None and (scope or "MessageAttributes") != wanted_scope:
                    report.add(
                        f"{label}: FilterPolicyScope is {scope}, the template says {wanted_scope}",
                        repair,
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


def _check_registry(target: Target, functions: list[FunctionState], report: DoctorReport) -> None:
    """Each function ships the registry of the checkout's types/ (its deploy tag)."""
    if not (target.root / "types").is_dir():
        return
    lam = target.client("lambda")
    tags = {
        state.name: lam.list_tags(Resource=state.arn).get("Tags", {}).get(REGISTRY_TAG)
        for state in functions
    }
    apps = {state.name: state.app.rel for state in functions}
    report.count("registry copies", len(tags))
    for function, text in registry_findings(tags, registry_tag(target.root)):
        report.add(text, repair_command(target, apps[function]))


def _check_environment(
    target: Target, functions: list[FunctionState], inv: Inventory, report: DoctorReport
) -> None:
    existing = inv.names()
    for state in functions:
        report.count("environments")
        stage = state.environment.get("SLUICE_STAGE")
        if stage != target.stage:
            report.add(
                f"function {state.name}: SLUICE_STAGE is {stage!r}, not {target.stage!r}",
                repair_command(target, state.app.rel),
            )
        for key, value in sorted(state.environment.items()):
            name = resource_name_in(value, target.prefix, target.stage)
            if name and name not in existing:
                report.add(
                    f"function {state.name}: {key}={value} names {name}, which does not exist",
                    repair_command(target),
                )
