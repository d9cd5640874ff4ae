"""What every consumer's tests share: a moto account built from the templates, SNS plumbing.

Platform tables come from infra/platform.yaml and the consumer's queues and subscription from
its own resources.yaml (the filter policy is read from there), so tests exercise the
definitions that get deployed. Used by tests/consumers/<name>/conftest.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import platform as moto_platform

from sluice import aws
from sluice.config import ResourceNames, reset_settings
from sluice.envelope import Chunk, Record
from sluice.registry import expand_template_policies, load_registry
from sluice_tools import lambda_events

REPO = moto_platform.REPO
STAGE = moto_platform.STAGE
REGION = "us-east-1"
ACCOUNT = "123456789012"
PARAMETERS = {
    **moto_platform.PARAMETERS,
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
}
INGESTED_AT = "2026-11-27T06:15:00.000Z"


def load_template(path: Path) -> dict[str, Any]:
    """A consumer's resources.yaml as the deploy renders it: the registered-types marker of
    its filter policy expanded to the registry's type names."""
    template = moto_platform.load_template(path)
    expanded: dict[str, Any] = expand_template_policies(
        template, load_registry(REPO / "types").names()
    )
    return expanded


def sub(value: Any) -> str:
    """A `Fn::Sub` string (or plain string) resolved for stage `test` in the moto account."""
    return moto_platform.sub(value, PARAMETERS)


def filter_policy(template: Mapping[str, Any]) -> dict[str, Any]:
    """The consumer's filter policy: its subscription's, or a direct consumer's Metadata one."""
    for resource in template.get("Resources", {}).values():
        if resource["Type"] == "AWS::SNS::Subscription":
            return dict(resource["Properties"]["FilterPolicy"])
    return dict(template["Metadata"]["Sluice"]["FilterPolicy"])


@dataclass
class Account:
    """The moto account of one test: platform resources plus one consumer's resources."""

    names: ResourceNames
    records_topic_arn: str
    alerts_topic_arn: str
    queues: dict[str, str] = field(default_factory=dict)  # logical id -> queue URL

    def publish(self, chunk: Chunk) -> None:
        """Publish `chunk` on the records topic the way the router does."""
        aws.sns().publish(
            TopicArn=self.records_topic_arn,
            Message=chunk.encode(),
            MessageAttributes=dict(chunk.message_attributes()),  # type: ignore[arg-type]
        )

    def subscribe_queue(self, name: str, policy: Mapping[str, Any] | None) -> str:
        """A queue subscribed to the records topic with raw delivery (and `policy`)."""
        url = aws.sqs().create_queue(QueueName=name)["QueueUrl"]
        arn = aws.sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        attributes = {"RawMessageDelivery": "true"}
        if policy is not None:
            attributes.update(
                FilterPolicy=json.dumps(policy), FilterPolicyScope="MessageAttributes"
            )
        aws.sns().subscribe(
            TopicArn=self.records_topic_arn,
            Protocol="sqs",
            Endpoint=arn["Attributes"]["QueueArn"],
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )
        return url


def create_platform(names: ResourceNames) -> Account:
    """Tables as infra/platform.yaml defines them; buckets and topics by their names."""
    moto_platform.create_tables()
    moto_platform.create_buckets(
        (names.quarantine_bucket, names.payload_bucket, names.curated_bucket)
    )
    sns = aws.sns()
    return Account(
        names=names,
        records_topic_arn=sns.create_topic(Name=names.records_topic)["TopicArn"],
        alerts_topic_arn=sns.create_topic(Name=names.alerts_topic)["TopicArn"],
    )


