"""Render an app's `deploy.yaml` for one place: IAM policies and `.chalice/config.json`.

Input is a `Placement` (prefix, stage, region, account, partition, emulator); output is
exact: `queue:raw` becomes `arn:{partition}:sqs:{region}:{account}:{prefix}-{stage}-raw`,
no `*` region or account anywhere. Every queue, topic, table and bucket a grant names must
be one the stage's templates create (platform + consumers), so a typo fails the render.
Nothing here is committed: `sluice deploy` writes the output into its copy of the app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice_tools.deploy.apps import AppSpec
from sluice_tools.deploy.declaration import Declaration, DeclarationError
from sluice_tools.deploy.templates import Resolver, StackSpec, stage_stacks

# The stages that run in the emulator (`sluice local`, the tests): rendered for it by default.
EMULATOR_STAGES = frozenset({"local", "test"})

_TEMPLATE_KINDS = {
    "AWS::SQS::Queue": "queue",
    "AWS::SNS::Topic": "topic",
    "AWS::DynamoDB::Table": "table",
    "AWS::S3::Bucket": "bucket",
    "AWS::Events::EventBus": "bus",
}


@dataclass(frozen=True)
class Placement:
    """Where a stage lives: everything a rendered name or ARN depends on."""

    prefix: str
    stage: str
    region: str
    account: str
    partition: str = ""
    emulator: bool = False

    def __post_init__(self) -> None:
        if not self.partition:
            partition = "aws-cn" if self.region.startswith("cn-") else "aws"
            object.__setattr__(self, "partition", partition)

    def name(self, resource: str) -> str:
        return f"{self.prefix}-{self.stage}-{resource}"

    def parameters(self) -> dict[str, str]:
        return {"Stage": self.stage, "ResourcePrefix": self.prefix}

    def resolver(self, spec: StackSpec) -> Resolver:
        """Evaluates `spec`'s intrinsics for this place (names computed, no stack read)."""
        return Resolver(
            spec,
            self.parameters(),
            region=self.region,
            account=self.account,
            partition=self.partition,
        )


def template_inventory(root: Path, place: Placement) -> dict[str, set[str]]:
    """{kind: names} of the queues, topics, tables and buckets the stage's templates create."""
    found: dict[str, set[str]] = {kind: set() for kind in _TEMPLATE_KINDS.values()}
    for spec in stage_stacks(root, place.stage, place.prefix):
        resolver = place.resolver(spec)
        for type_, kind in _TEMPLATE_KINDS.items():
            found[kind] |= {resolver.name_of(logical) for logical in spec.resources(type_)}
    return found


def resource_arns(
    reference: str, place: Placement, function_name: str, inventory: dict[str, set[str]]
) -> list[str]:
    """The ARN(s) one reference stands for; an unknown resource is a `DeclarationError`."""
    if reference == "*":
        return ["*"]
    kind, name = reference.split(":", 1)
    p, r, a = place.partition, place.region, place.account
    if kind == "self":  # log-group: the function's own, and its streams
        group = f"arn:{p}:logs:{r}:{a}:log-group:/aws/lambda/{function_name}"
        return [group, f"{group}:*"]
    if kind == "parameter":
        return [f"arn:{p}:ssm:{r}:{a}:parameter/{place.prefix}/{place.stage}/{name}"]
    base, _, path = name.partition("/")
    full = place.name(base)
    if full not in inventory.get(kind, set()):
        raise DeclarationError(
            f"{reference!r} ({function_name}): no {kind} {full} in the stage's templates"
        )
    if kind == "queue":
        return [f"arn:{p}:sqs:{r}:{a}:{full}"]
    if kind == "topic":
        return [f"arn:{p}:sns:{r}:{a}:{full}"]
    if kind == "table":  # table:NAME/index/INDEX names one of its indexes
        return [f"arn:{p}:dynamodb:{r}:{a}:table/{full}" + (f"/{path}" if path else "")]
    if kind == "bus":
        return [f"arn:{p}:events:{r}:{a}:event-bus/{full}"]
    return [f"arn:{p}:s3:::{full}/{path}" if path else f"arn:{p}:s3:::{full}"]


def render_policy(
    declaration: Declaration,
    function: str,
    function_name: str,
    place: Placement,
    inventory: dict[str, set[str]],
) -> dict[str, Any]:
    """The function's IAM policy document for `place`."""
    statements = []
    for grant in declaration.grants.get(function, ()):
        resources = [
            arn
            for reference in grant.resources
            for arn in resource_arns(reference, place, function_name, inventory)
        ]
        statement: dict[str, Any] = {"Effect": "Allow", "Action": list(grant.actions)}
        if grant.sid:
            statement = {"Sid": grant.sid, **statement}
        statement["Resource"] = resources
        statements.append(statement)
    if not statements:
        raise DeclarationError(f"{declaration.path}: {function} has no grants")
    return {"Version": "2012-10-17", "Statement": statements}


