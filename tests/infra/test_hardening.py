"""Security hardening of every template (issue 19): found from the tree, so a new consumer,
and what `sluice new-consumer` writes, are held to the same rules without an edit here.

- every queue and topic denies requests without TLS, in the ONE policy it has;
- every alarm notifies the ops topic (encrypted with a key CloudWatch may use);
- stateful tables and buckets survive a stack deletion or a replacement;
- quarantine and payloads are versioned; the landing bucket's access is logged;
- ARNs are built for the deploy's partition, region and account.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from infra.stack_model import ROOT, offline_target, resolver

from sluice_tools.deploy.apps import discover_apps
from sluice_tools.deploy.stacks import deploy_stack
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import Resolver, StackSpec
from sluice_tools.scaffold.generator import ConsumerSpec, render_app

TLS_ONLY = {"Bool": {"aws:SecureTransport": "false"}}
RETAINED = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> list[StackSpec]:
    """The resources.yaml of a new SQS consumer, a new direct one and a new event one."""
    specs = []
    for name, direct, events in (
        ("probe", False, ()),
        ("probe-direct", True, ()),
        ("probe-events", False, ("Object Delivered",)),
    ):
        spec = ConsumerSpec(name, {"record_type": ["order"]}, direct=direct, events=events)
        files = render_app(spec)
        path = tmp_path_factory.mktemp(name) / "resources.yaml"
        path.write_text(files[f"consumers/{name}/resources.yaml"], encoding="utf-8")
        body = yaml.safe_load(path.read_text(encoding="utf-8"))
        specs.append(StackSpec(f"sluice-test-consumer-{name}", f"consumer-{name}", path, body))
    return specs


@pytest.fixture(scope="module")
def every_template(stacks: list[StackSpec], scaffolded: list[StackSpec]) -> list[StackSpec]:
    return [*stacks, *scaffolded]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _tls_denied(document: dict[str, Any], action_prefix: str) -> set[str]:
    """The resources a statement of `document` denies to every non-TLS request."""
    denied: set[str] = set()
    for statement in _listed(document["Statement"]):
        if (
            statement["Effect"] == "Deny"
            and statement.get("Principal") == "*"
            and statement.get("Condition") == TLS_ONLY
            and f"{action_prefix}:*" in _listed(statement["Action"])
        ):
            denied |= set(_listed(statement["Resource"]))
    return denied


def _policy_coverage(
    spec: StackSpec, r: Resolver, policy_type: str, targets_key: str, service: str
) -> dict[str, list[set[str]]]:
    """{target as the policy names it: [resources its policy denies without TLS, ...]}."""
    covered: dict[str, list[set[str]]] = {}
    for logical in spec.resources(policy_type):
        props = r.properties(logical)
        denied = _tls_denied(props["PolicyDocument"], service)
        for target in props[targets_key]:
            covered.setdefault(target, []).append(denied)
    return covered


# (resource type, its policy's type, the policy's list of targets, the service's actions,
#  how the policy names a target, at least how many the templates have)
_POLICED = {
    "queue": ("AWS::SQS::Queue", "AWS::SQS::QueuePolicy", "Queues", "sqs", "QueueUrl", 10),
    "topic": ("AWS::SNS::Topic", "AWS::SNS::TopicPolicy", "Topics", "sns", "TopicArn", 3),
}


@pytest.mark.parametrize("kind", _POLICED)
def test_every_queue_and_topic_has_one_policy_denying_requests_without_tls(
    kind: str, every_template: list[StackSpec]
) -> None:
    type_, policy_type, targets_key, service, named_by, at_least = _POLICED[kind]
    checked = 0
    for spec in every_template:
        r = resolver(spec)
        covered = _policy_coverage(spec, r, policy_type, targets_key, service)
        for logical in spec.resources(type_):
            arn = r.get_att(logical, "Arn" if kind == "queue" else "TopicArn")
            policies = covered.get(r.get_att(logical, named_by), [])
            # A second policy on the same queue or topic replaces the first.
            assert len(policies) == 1, f"{spec.role}: {logical} is in {len(policies)} policies"
            assert arn in policies[0], f"{spec.role}: {logical} accepts requests without TLS"
            checked += 1
    assert checked >= at_least


def test_a_subscribed_queue_keeps_the_topic_s_right_to_send_beside_the_tls_deny(
    every_template: list[StackSpec],
) -> None:
    for spec in every_template:
        r = resolver(spec)
        for logical in spec.resources("AWS::SNS::Subscription"):
            queue_arn = r.properties(logical)["Endpoint"]
            documents = [
                r.properties(p)["PolicyDocument"]
                for p in spec.resources("AWS::SQS::QueuePolicy")
                if queue_arn.rsplit(":", 1)[-1]
                in {u.rsplit("/", 1)[-1] for u in r.properties(p)["Queues"]}
            ]
            assert len(documents) == 1
            allows = [
                s
                for s in documents[0]["Statement"]
                if s["Effect"] == "Allow" and s["Principal"] == {"Service": "sns.amazonaws.com"}
            ]
            assert allows
            assert queue_arn in _listed(allows[0]["Resource"])


def _ops_topic_arn(platform: StackSpec) -> str:
    r = resolver(platform)
    (ops,) = [t for t in platform.resources("AWS::SNS::Topic") if r.name_of(t).endswith("-ops")]
    return r.ref(ops)


def test_every_alarm_notifies_the_ops_topic(every_template: list[StackSpec]) -> None:
    ops = _ops_topic_arn(every_template[0])
    assert ops == "arn:aws:sns:us-east-1:123456789012:sluice-test-ops"
    alarms = 0
    for spec in every_template:
        r = resolver(spec)
        for logical in spec.resources("AWS::CloudWatch::Alarm"):
            props = r.properties(logical)
            assert props.get("AlarmActions") == [ops], f"{spec.role}: {logical} pages no one"
            assert props.get("OKActions") == [ops], f"{spec.role}: {logical} never clears"
            alarms += 1
    assert alarms >= 10


def test_the_ops_topic_uses_a_rotated_key_of_its_own_that_cloudwatch_may_use(
    platform: StackSpec,
) -> None:
    r = resolver(platform)
    (ops,) = [t for t in platform.resources("AWS::SNS::Topic") if r.name_of(t).endswith("-ops")]
    topic = platform.resources()[ops]["Properties"]
    key_logical = topic["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = platform.resources()[key_logical]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    grants = [
        s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if s["Effect"] == "Allow" and s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert grants
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(grants[0]["Action"])
    # ... and the topic's policy lets CloudWatch publish (it replaces SNS's default one).
    (policy,) = [
        r.properties(p)["PolicyDocument"]
        for p in platform.resources("AWS::SNS::TopicPolicy")
        if r.ref(ops) in r.properties(p)["Topics"]
    ]
    assert any(
        s["Effect"] == "Allow"
        and s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
        and "sns:Publish" in _listed(s["Action"])
        for s in policy["Statement"]
    )
    # An email endpoint only when the OpsEmail parameter is set.
    assert platform.body["Parameters"]["OpsEmail"]["Default"] == ""
    condition, subscribed, none = topic["Subscription"]["Fn::If"]
    assert platform.body["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "OpsEmail"}, ""]}]
    }
    assert subscribed == [{"Protocol": "email", "Endpoint": {"Ref": "OpsEmail"}}]
    assert none == {"Ref": "AWS::NoValue"}


def _by_name(platform: StackSpec, type_: str) -> dict[str, dict[str, Any]]:
    r = resolver(platform)
    return {r.name_of(logical): res for logical, res in platform.resources(type_).items()}


def test_stateful_tables_and_buckets_survive_deletion_and_replacement(
    platform: StackSpec,
) -> None:
    tables = _by_name(platform, "AWS::DynamoDB::Table")
    buckets = _by_name(platform, "AWS::S3::Bucket")
    stateful = [
        tables["sluice-test-records"],
        tables["sluice-test-cursors"],
        tables["sluice-test-ledger"],
        buckets["sluice-test-landing"],
        buckets["sluice-test-curated"],
    ]
    for resource in stateful:
        assert {k: resource.get(k) for k in RETAINED} == RETAINED, resource["Properties"]
    # Every bucket is retained: S3 cannot delete a bucket with objects in it anyway.
    for name, resource in buckets.items():
        assert {k: resource.get(k) for k in RETAINED} == RETAINED, name


def test_quarantine_and_payloads_are_versioned_and_old_versions_expire(
    platform: StackSpec,
) -> None:
    buckets = _by_name(platform, "AWS::S3::Bucket")
    for name in ("sluice-test-quarantine", "sluice-test-payloads"):
        props = buckets[name]["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        rules = props["LifecycleConfiguration"]["Rules"]
        assert any("NoncurrentVersionExpiration" in rule for rule in rules), name


def test_landing_access_is_logged_to_a_bucket_s3_log_delivery_may_write(
    platform: StackSpec,
) -> None:
    r = resolver(platform)
    buckets = {r.name_of(logical): logical for logical in platform.resources("AWS::S3::Bucket")}
    landing = r.properties(buckets["sluice-test-landing"])
    logging = landing["LoggingConfiguration"]
    log_bucket = logging["DestinationBucketName"]
    prefix = logging["LogFilePrefix"]
    assert log_bucket in buckets
    assert log_bucket != "sluice-test-landing"
    log_props = r.properties(buckets[log_bucket])
    assert any("ExpirationInDays" in rule for rule in log_props["LifecycleConfiguration"]["Rules"])
    (policy,) = [
        r.properties(p)["PolicyDocument"]
        for p in platform.resources("AWS::S3::BucketPolicy")
        if r.properties(p)["Bucket"] == log_bucket
    ]
    (grant,) = [
        s
        for s in policy["Statement"]
        if s["Effect"] == "Allow" and s["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    ]
    assert grant["Action"] == "s3:PutObject"
    assert grant["Resource"] == f"arn:aws:s3:::{log_bucket}/{prefix}*"
    assert grant["Condition"]["ArnLike"]["aws:SourceArn"] == "arn:aws:s3:::sluice-test-landing"
    assert f"arn:aws:s3:::{log_bucket}/*" in _tls_denied(policy, "s3")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


_ARN = re.compile(r"arn:([^:]*):([^:]*):([^:]*):([^:]*):")
_PSEUDO = {
    "${AWS::Partition}": "PARTITION",
    "${AWS::Region}": "REGION",
    "${AWS::AccountId}": "ACCOUNT",
}


def test_arns_are_built_for_the_deploy_s_partition_region_and_account(
    every_template: list[StackSpec],
) -> None:
    arns = 0
    for spec in every_template:
        assert "arn:aws:" not in spec.path.read_text(encoding="utf-8"), spec.path
        for text in _strings(spec.body):
            where = f"{spec.role}: {text}"
            for pseudo, token in _PSEUDO.items():
                text = text.replace(pseudo, token)
            for partition, service, region, account in _ARN.findall(text):
                assert partition == "PARTITION", where
                assert region in {"", "REGION"}, where
                assert account in {"", "ACCOUNT"}, where
                assert service != "*", where
                arns += 1
    assert arns >= 10


@pytest.fixture
def moto(aws_env: None) -> Iterator[None]:
    from moto import mock_aws

    with mock_aws(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # moto warns about each type it skips
        yield


def _ops_email(target: Target, platform: StackSpec) -> str:
    stack = target.client("cloudformation").describe_stacks(StackName=platform.name)["Stacks"][0]
    return str(
        next(p["ParameterValue"] for p in stack["Parameters"] if p["ParameterKey"] == "OpsEmail")
    )


@pytest.mark.usefixtures("moto")
def test_the_ops_email_is_set_by_a_deploy_and_kept_by_the_next_ones(
    platform: StackSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = offline_target()
    monkeypatch.setenv("SLUICE_OPS_EMAIL", "oncall@example.com")
    deploy_stack(target, platform, log=lambda _: None)
    assert _ops_email(target, platform) == "oncall@example.com"
    sns = target.client("sns")
    topic = "arn:aws:sns:us-east-1:123456789012:sluice-test-ops"
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [
        ("email", "oncall@example.com")
    ]

    monkeypatch.delenv("SLUICE_OPS_EMAIL")  # a later deploy without it keeps the address
    deploy_stack(target, platform, log=lambda _: None)
    assert _ops_email(target, platform) == "oncall@example.com"

    monkeypatch.setenv("SLUICE_OPS_EMAIL", "")  # set empty: no address any more
    deploy_stack(target, platform, log=lambda _: None)
    assert _ops_email(target, platform) == ""


def _exec_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("exec", "eval")
    ]


def test_exec_runs_only_in_the_compiled_schema_check() -> None:
    """.security-skips.toml lets bandit's B102 (exec) pass in deployed code for ONE use:
    cleanse's check generated from each type's schema. Any other exec or eval fails here."""
    dirs = [ROOT / "shared" / "sluice", *(app.path for app in discover_apps(ROOT))]
    found = [call for d in dirs for f in sorted(d.rglob("*.py")) for call in _exec_calls(f)]
    assert [call.split(":")[0] for call in found] == ["cleanse/chalicelib/catalogue.py"], found
