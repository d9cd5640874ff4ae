"""The deployed state of a stage's functions, read back from the APIs (read-only).

What feeds each function: SQS event source mappings, and async triggers (S3 notifications on
the stage's buckets, SNS subscriptions on its topics, EventBridge rules).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sluice_tools.deploy.apps import AppSpec
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import Resolver, StackSpec


@dataclass
class FunctionState:
    """One deployed function of an app and what triggers it."""

    name: str
    arn: str
    app: AppSpec
    environment: dict[str, str]
    sqs_mappings: list[dict[str, Any]] = field(default_factory=list)
    async_triggers: list[str] = field(default_factory=list)  # "s3:bucket", "sns:arn", ...
    sns_subscriptions: list[dict[str, Any]] = field(default_factory=list)  # protocol lambda


def function_name_of(arn: str) -> str:
    """`arn:aws:lambda:region:acct:function:NAME[:qualifier]` → NAME."""
    parts = arn.split(":")
    return parts[6] if len(parts) > 6 else arn


def resolver_for(target: Target, spec: StackSpec) -> Resolver:
    """A resolver for `spec` with names computed for the target (no stack lookup needed)."""
    return target.placement().resolver(spec)


def template_names(target: Target, stacks: list[StackSpec], type_: str) -> list[str]:
    """Resolved names of every resource of `type_` in the stage's templates."""
    names = []
    for spec in stacks:
        resolver = resolver_for(target, spec)
        names += [resolver.name_of(logical) for logical in spec.resources(type_)]
    return names


def read_functions(
    target: Target, apps: list[AppSpec], stacks: list[StackSpec]
) -> list[FunctionState]:
    """Every deployed function of `apps` in the target stage, with its triggers."""
    lam = target.client("lambda")
    prefixes = {app.function_prefix(target.stage): app for app in apps}
    functions: dict[str, FunctionState] = {}
    for page in lam.get_paginator("list_functions").paginate():
        for fn in page["Functions"]:
            for prefix, app in prefixes.items():
                if fn["FunctionName"].startswith(prefix):
                    env = (fn.get("Environment") or {}).get("Variables") or {}
                    functions[fn["FunctionName"]] = FunctionState(
                        name=fn["FunctionName"], arn=fn["FunctionArn"], app=app, environment=env
                    )
    # All mappings, matched by FunctionArn: moto filters FunctionName= by the exact string
    # the mapping was created with (Chalice passes the ARN), AWS by name or ARN.
    for page in lam.get_paginator("list_event_source_mappings").paginate():
        for mapping in page["EventSourceMappings"]:
            found = functions.get(function_name_of(mapping.get("FunctionArn", "")))
            if found and ":sqs:" in mapping.get("EventSourceArn", ""):
                found.sqs_mappings.append(mapping)

    s3 = target.client("s3")
    existing_buckets = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in template_names(target, stacks, "AWS::S3::Bucket"):
        if bucket not in existing_buckets:
            continue
        config = s3.get_bucket_notification_configuration(Bucket=bucket)
        for item in config.get("LambdaFunctionConfigurations", []):
            found = functions.get(function_name_of(item["LambdaFunctionArn"]))
            if found and f"s3:{bucket}" not in found.async_triggers:
                found.async_triggers.append(f"s3:{bucket}")

    sns = target.client("sns")
    for topic in stage_topic_arns(target, stacks):
        try:
            pages = list(sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic))
        except Exception:  # the topic is missing: doctor reports resources, not this
            continue
        for page in pages:
            for sub in page["Subscriptions"]:
                if sub["Protocol"] != "lambda":
                    continue
                found = functions.get(function_name_of(sub["Endpoint"]))
                if found:
                    found.async_triggers.append(f"sns:{topic}")
                    found.sns_subscriptions.append(sub)

    events = target.client("events")
    for state in functions.values():
        rules = events.list_rule_names_by_target(TargetArn=state.arn).get("RuleNames", [])
        state.async_triggers += [f"events:{rule}" for rule in rules]
    return sorted(functions.values(), key=lambda s: s.name)


def stage_topic_arns(target: Target, stacks: list[StackSpec]) -> list[str]:
    arns = []
    for spec in stacks:
        resolver = resolver_for(target, spec)
        arns += [resolver.get_att(t, "TopicArn") for t in spec.resources("AWS::SNS::Topic")]
    return arns


def filter_policy_of(sns: Any, subscription_arn: str) -> tuple[Any, str | None]:
    """(filter policy as a value or None, its scope) of a subscription."""
    attrs = sns.get_subscription_attributes(SubscriptionArn=subscription_arn)["Attributes"]
    raw = attrs.get("FilterPolicy")
    return (json.loads(raw) if raw else None), attrs.get("FilterPolicyScope")
