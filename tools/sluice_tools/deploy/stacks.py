"""Create or update one CloudFormation stack and wait for it; a failure names its events.

"No updates are to be performed" is success. A stack left in ROLLBACK_COMPLETE by a failed
first create cannot be updated: it is deleted and created again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import StackSpec

IN_PROGRESS = "_IN_PROGRESS"
SUCCESS = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"}
POLL_MAX_S = 5.0
TIMEOUT_S = 3600.0
# Parameters an operator sets per stage, from the environment of `sluice deploy`; when the
# variable is unset, a deployed stack keeps the value it has (not the template's default).
OPERATOR_PARAMETERS = {"OpsEmail": "SLUICE_OPS_EMAIL"}  # who the ops topic mails


class StackError(RuntimeError):
    """A stack ended in a failed state; the message is a readable report of its events."""


@dataclass(frozen=True)
class StackResult:
    name: str
    action: str  # created | updated | unchanged
    outputs: dict[str, str]


def deploy_stack(
    target: Target, spec: StackSpec, log: Callable[[str], None] = print
) -> StackResult:
    """Create `spec`'s stack, or update it; wait until it is complete."""
    cfn = target.client("cloudformation")
    common: dict[str, Any] = {
        "StackName": spec.name,
        "TemplateBody": spec.text,
        "Tags": [{"Key": "sluice:stage", "Value": target.stage}],
    }
    status = stack_status(cfn, spec.name)
    if status == "ROLLBACK_COMPLETE":
        log(f"  {spec.name}: left in ROLLBACK_COMPLETE by a failed create; deleting it first")
        cfn.delete_stack(StackName=spec.name)
        _wait(cfn, spec.name, since=0.0, deleting=True)
        status = None
    started = time.time()
    if status is None:
        log(f"  {spec.name}: creating from {spec.path.name}")
        cfn.create_stack(**common, Parameters=stack_parameters(target, spec), OnFailure="ROLLBACK")
        action = "created"
    else:
        previous = deployed_parameters(cfn, spec.name)
        try:
            cfn.update_stack(**common, Parameters=stack_parameters(target, spec, previous))
        except Exception as exc:
            if "No updates are to be performed" in str(exc):
                log(f"  {spec.name}: no changes")
                return StackResult(spec.name, "unchanged", _outputs(cfn, spec.name))
            raise
        log(f"  {spec.name}: updating")
        action = "updated"
    final = _wait(cfn, spec.name, since=started)
    if final not in SUCCESS:
        raise StackError(failure_report(cfn, spec.name, final, since=started))
    log(f"  {spec.name}: {final}")
    return StackResult(spec.name, action, _outputs(cfn, spec.name))


def stack_parameters(
    target: Target, spec: StackSpec, previous: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """The target's parameters that `spec`'s template declares, as the API takes them, and
    the operator's (`OPERATOR_PARAMETERS`): from the environment if set, else the deployed
    stack's value (`previous`: its parameters), else the default. The value is passed, not
    UsePreviousValue: moto 5.2.5 fails that for a parameter left at its default."""
    declared = spec.body.get("Parameters") or {}
    found = [
        {"ParameterKey": k, "ParameterValue": v}
        for k, v in target.parameters().items()
        if k in declared
    ]
    for key, variable in OPERATOR_PARAMETERS.items():
        if key not in declared:
            continue
        if variable in os.environ:
            found.append({"ParameterKey": key, "ParameterValue": os.environ[variable]})
        elif previous and key in previous:
            found.append({"ParameterKey": key, "ParameterValue": previous[key]})
    return found


def deployed_parameters(cfn: Any, name: str) -> dict[str, str]:
    """{key: value} of the parameters the stack `name` was last deployed with."""
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}


def stack_status(cfn: Any, name: str) -> str | None:
    """The stack's status, None when there is none (or it was deleted)."""
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except Exception as exc:
        if "does not exist" in str(exc):
            return None
        raise
    if not stacks or stacks[0]["StackStatus"] == "DELETE_COMPLETE":
        return None
    return str(stacks[0]["StackStatus"])


def _wait(cfn: Any, name: str, since: float, deleting: bool = False) -> str | None:
    delay, deadline = 0.2, time.monotonic() + TIMEOUT_S
    while True:
        status = stack_status(cfn, name)
        if status is None and deleting:
            return None
        if status is None or not status.endswith(IN_PROGRESS):
            return status
        if time.monotonic() > deadline:
            raise StackError(f"{name}: still {status} after {TIMEOUT_S:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, POLL_MAX_S)


def _outputs(cfn: Any, name: str) -> dict[str, str]:
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}


def failure_report(cfn: Any, name: str, status: str | None, since: float) -> str:
    """The stack's failed events since `since` (epoch seconds), oldest first."""
    lines = [f"stack {name} ended in {status}; failed resources:"]
    events = []
    for page in cfn.get_paginator("describe_stack_events").paginate(StackName=name):
        events.extend(page["StackEvents"])
    failed = [
        e
        for e in events
        if e["ResourceStatus"].endswith("_FAILED") and e["Timestamp"].timestamp() >= since - 1
    ]
    for e in sorted(failed, key=lambda e: e["Timestamp"]):
        lines.append(
            f"  {e.get('LogicalResourceId', '?')} ({e.get('ResourceType', '?')}): "
            f"{e['ResourceStatus']} - {e.get('ResourceStatusReason', 'no reason given')}"
        )
    if len(lines) == 1:
        lines.append("  (no failed events reported; see the stack's events in the console)")
    return "\n".join(lines)
