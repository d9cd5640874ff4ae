"""What Chalice cannot set, applied after `chalice deploy` (idempotent; re-run every deploy).

ReportBatchItemFailures on SQS mappings (a recreated mapping loses it), an on-failure
destination and retry count for async triggers, and direct SNS consumers' filter policies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from sluice_tools.deploy.state import FunctionState, filter_policy_of
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import StackSpec, as_json

REPORT_FAILURES = "ReportBatchItemFailures"
ASYNC_RETRIES = 2


class PostDeployError(RuntimeError):
    """A setting could not be applied (e.g. an async function has no failures queue)."""


def failure_queue_name(target: Target, state: FunctionState) -> str:
    return target.names.async_failure_queue(state.app.key)


def apply_post_deploy(
    target: Target,
    functions: list[FunctionState],
    stacks: list[StackSpec],
    log: Callable[[str], None] = print,
    known_uuids: set[str] | None = None,
) -> list[str]:
    """Apply every post-deploy setting to `functions`; returns what changed.

    `known_uuids`: the mapping ids Chalice recorded (.chalice/deployed/<stage>.json).
    """
    lam, sqs, sns = target.client("lambda"), target.client("sqs"), target.client("sns")
    changed: list[str] = []
    for state in functions:
        changed += _drop_duplicate_mappings(lam, state, known_uuids or set())
        for mapping in state.sqs_mappings:
            if REPORT_FAILURES not in (mapping.get("FunctionResponseTypes") or []):
                lam.update_event_source_mapping(
                    UUID=mapping["UUID"], FunctionResponseTypes=[REPORT_FAILURES]
                )
                queue = mapping["EventSourceArn"].rsplit(":", 1)[-1]
                changed.append(f"{state.name}: {REPORT_FAILURES} on its mapping of {queue}")

        if state.async_triggers:
            queue = failure_queue_name(target, state)
            try:
                url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
            except Exception as exc:
                raise PostDeployError(
                    f"{state.name} has async triggers ({', '.join(state.async_triggers)}) but "
                    f"its failures queue {queue} does not exist: add it to the app's template"
                ) from exc
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            if _invoke_config(lam, state.name) != (ASYNC_RETRIES, arn):
                put = lam.put_function_event_invoke_config
                if target.emulator:
                    from sluice_tools.motocompat.cfn import put_function_event_invoke_config

                    put = partial(put_function_event_invoke_config, lam)
                put(
                    FunctionName=state.name,
                    MaximumRetryAttempts=ASYNC_RETRIES,
                    DestinationConfig={"OnFailure": {"Destination": arn}},
                )
                changed.append(f"{state.name}: on failure → {queue}, {ASYNC_RETRIES} retries")

    for spec in stacks:
        meta = spec.sluice_metadata
        if not meta.get("Direct") or "FilterPolicy" not in meta:
            continue
        consumer = spec.role  # consumer-<name>
        for state in functions:
            if state.app.key != consumer:
                continue
            for sub in state.sns_subscriptions:
                wanted = meta["FilterPolicy"]
                current, scope = filter_policy_of(sns, sub["SubscriptionArn"])
                wanted_scope = meta.get("FilterPolicyScope", "MessageAttributes")
                if scope != wanted_scope:
                    sns.set_subscription_attributes(
                        SubscriptionArn=sub["SubscriptionArn"],
                        AttributeName="FilterPolicyScope",
                        AttributeValue=wanted_scope,
                    )
                if current != wanted:
                    sns.set_subscription_attributes(
                        SubscriptionArn=sub["SubscriptionArn"],
                        AttributeName="FilterPolicy",
                        AttributeValue=as_json(wanted),
                    )
                    changed.append(f"{state.name}: filter policy on its subscription")
    for line in changed:
        log(f"  {line}")
    return changed


def _invoke_config(lam: Any, function: str) -> tuple[int | None, str | None]:
    """(retries, on-failure destination) of a function's async invoke config, if any."""
    try:
        config = lam.get_function_event_invoke_config(FunctionName=function)
    except Exception:  # ResourceNotFoundException: never configured
        return (None, None)
    destination = ((config.get("DestinationConfig") or {}).get("OnFailure") or {}).get(
        "Destination"
    )
    return (config.get("MaximumRetryAttempts"), destination)


def _drop_duplicate_mappings(lam: Any, state: FunctionState, known: set[str]) -> list[str]:
    """Keep one mapping per (function, queue): the one Chalice knows, else the newest.

    Against moto, `chalice deploy` now and then fails to recognise its own mapping and
    creates a second one (seen about one run in three); two mappings would deliver every
    message twice. Deleting the extra makes a re-deploy harmless.
    """
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for mapping in state.sqs_mappings:
        by_queue.setdefault(mapping["EventSourceArn"], []).append(mapping)
    dropped = []
    for queue_arn, mappings in by_queue.items():
        if len(mappings) < 2:
            continue
        mappings.sort(key=lambda m: (m["UUID"] in known, m.get("LastModified") or 0))
        for extra in mappings[:-1]:
            lam.delete_event_source_mapping(UUID=extra["UUID"])
            state.sqs_mappings.remove(extra)
            dropped.append(
                f"{state.name}: deleted duplicate mapping {extra['UUID']} of "
                f"{queue_arn.rsplit(':', 1)[-1]}"
            )
    return dropped


def chalice_mapping_uuids(app_dir: Path, stage: str) -> set[str]:
    """Event source mapping ids in Chalice's deployed state of `app_dir` for `stage`."""
    path = app_dir / ".chalice" / "deployed" / f"{stage}.json"
    if not path.is_file():
        return set()
    resources = json.loads(path.read_text(encoding="utf-8")).get("resources") or []
    return {str(r["event_uuid"]) for r in resources if r.get("event_uuid")}
