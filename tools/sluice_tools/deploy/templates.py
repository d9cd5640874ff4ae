"""The stage's CloudFormation templates (platform + one per consumer) and their intrinsics.

`Resolver` evaluates the few intrinsics the templates use (Ref, Fn::Sub, Fn::GetAtt), so the
emulator gap-filler and `doctor` read the SAME templates CloudFormation deploys.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PLATFORM_TEMPLATE = Path("infra") / "platform.yaml"
CONSUMER_TEMPLATE = "resources.yaml"
_SUB_VAR = re.compile(r"\$\{([^}!]+)\}")


@dataclass(frozen=True)
class StackSpec:
    """One stack of a stage: its name, template file and parsed body."""

    name: str  # e.g. sluice-dev-platform, sluice-dev-consumer-index
    role: str  # platform | consumer-<name>
    path: Path
    body: dict[str, Any]
    # The template as deployed when it is generated from `path` (e.g. deploy/glue.py's
    # tables); None: the file as it is.
    rendered: str | None = None

    @property
    def text(self) -> str:
        if self.rendered is not None:
            return self.rendered
        return self.path.read_text(encoding="utf-8")

    def resources(self, type_: str | None = None) -> dict[str, dict[str, Any]]:
        found = self.body.get("Resources") or {}
        return {k: v for k, v in found.items() if type_ is None or v.get("Type") == type_}

    @property
    def sluice_metadata(self) -> dict[str, Any]:
        return dict((self.body.get("Metadata") or {}).get("Sluice") or {})


def load_template(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        body = yaml.safe_load(f)
    if not isinstance(body, dict) or "Resources" not in body:
        raise ValueError(f"{path}: not a CloudFormation template (no Resources)")
    return body


def stage_stacks(
    root: Path, stage: str, prefix: str = "sluice", consumers: list[str] | None = None
) -> list[StackSpec]:
    """The platform stack, then each consumer's (those with resources.yaml), by name.

    `consumers` limits the consumer stacks to those names (None: all). The platform's
    template gets a Glue table per registered record type (`deploy.glue.with_catalog`); a
    consumer's filter policy, the registry's type names for its registered-types marker
    (`deploy.typed_consumers`).
    """
    from sluice_tools.deploy.glue import with_catalog
    from sluice_tools.deploy.typed_consumers import with_registered_types

    platform = StackSpec(
        name=f"{prefix}-{stage}-platform",
        role="platform",
        path=root / PLATFORM_TEMPLATE,
        body=load_template(root / PLATFORM_TEMPLATE),
    )
    stacks = [with_catalog(platform, root, stage, prefix)]
    for path in sorted(root.glob(f"consumers/*/{CONSUMER_TEMPLATE}")):
        name = path.parent.name
        if consumers is not None and name not in consumers:
            continue
        consumer = StackSpec(
            name=f"{prefix}-{stage}-consumer-{name}",
            role=f"consumer-{name}",
            path=path,
            body=load_template(path),
        )
        stacks.append(with_registered_types(consumer, root))
    return stacks


class Resolver:
    """Evaluates Ref / Fn::Sub / Fn::GetAtt of one template for one deployed stack.

    `physical` maps logical ids to physical ids as CloudFormation reports them (a queue's
    URL, a topic's ARN, a bucket's or table's name); attributes are derived from those.
    Without a physical id, a resource's name is computed from its name property.
    """

    _NAME_PROPERTY = {
        "AWS::SQS::Queue": "QueueName",
        "AWS::SNS::Topic": "TopicName",
        "AWS::S3::Bucket": "BucketName",
        "AWS::DynamoDB::Table": "TableName",
        "AWS::CloudWatch::Alarm": "AlarmName",
        "AWS::Events::EventBus": "Name",
    }

    def __init__(
        self,
        stack: StackSpec,
        parameters: dict[str, str],
        *,
        region: str,
        account: str,
        partition: str = "aws",
        physical: dict[str, str] | None = None,
        queue_url_base: str | None = None,
    ) -> None:
        self.stack = stack
        self.region = region
        self.account = account
        self.partition = partition
        self.physical = physical or {}
        self.queue_url_base = queue_url_base or f"https://sqs.{region}.amazonaws.com/{account}"
        self.values: dict[str, str] = {
            "AWS::Region": region,
            "AWS::AccountId": account,
            "AWS::Partition": partition,
            "AWS::StackName": stack.name,
            "AWS::URLSuffix": "amazonaws.com",
        }
        declared = stack.body.get("Parameters") or {}
        for key, spec in declared.items():
            if key in parameters:
                self.values[key] = parameters[key]
            elif "Default" in spec:
                self.values[key] = str(spec["Default"])

    def resolve(self, value: Any) -> Any:
        """`value` with every intrinsic replaced by its string, recursively."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::GetAtt":
                logical, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(logical, attribute)
            if key.startswith("Fn::"):
                raise ValueError(f"{self.stack.path}: intrinsic {key} is not supported here")
        return {k: self.resolve(v) for k, v in value.items()}

    def sub(self, arg: Any) -> str:
        template, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        local = {k: self.resolve(v) for k, v in variables.items()}

        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token in local:
                return str(local[token])
            if "." in token:
                logical, attribute = token.split(".", 1)
                return self.get_att(logical, attribute)
            return self.ref(token)

        return _SUB_VAR.sub(replace, template)

    def ref(self, name: str) -> str:
        if name in self.values:
            return self.values[name]
        resource = self._resource(name)
        if name in self.physical:
            return self.physical[name]
        if resource["Type"] == "AWS::SQS::Queue":
            return f"{self.queue_url_base}/{self.name_of(name)}"
        if resource["Type"] == "AWS::SNS::Topic":
            return self.get_att(name, "TopicArn")
        return self.name_of(name)

    def get_att(self, logical: str, attribute: str) -> str:
        type_ = self._resource(logical)["Type"]
        if type_ == "AWS::SQS::Queue":
            name = self.name_of(logical)
            if attribute == "QueueName":
                return name
            if attribute == "QueueUrl":
                return self.ref(logical)
            if attribute == "Arn":
                return f"arn:{self.partition}:sqs:{self.region}:{self.account}:{name}"
        if type_ == "AWS::SNS::Topic" and attribute in {"TopicArn", "TopicName"}:
            name = self.name_of(logical)
            if attribute == "TopicName":
                return name
            return f"arn:{self.partition}:sns:{self.region}:{self.account}:{name}"
        if type_ == "AWS::S3::Bucket" and attribute == "Arn":
            return f"arn:{self.partition}:s3:::{self.name_of(logical)}"
        if type_ == "AWS::DynamoDB::Table" and attribute == "Arn":
            return (
                f"arn:{self.partition}:dynamodb:{self.region}:{self.account}:"
                f"table/{self.name_of(logical)}"
            )
        if type_ == "AWS::Events::EventBus" and attribute == "Arn":
            name = self.name_of(logical)
            return f"arn:{self.partition}:events:{self.region}:{self.account}:event-bus/{name}"
        raise ValueError(f"{self.stack.path}: Fn::GetAtt {logical}.{attribute} is not supported")

    def name_of(self, logical: str) -> str:
        """A resource's name, from its name property (every Sluice resource has one)."""
        resource = self._resource(logical)
        prop = self._NAME_PROPERTY.get(resource["Type"])
        if prop is None or prop not in (resource.get("Properties") or {}):
            physical = self.physical.get(logical)
            if physical:
                return physical.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
            raise ValueError(f"{self.stack.path}: {logical} has no name property")
        return str(self.resolve(resource["Properties"][prop]))

    def properties(self, logical: str) -> dict[str, Any]:
        return dict(self.resolve(self._resource(logical).get("Properties") or {}))

    def _resource(self, logical: str) -> dict[str, Any]:
        resources = self.stack.body.get("Resources") or {}
        if logical not in resources:
            raise ValueError(f"{self.stack.path}: no resource or parameter named {logical!r}")
        return dict(resources[logical])


def as_json(value: Any) -> str:
    """A policy or filter as the JSON string the APIs take (templates may hold either)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
