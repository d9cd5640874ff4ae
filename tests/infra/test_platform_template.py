"""infra/platform.yaml and the consumers' templates hold the platform's safety properties."""

from __future__ import annotations

from typing import Any

import pytest
from infra.stack_model import STAGES, resolver

from sluice.config import ResourceNames
from sluice_tools.deploy.apps import AppSpec
from sluice_tools.deploy.templates import StackSpec


def queues_of(stacks: list[StackSpec]) -> dict[str, dict[str, Any]]:
    """{queue name: resolved properties} over all templates."""
    found = {}
    for spec in stacks:
        r = resolver(spec)
        for logical in spec.resources("AWS::SQS::Queue"):
            props = r.properties(logical)
            found[props["QueueName"]] = props
    return found


def terminal_queues(queues: dict[str, dict[str, Any]]) -> set[str]:
    """DLQs (some queue's redrive target) and async failure queues: nothing consumes them."""
    dlqs = {
        p["RedrivePolicy"]["deadLetterTargetArn"].rsplit(":", 1)[-1]
        for p in queues.values()
        if "RedrivePolicy" in p
    }
    return dlqs | {q for q in queues if q.endswith("-failures")}


def alarms_of(stacks: list[StackSpec]) -> list[dict[str, Any]]:
    found = []
    for spec in stacks:
        r = resolver(spec)
        found += [r.properties(a) for a in spec.resources("AWS::CloudWatch::Alarm")]
    return found


def alarmed_queues(stacks: list[StackSpec], metric: str) -> set[str]:
    return {
        d["Value"]
        for a in alarms_of(stacks)
        if a["MetricName"] == metric and a["Namespace"] == "AWS/SQS"
        for d in a["Dimensions"]
        if d["Name"] == "QueueName"
    }


def test_platform_has_every_resource_the_naming_convention_lists(platform: StackSpec) -> None:
    r = resolver(platform)
    names = {r.name_of(logical) for logical in platform.resources() if _named(platform, logical)}
    conventional = ResourceNames(stage="test")
    expected = set(conventional.as_dict().values()) | {
        conventional.async_failure_queue("ingest"),
        conventional.dlq_of(conventional.ingest_continue_queue),
    }
    assert expected <= names


def _named(spec: StackSpec, logical: str) -> bool:
    return spec.resources()[logical]["Type"] in {
        "AWS::SQS::Queue",
        "AWS::SNS::Topic",
        "AWS::S3::Bucket",
        "AWS::DynamoDB::Table",
        "AWS::Events::EventBus",
    }


def test_every_queue_that_is_consumed_has_a_dlq_in_its_template(stacks: list[StackSpec]) -> None:
    queues = queues_of(stacks)
    terminal = terminal_queues(queues)
    main = [q for q in queues if q not in terminal]
    assert len(main) >= 5
    for name in main:
        redrive = queues[name].get("RedrivePolicy")
        assert redrive, f"{name} has no RedrivePolicy"
        assert redrive["deadLetterTargetArn"].rsplit(":", 1)[-1] in queues
        assert 1 <= int(redrive["maxReceiveCount"]) <= 10


def test_every_queue_is_encrypted(stacks: list[StackSpec]) -> None:
    for name, props in queues_of(stacks).items():
        assert props.get("SqsManagedSseEnabled") is True or props.get("KmsMasterKeyId"), name


def test_dead_letters_are_kept_longer_than_their_source_queue_keeps_messages(
    stacks: list[StackSpec],
) -> None:
    queues = queues_of(stacks)
    for props in queues.values():
        if "RedrivePolicy" in props:
            dlq = queues[props["RedrivePolicy"]["deadLetterTargetArn"].rsplit(":", 1)[-1]]
            # On redrive a message keeps its enqueue time: a shorter DLQ retention loses it.
            assert int(dlq["MessageRetentionPeriod"]) > int(props["MessageRetentionPeriod"])