def create_consumer_resources(account: Account, template: Mapping[str, Any]) -> None:
    """The template's queues (DLQ redrive included) and its subscription, with filter policy.

    Applied through the APIs, as the local deploy does: moto's CloudFormation skips
    subscriptions, queue policies and alarms.
    """
    sqs = aws.sqs()
    resources = template["Resources"]
    arns: dict[str, str] = {}
    pending = [lid for lid, r in resources.items() if r["Type"] == "AWS::SQS::Queue"]
    # Dead-letter queues first: a queue's redrive policy names its DLQ's ARN.
    pending.sort(key=lambda lid: "RedrivePolicy" in resources[lid]["Properties"])
    for logical_id in pending:
        props = resources[logical_id]["Properties"]
        attributes: Any = {
            k: str(props[k]).lower() if isinstance(props[k], bool) else str(props[k])
            for k in ("VisibilityTimeout", "MessageRetentionPeriod", "SqsManagedSseEnabled")
            if k in props
        }
        redrive = props.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arns[target], "maxReceiveCount": redrive["maxReceiveCount"]}
            )
        url = sqs.create_queue(QueueName=sub(props["QueueName"]), Attributes=attributes)["QueueUrl"]
        account.queues[logical_id] = url
        got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        arns[logical_id] = got["Attributes"]["QueueArn"]
    for resource in resources.values():
        if resource["Type"] != "AWS::SNS::Subscription":
            continue
        props = resource["Properties"]
        assert sub(props["TopicArn"]) == account.records_topic_arn
        aws.sns().subscribe(
            TopicArn=account.records_topic_arn,
            Protocol=props["Protocol"],
            Endpoint=arns[props["Endpoint"]["Fn::GetAtt"][0]],
            Attributes={
                "RawMessageDelivery": str(props["RawMessageDelivery"]).lower(),
                "FilterPolicy": json.dumps(props["FilterPolicy"]),
                "FilterPolicyScope": props["FilterPolicyScope"],
            },
        )


def receive_all(queue_url: str) -> list[dict[str, Any]]:
    """Every message waiting in a queue (deleted as read), with its message attributes."""
    sqs = aws.sqs()
    messages: list[Any] = []
    while True:
        got = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            return messages
        for message in got:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        messages.extend(got)