def policy_file_name(stage: str, function: str) -> str:
    return f"policy-{stage}-{function}.json"


def render_chalice_config(app: AppSpec, place: Placement) -> dict[str, Any]:
    """`.chalice/config.json` with one stage, `place.stage`, and a policy file per function."""
    declaration = app.declaration
    functions: dict[str, Any] = {}
    environment: dict[str, str] | None = None
    for function in sorted(declaration.functions):
        settings = declaration.settings(place.stage, function)
        env = {
            **settings.environment,
            "SLUICE_STAGE": place.stage,
            "SLUICE_RESOURCE_PREFIX": place.prefix,
        }
        if environment is None:
            environment = env
        elif env != environment:
            # Chalice reads per-function variables from the stage's function block only.
            functions.setdefault(function, {})["environment_variables"] = env
        functions.setdefault(function, {}).update(
            {
                "iam_policy_file": policy_file_name(place.stage, function),
                "lambda_timeout": settings.timeout,
                "lambda_memory_size": settings.memory,
                "xray": settings.xray and not place.emulator,  # no X-Ray daemon on moto
            }
        )
    stage = {
        "autogen_policy": False,
        "environment_variables": environment or {},
        "tags": {"sluice:stage": place.stage, "sluice:app": app.key, **_registry_tags(app)},
        "lambda_functions": functions,
    }
    return {
        "version": "2.0",
        "app_name": app.app_name,
        "autogen_policy": False,
        "stages": {place.stage: stage},
    }


@dataclass(frozen=True)
class RenderedApp:
    """What was rendered for one app: its config and each function's policy, by handler."""

    app: AppSpec
    place: Placement
    config: dict[str, Any]
    policies: dict[str, dict[str, Any]]

    def environment(self, function: str) -> dict[str, str]:
        stage = self.config["stages"][self.place.stage]
        own = stage["lambda_functions"][function].get("environment_variables")
        return dict(own if own is not None else stage["environment_variables"])

    def function_name(self, function: str) -> str:
        return self.app.function_name(self.place.stage, function)


def render_app(
    app: AppSpec, place: Placement, inventory: dict[str, set[str]] | None = None
) -> RenderedApp:
    """Render `app` for `place` (in memory); `inventory` from `template_inventory`."""
    if inventory is None:
        inventory = template_inventory(app.root, place)
    policies = {
        function: render_policy(
            app.declaration,
            function,
            app.function_name(place.stage, function),
            place,
            inventory,
        )
        for function in sorted(app.declaration.functions)
    }
    return RenderedApp(app, place, render_chalice_config(app, place), policies)


def write_rendered(rendered: RenderedApp, app_dir: Path) -> list[Path]:
    """Write config.json and the policy files into `app_dir/.chalice` (a copy, never the
    committed app); policy files of other stages or functions are removed."""
    chalice_dir = app_dir / ".chalice"
    chalice_dir.mkdir(parents=True, exist_ok=True)
    for stale in chalice_dir.glob("policy-*.json"):
        stale.unlink()
    written = [chalice_dir / "config.json"]
    written[0].write_text(json.dumps(rendered.config, indent=2) + "\n", encoding="utf-8")
    for function, policy in rendered.policies.items():
        path = chalice_dir / policy_file_name(rendered.place.stage, function)
        path.write_text(json.dumps(policy, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _registry_tags(app: AppSpec) -> dict[str, str]:
    """The registry every app ships (vendor.py), for `sluice doctor` (registry_check.py)."""
    from sluice_tools.deploy.registry_check import TAG, registry_tag

    return {TAG: registry_tag(app.root)} if (app.root / "types").is_dir() else {}


def render_for(
    app_dir: Path,
    stage: str,
    *,
    prefix: str = "sluice",
    region: str = "us-east-1",
    account: str = "123456789012",
    emulator: bool | None = None,
) -> RenderedApp:
    """Render the app in `app_dir` without AWS (tests, `chalice.test.Client` configs).

    `emulator` defaults to whether `stage` is one the emulator runs (local, test).
    """
    from sluice_tools.deploy.apps import discover_apps

    app_dir = app_dir.resolve()
    root = app_dir.parent.parent if app_dir.parent.name == "consumers" else app_dir.parent
    found = [a for a in discover_apps(root) if a.path.resolve() == app_dir]
    if not found:
        raise DeclarationError(f"{app_dir} is not an app of {root}")
    in_emulator = stage in EMULATOR_STAGES if emulator is None else emulator
    return render_app(found[0], Placement(prefix, stage, region, account, emulator=in_emulator))


def write_project_dir(app_dir: Path, stage: str, dest: Path) -> Path:
    """A project dir for `chalice.test.Client(project_dir=...)`: `dest/.chalice` rendered."""
    write_rendered(render_for(app_dir, stage), dest)
    return dest