def test_every_bucket_is_encrypted_private_and_tls_only(platform: StackSpec) -> None:
    r = resolver(platform)
    policies = {
        r.resolve(p["Properties"]["Bucket"]): r.properties(logical)["PolicyDocument"]
        for logical, p in platform.resources("AWS::S3::BucketPolicy").items()
    }
    buckets = platform.resources("AWS::S3::Bucket")
    assert len(buckets) == 5  # landing, quarantine, curated, payloads, access logs
    for logical in buckets:
        props = r.properties(logical)
        name = props["BucketName"]
        sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
        block = props["PublicAccessBlockConfiguration"]
        assert block == dict.fromkeys(
            ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"),
            True,
        )
        deny = [
            s
            for s in policies[name]["Statement"]
            if s["Effect"] == "Deny"
            and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert deny, f"{name} has no TLS-only statement"
        resources = set(deny[0]["Resource"])
        assert {f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"} <= resources
        assert deny[0]["Principal"] == "*"
        assert deny[0]["Action"] == "s3:*"


def test_quarantine_and_payload_buckets_expire_objects_and_landing_keeps_versions(
    platform: StackSpec,
) -> None:
    r = resolver(platform)
    props = {
        r.properties(b)["BucketName"]: r.properties(b)
        for b in platform.resources("AWS::S3::Bucket")
    }

    def expires(name: str) -> bool:
        rules = props[name]["LifecycleConfiguration"]["Rules"]
        return any("ExpirationInDays" in rule for rule in rules)

    assert expires("sluice-test-quarantine")
    assert expires("sluice-test-payloads")
    assert props["sluice-test-landing"]["VersioningConfiguration"]["Status"] == "Enabled"
    # Claim-checked payloads must outlive a message parked in a DLQ (14 days).
    payload_days = min(
        rule["ExpirationInDays"]
        for rule in props["sluice-test-payloads"]["LifecycleConfiguration"]["Rules"]
        if "ExpirationInDays" in rule
    )
    assert payload_days * 86400 > 1209600


def test_topics_are_encrypted_the_ops_topic_with_a_key_cloudwatch_may_use(
    platform: StackSpec,
) -> None:
    topics = platform.resources("AWS::SNS::Topic")
    assert len(topics) == 3
    for logical, resource in topics.items():
        key = resource["Properties"]["KmsMasterKeyId"]
        if logical == "OpsTopic":  # CloudWatch cannot use the AWS-managed key
            assert key == {"Fn::GetAtt": ["OpsKey", "Arn"]}
        else:
            assert key == "alias/aws/sns"


def test_tables_are_encrypted_and_recoverable(platform: StackSpec) -> None:
    for resource in platform.resources("AWS::DynamoDB::Table").values():
        props = resource["Properties"]
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_every_dlq_and_failure_queue_has_a_depth_alarm(stacks: list[StackSpec]) -> None:
    queues = queues_of(stacks)
    watched = alarmed_queues(stacks, "ApproximateNumberOfMessagesVisible")
    assert terminal_queues(queues) <= watched
    for alarm in alarms_of(stacks):
        if alarm["MetricName"] == "ApproximateNumberOfMessagesVisible":
            assert alarm["Threshold"] == 0
            assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_every_consumed_queue_has_an_oldest_message_age_alarm(stacks: list[StackSpec]) -> None:
    queues = queues_of(stacks)
    main = set(queues) - terminal_queues(queues)
    assert main <= alarmed_queues(stacks, "ApproximateAgeOfOldestMessage")


@pytest.mark.parametrize("stage", STAGES)
def test_visibility_timeouts_are_six_times_the_consuming_function_timeout(
    stage: str,
    stacks: list[StackSpec],
    apps: list[AppSpec],
    triggers: dict[str, list[dict[str, Any]]],
) -> None:
    queues = queues_of(stacks)  # names for stage test, as the triggers were read
    checked = 0
    for app in apps:
        for source in triggers[app.key]:
            if source["kind"] != "SQSEventConfig":
                continue
            timeout = app.timeout(stage, source["handler"])
            visibility = int(queues[source["queue"]]["VisibilityTimeout"])
            assert visibility >= 6 * timeout, (
                f"{source['queue']}: visibility {visibility} s < 6 x {timeout} s "
                f"({app.rel}.{source['handler']}, stage {stage})"
            )
            checked += 1
    assert checked >= 5  # raw, clean, ingest-continue, and the SQS consumers


def test_every_sqs_trigger_reads_a_queue_of_the_templates(
    stacks: list[StackSpec], triggers: dict[str, list[dict[str, Any]]]
) -> None:
    queues = queues_of(stacks)
    for sources in triggers.values():
        for source in sources:
            if source["kind"] == "SQSEventConfig":
                assert source["queue"] in queues
                assert source["queue"] not in terminal_queues(queues)


def test_every_app_with_an_async_trigger_has_a_failures_queue(
    stacks: list[StackSpec], apps: list[AppSpec], triggers: dict[str, list[dict[str, Any]]]
) -> None:
    queues = queues_of(stacks)
    asynchronous = {"S3EventConfig", "SNSEventConfig", "ScheduledEventConfig"}
    for app in apps:
        if any(s["kind"] in asynchronous for s in triggers[app.key]):
            assert ResourceNames(stage="test").async_failure_queue(app.key) in queues


def test_the_dashboard_graphs_every_pipeline_metric_for_the_stage(platform: StackSpec) -> None:
    import json

    r = resolver(platform)
    body = json.loads(r.properties("Dashboard")["DashboardBody"])
    expressions = " ".join(
        m[0]["expression"] for w in body["widgets"] for m in w["properties"]["metrics"]
    )
    for metric in (
        "RecordsIn",
        "RecordsOut",
        "RecordsQuarantined",
        "RecordsDuplicate",
        "ChunksFailed",
        "RecordAge",
    ):
        assert f'MetricName="{metric}"' in expressions
    assert "{Sluice,service,stage}" in expressions
    assert 'stage="test"' in expressions


def test_templates_use_long_form_intrinsics_only(stacks: list[StackSpec]) -> None:
    for spec in stacks:
        text = spec.text
        for short in ("!Sub", "!Ref", "!GetAtt", "!If", "!Join"):
            assert short not in text, f"{spec.path}: {short}"