def as_lambda_event(messages: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """SQS messages as received, shaped as the SQS → Lambda event that delivers them."""
    return lambda_events.received_sqs_event(messages, region=REGION)


def sns_event(
    chunk: Chunk | str, topic_arn: str, message_id: str = "sns-message-0"
) -> dict[str, Any]:
    """A direct SNS → Lambda event delivering `chunk` (or a raw message body)."""
    return lambda_events.sns_event(chunk, topic=topic_arn, message_ids=[message_id])


def make_chunk(
    record_type: str,
    payloads: Iterable[Any],
    *,
    chunk_id: str = "c-test-0",
    correlation_id: str = "corr-test",
    ingested_at: str = INGESTED_AT,
    attributes: Mapping[str, str] | None = None,
    first_ordinal: int = 0,
) -> Chunk:
    """A chunk as the router publishes it, with record ids `r-<chunk_id>-<ordinal>`."""
    records = tuple(
        Record(f"r-{chunk_id}-{i}", i, ingested_at, payload)
        for i, payload in enumerate(payloads, start=first_ordinal)
    )
    return Chunk(
        chunk_id=chunk_id,
        type=record_type,
        source="s3://sluice-test-landing/incoming/test.jsonl",
        correlation_id=correlation_id,
        records=records,
        attributes=dict(attributes or {}),
    )


def ledger_items(correlation_id: str = "corr-test") -> dict[str, dict[str, Any]]:
    """The ledger's entries of a correlation id, by entry (`sink:<sink>#<chunk>`, ...)."""
    from sluice.config import get_settings
    from sluice.ledger import split_item

    got = aws.dynamodb().query(
        TableName=get_settings().names.ledger_table,
        KeyConditionExpression="correlation_id = :c",
        ExpressionAttributeValues={":c": {"S": correlation_id}},
    )
    return {item["entry"]["S"]: item for whole in got["Items"] for item in split_item(whole)}


def quarantined_keys() -> list[str]:
    from sluice.config import get_settings

    got = aws.s3().list_objects_v2(Bucket=get_settings().names.quarantine_bucket)
    return sorted(o["Key"] for o in got.get("Contents", []))


def mocked_account(template_path: Path) -> Iterator[Account]:
    """Start moto, create the platform and the consumer's resources; for a fixture to yield."""
    from moto import mock_aws

    with mock_aws():
        aws.reset_clients()
        reset_settings()
        account = create_platform(ResourceNames(stage=STAGE))
        create_consumer_resources(account, load_template(template_path))
        yield account
        aws.reset_clients()


def app_config_problems(app_dir: Path) -> list[str]:
    """What is wrong with an app's deploy config, policies and queue timeouts (empty: ok).

    The config and policies are those `sluice deploy` renders from the app's deploy.yaml,
    for the usual stages and one never listed (qa7), under another prefix: every stage
    sets SLUICE_STAGE and SLUICE_RESOURCE_PREFIX, gives every function a policy that names
    only this prefix and stage's resources (and its own log group) and uses `*` only for
    X-Ray; every queue of resources.yaml with a redrive policy has a visibility timeout of
    at least 6x the function timeout. (sluice_tools is not in app_tests' venv: skipped there.)
    """
    import pytest

    render = pytest.importorskip("sluice_tools.deploy.render")
    problems: list[str] = []
    template = load_template(app_dir / "resources.yaml")
    timeouts = [
        int(r["Properties"].get("VisibilityTimeout", 30))
        for r in template["Resources"].values()
        if r["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in r["Properties"]
    ]
    for stage in ("dev", "prod", "local", "test", "qa7"):
        try:
            rendered = render.render_for(app_dir, stage, prefix="acme-data")
        except ValueError as exc:  # DeclarationError: a reference no template creates, ...
            problems.append(f"stage {stage}: {exc}")
            continue
        config = rendered.config
        if config.get("autogen_policy") is not False:
            problems.append("autogen_policy is not false")
        functions = config["stages"][stage].get("lambda_functions") or {}
        if not functions:
            problems.append(f"stage {stage}: no lambda_functions")
        for fn, fn_settings in functions.items():
            env = rendered.environment(fn)
            if (env.get("SLUICE_STAGE"), env.get("SLUICE_RESOURCE_PREFIX")) != (stage, "acme-data"):
                problems.append(f"stage {stage}: {fn}'s SLUICE_STAGE/PREFIX are not its own")
            timeout = int(fn_settings["lambda_timeout"])
            problems += [
                f"stage {stage}: visibility timeout {t} < 6 x {timeout}"
                for t in timeouts
                if t < 6 * timeout
            ]
            if fn_settings["iam_policy_file"] != f"policy-{stage}-{fn}.json":
                problems.append(f"stage {stage}: bad policy file {fn_settings['iam_policy_file']}")
            own = rendered.function_name(fn)
            for statement in rendered.policies[fn]["Statement"]:
                for resource in statement["Resource"]:
                    xray = all(a.startswith("xray:") for a in statement["Action"])
                    if resource == "*" and not xray:
                        problems.append(f"{fn} ({stage}): '*' for {statement['Action']}")
                    scoped = f"acme-data-{stage}-" in resource or f"/aws/lambda/{own}" in resource
                    if resource != "*" and not scoped:
                        problems.append(f"{fn} ({stage}): {resource} is not stage {stage}'s")
    return problems


ROUTING = REPO / "router" / "chalicelib" / "routing.json"


def routed_attribute_sets() -> list[tuple[str, dict[str, str]]]:
    """Every (record type, routing attributes) the router can publish: each registered type
    (`types/`) with the values its routing rules (type.json) can give the attributes
    routing.json declares; a type without rules gets no attributes.
    """
    routing = json.loads(ROUTING.read_text(encoding="utf-8"))
    declared = {name: spec["values"] for name, spec in routing["attributes"].items()}
    types = {spec.name: dict(spec.routing) for spec in load_registry(REPO / "types")}
    sets: list[tuple[str, dict[str, str]]] = []
    for record_type, rules in sorted(types.items()):
        combos: list[dict[str, str]] = [{}]
        for attribute in sorted(rules):
            combos = [{**c, attribute: v} for c in combos for v in declared[attribute]]
        sets += [(record_type, combo) for combo in combos]
    return sets


def policy_matches(policy: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    """Whether an SNS attribute filter policy admits string message `attributes`.

    Enough of SNS's matching for string attributes (exact, anything-but, prefix, suffix,
    equals-ignore-case, exists, $or) to compute what a subscription should receive.
    """
    values = {
        k: v["StringValue"] if isinstance(v, Mapping) else str(v) for k, v in attributes.items()
    }
    for key, conditions in policy.items():
        if key == "$or":
            if not any(policy_matches(p, attributes) for p in conditions):
                return False
            continue
        if not any(_condition_matches(c, values.get(key)) for c in conditions):
            return False
    return True


def _condition_matches(condition: Any, value: str | None) -> bool:
    if isinstance(condition, str):
        return value == condition
    if not isinstance(condition, Mapping):
        return False
    (operator, operand), *_ = condition.items()
    if operator == "exists":
        return (value is not None) == bool(operand)
    if value is None:
        return False
    if operator == "anything-but":
        if isinstance(operand, Mapping):
            return not any(_condition_matches({k: v}, value) for k, v in operand.items())
        return value not in ([operand] if isinstance(operand, str) else operand)
    if operator == "prefix":
        return value.startswith(operand)
    if operator == "suffix":
        return value.endswith(operand)
    if operator == "equals-ignore-case":
        return value.lower() == str(operand).lower()
    raise ValueError(f"filter operator {operator!r} is not supported by policy_matches")
