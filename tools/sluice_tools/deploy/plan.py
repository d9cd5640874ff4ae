"""`sluice deploy --plan`: what a deploy would do, applying nothing.

Renders every app as the deploy would (into the same build copies, so a person can `cd`
there and run `chalice deploy` themselves), prints each function's environment and IAM
policy, then the changes: a CloudFormation change set per stack (created, described,
deleted; a stack that did not exist is deleted again), and `chalice dev plan` per app.
Where a service cannot tell (moto implements change sets partly), the plan says
"changes unknown: <reason>" instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sluice_tools.deploy.apps import discover_apps, select_apps
from sluice_tools.deploy.build import build_copy, build_lock
from sluice_tools.deploy.chalice_deploy import chalice_command
from sluice_tools.deploy.declaration import DeclarationError
from sluice_tools.deploy.render import RenderedApp, template_inventory
from sluice_tools.deploy.stacks import deployed_parameters, stack_parameters, stack_status
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import StackSpec, stage_stacks
from sluice_tools.deploy.vendor import vendor_for_deploy

CHANGE_SET_WAIT_S = 300.0
_PENDING = {"CREATE_PENDING", "CREATE_IN_PROGRESS"}
_API_CALL = re.compile(r"API_CALL\s*\S\s*method_name:\s*(\S+)")


class PlanError(RuntimeError):
    """The plan could not be made (an app that does not render, an unknown app)."""


def plan_stage(
    target: Target,
    only: list[str] | None = None,
    *,
    build_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> list[RenderedApp]:
    """Print what deploying `target` would change; returns the rendered apps."""
    build_root = build_dir or target.build_root
    with build_lock(build_root):
        return _plan(target, only, build_root, build_dir is None, log)


def _plan(
    target: Target,
    only: list[str] | None,
    build_root: Path,
    seed_state: bool,
    log: Callable[[str], None],
) -> list[RenderedApp]:
    try:
        apps = select_apps(discover_apps(target.root), only)
    except ValueError as exc:
        raise PlanError(str(exc)) from exc
    consumers = [a.path.name for a in apps if a.key.startswith("consumer-")]
    stacks = stage_stacks(
        target.root, target.stage, target.prefix, consumers=consumers if only else None
    )
    place = target.placement()
    inventory = template_inventory(target.root, place)
    copies: list[tuple[Path, RenderedApp]] = []
    try:
        for app in apps:
            copies.append(build_copy(app, place, build_root, inventory, seed_state=seed_state))
    except DeclarationError as exc:
        raise PlanError(f"cannot render the apps: {exc}") from exc

    where = "the emulator" if target.emulator else f"AWS {target.region}"
    log(
        f"plan for stage {target.stage} (prefix {target.prefix}) in {where}, account "
        f"{place.account}, partition {place.partition}; nothing is applied"
    )
    log("functions:")
    for _, rendered in copies:
        for function in sorted(rendered.policies):
            log(f"  {rendered.function_name(function)}:")
            log(f"    environment: {json.dumps(rendered.environment(function), sort_keys=True)}")
            policy = json.dumps(rendered.policies[function], indent=2).replace("\n", "\n      ")
            log(f"    policy:\n      {policy}")

    log("stacks:")
    for spec in stacks:
        for line in stack_changes(target, spec):
            log(f"  {spec.name}: {line}")

    log("apps (the API calls `chalice dev plan` says a deploy would make):")
    for app_dir, rendered in copies:
        vendor_for_deploy(app_dir, target.root)
        log(f"  {rendered.app.rel} ({app_dir}):")
        for line in chalice_plan(app_dir, target):
            log(f"    {line}")
    return [rendered for _, rendered in copies]


def stack_changes(target: Target, spec: StackSpec) -> list[str]:
    """The changes a deploy would make to `spec`'s stack, one line each."""
    cfn = target.client("cloudformation")
    status = stack_status(cfn, spec.name)
    exists = status is not None and status != "REVIEW_IN_PROGRESS"
    name = f"sluice-plan-{uuid.uuid4().hex[:12]}"
    # The operator's parameters (OpsEmail) keep their deployed values, as in a deploy.
    previous = deployed_parameters(cfn, spec.name) if exists else {}
    try:
        created = cfn.create_change_set(
            StackName=spec.name,
            ChangeSetName=name,
            TemplateBody=spec.text,
            Parameters=stack_parameters(target, spec, previous),
            ChangeSetType="UPDATE" if exists else "CREATE",
        )
    except Exception as exc:
        if "No updates are to be performed" in str(exc):  # moto says so up front
            return ["no changes"]
        return [f"changes unknown: the change set was refused ({_short(exc)})"]
    change_set = created.get("Id") or name
    try:
        return _describe(cfn, spec.name, change_set, exists)
    finally:
        _discard(cfn, spec.name, change_set, exists)


def _describe(cfn: Any, stack: str, change_set: str, exists: bool) -> list[str]:
    deadline = time.monotonic() + CHANGE_SET_WAIT_S
    while True:
        try:
            found = cfn.describe_change_set(StackName=stack, ChangeSetName=change_set)
        except Exception as exc:
            return [f"changes unknown: the change set cannot be read ({_short(exc)})"]
        if found.get("Status") not in _PENDING or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    reason = str(found.get("StatusReason") or "")
    if found.get("Status") == "FAILED":
        if "didn't contain changes" in reason or "No updates" in reason:
            return ["no changes"]
        return [f"changes unknown: {reason or 'the change set failed'}"]
    changes = found.get("Changes") or []
    if not changes:
        if exists:
            return ["changes unknown: the service listed none (moto does not compare templates)"]
        return ["create (the service listed no resources)"]
    lines = []
    for change in changes:
        rc = change.get("ResourceChange") or {}
        replace = rc.get("Replacement")
        extra = f" (replacement: {replace})" if replace not in (None, "", "False") else ""
        lines.append(
            f"{rc.get('Action', '?')} {rc.get('LogicalResourceId', '?')} "
            f"({rc.get('ResourceType', '?')}){extra}"
        )
    return lines


def _discard(cfn: Any, stack: str, change_set: str, existed: bool) -> None:
    """Delete the change set, and the empty stack a CREATE change set leaves behind."""
    with contextlib.suppress(Exception):  # a FAILED change set may be gone already
        cfn.delete_change_set(StackName=stack, ChangeSetName=change_set)
    if not existed and stack_status(cfn, stack) == "REVIEW_IN_PROGRESS":
        cfn.delete_stack(StackName=stack)


def chalice_plan(app_dir: Path, target: Target) -> list[str]:
    """`chalice dev plan --stage STAGE` of the rendered copy: what Chalice would do."""
    done = subprocess.run(
        [*chalice_command(), "dev", "plan", "--stage", target.stage],
        cwd=app_dir,
        env=target.subprocess_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    output = ((done.stdout or "") + (done.stderr or "")).strip()
    if done.returncode != 0:
        tail = output.splitlines()[-1] if output else f"exit {done.returncode}"
        return [f"changes unknown: chalice dev plan failed: {tail}"]
    return summarize_chalice_plan(output)


def summarize_chalice_plan(output: str) -> list[str]:
    """The API calls of Chalice's plan (its full program listing is hundreds of lines)."""
    calls: dict[str, int] = {}
    for match in _API_CALL.finditer(output):
        calls[match.group(1)] = calls.get(match.group(1), 0) + 1
    if not calls:
        return ["no API calls (nothing to change)"]
    return [f"{method} x{count}" if count > 1 else method for method, count in calls.items()]


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
