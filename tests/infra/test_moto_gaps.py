"""moto 5.2.5's CloudFormation skips what `motocompat.cfn` says, and `fill_gaps` applies it.

If a moto upgrade starts creating one of these, the first test fails: drop it from the gaps.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from infra.stack_model import offline_target, resolver

from sluice_tools.deploy.glue import catalog_problems
from sluice_tools.deploy.templates import StackSpec
from sluice_tools.motocompat.cfn import (
    SKIPPED_PROPERTIES,
    SKIPPED_TYPES,
    fill_gaps,
    moto_safe_policy,
)


@pytest.fixture
def moto(aws_env: None) -> Iterator[None]:
    from moto import mock_aws

    with mock_aws(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # moto warns about each type it skips
        yield


def create(spec: StackSpec) -> Any:
    target = offline_target()
    target.client("cloudformation").create_stack(
        StackName=spec.name,
        TemplateBody=spec.text,
        Parameters=[
            {"ParameterKey": k, "ParameterValue": v} for k, v in target.parameters().items()
        ],
    )
    return target


def created_types(target: Any, spec: StackSpec) -> set[str]:
    resources = target.client("cloudformation").describe_stack_resources(StackName=spec.name)
    return {r["ResourceType"] for r in resources["StackResources"] if "ResourceType" in r}


@pytest.mark.usefixtures("moto")
def test_moto_cloudformation_skips_exactly_the_listed_types_of_our_templates(
    stacks: list[StackSpec],
) -> None:
    used = {r["Type"] for spec in stacks for r in spec.resources().values()}
    created: set[str] = set()
    for spec in stacks:
        created |= created_types(create(spec), spec)

    assert used - created == set(SKIPPED_TYPES) & used
    assert set(SKIPPED_TYPES) <= used  # every gap is exercised by a real template


@pytest.mark.usefixtures("moto")
def test_moto_cloudformation_ignores_the_listed_properties(platform: StackSpec) -> None:
    target = create(platform)
    s3, ddb = target.client("s3"), target.client("dynamodb")

    assert "Status" not in s3.get_bucket_versioning(Bucket="sluice-test-landing")
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchPublicAccessBlock"):
        s3.get_public_access_block(Bucket="sluice-test-landing")
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchLifecycleConfiguration"):
        s3.get_bucket_lifecycle_configuration(Bucket="sluice-test-payloads")
    ttl = ddb.describe_time_to_live(TableName="sluice-test-idempotency")["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "DISABLED"
    backups = ddb.describe_continuous_backups(TableName="sluice-test-ledger")
    pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert pitr["PointInTimeRecoveryStatus"] == "DISABLED"
    assert "PublicAccessBlockConfiguration" in SKIPPED_PROPERTIES["AWS::S3::Bucket"]
    assert "TimeToLiveSpecification" in SKIPPED_PROPERTIES["AWS::DynamoDB::Table"]


@pytest.mark.usefixtures("moto")
def test_fill_gaps_applies_the_platform_template_through_the_apis(platform: StackSpec) -> None:
    target = create(platform)

    applied = fill_gaps(target, platform, resolver(platform), log=lambda _: None)

    s3, ddb, cloudwatch = (
        target.client("s3"),
        target.client("dynamodb"),
        target.client("cloudwatch"),
    )
    assert s3.get_bucket_versioning(Bucket="sluice-test-landing")["Status"] == "Enabled"
    block = s3.get_public_access_block(Bucket="sluice-test-quarantine")
    assert all(block["PublicAccessBlockConfiguration"].values())
    rules = s3.get_bucket_lifecycle_configuration(Bucket="sluice-test-payloads")["Rules"]
    assert any(r.get("Expiration", {}).get("Days") == 30 for r in rules)
    # The TLS-only Deny is left out on moto (see the next test): objects can still be written.
    s3.put_object(Bucket="sluice-test-curated", Key="k", Body=b"x")
    ttl = ddb.describe_time_to_live(TableName="sluice-test-ledger")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    alarms = {a["AlarmName"] for a in cloudwatch.describe_alarms()["MetricAlarms"]}
    assert "sluice-test-raw-dlq-depth" in alarms
    assert len(alarms) == len(platform.resources("AWS::CloudWatch::Alarm"))
    assert applied


@pytest.mark.usefixtures("moto")
def test_fill_gaps_subscribes_a_consumer_queue_with_its_filter_policy_once(
    stacks: list[StackSpec],
) -> None:
    platform = stacks[0]
    index = next(s for s in stacks if s.role == "consumer-index")
    target = create(platform)
    create(index)

    for _ in range(2):  # a re-deploy applies again without a second subscription
        fill_gaps(target, index, resolver(index), log=lambda _: None)

    sns = target.client("sns")
    subs = sns.list_subscriptions_by_topic(
        TopicArn="arn:aws:sns:us-east-1:123456789012:sluice-test-records"
    )["Subscriptions"]
    assert len(subs) == 1
    attrs = sns.get_subscription_attributes(SubscriptionArn=subs[0]["SubscriptionArn"])
    wanted = index.resources("AWS::SNS::Subscription")["ConsumerSubscription"]["Properties"]
    assert json.loads(attrs["Attributes"]["FilterPolicy"]) == wanted["FilterPolicy"]
    assert attrs["Attributes"]["RawMessageDelivery"] == "true"
    url = target.client("sqs").get_queue_url(QueueName="sluice-test-consumer-index")["QueueUrl"]
    queue_policy = target.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["Policy"]
    )["Attributes"]["Policy"]
    assert json.loads(queue_policy)["Statement"][0]["Principal"] == {"Service": "sns.amazonaws.com"}


@pytest.mark.usefixtures("moto")
def test_moto_enforces_a_conditional_deny_as_if_it_had_no_condition(platform: StackSpec) -> None:
    target = create(platform)
    s3 = target.client("s3")
    document = resolver(platform).properties("PayloadBucketPolicy")["PolicyDocument"]
    s3.put_bucket_policy(Bucket="sluice-test-payloads", Policy=json.dumps(document))

    with pytest.raises(s3.exceptions.ClientError, match=r"403|Forbidden|AccessDenied"):
        s3.put_object(Bucket="sluice-test-payloads", Key="k", Body=b"x")
    assert moto_safe_policy(document) == ({**document, "Statement": []}, 1)


@pytest.mark.usefixtures("moto")
def test_fill_gaps_creates_the_glue_database_and_a_table_per_type_and_updates_them(
    platform: StackSpec,
) -> None:
    target = create(platform)
    glue = target.client("glue")
    assert glue.get_databases()["DatabaseList"] == []  # moto's CloudFormation skipped it

    for _ in range(2):  # a re-deploy updates what the first created
        fill_gaps(target, platform, resolver(platform), log=lambda _: None)

    tables = glue.get_tables(DatabaseName="sluice_test")["TableList"]
    wanted = platform.resources("AWS::Glue::Table")
    assert sorted(t["Name"] for t in tables) == sorted(
        r["Properties"]["TableInput"]["Name"] for r in wanted.values()
    )
    order = next(t for t in tables if t["Name"] == "order")
    assert order["StorageDescriptor"]["Location"] == "s3://sluice-test-curated/type=order/"
    assert order["Parameters"]["storage.location.template"] == (
        "s3://sluice-test-curated/type=order/dt=${dt}/hour=${hour}"
    )
    assert [k["Name"] for k in order["PartitionKeys"]] == ["dt", "hour"]


@pytest.mark.usefixtures("moto")
def test_doctor_names_a_missing_changed_or_leftover_glue_table(platform: StackSpec) -> None:
    target = create(platform)
    glue = target.client("glue")
    fill_gaps(target, platform, resolver(platform), log=lambda _: None)
    assert catalog_problems(glue, platform, resolver(platform)) == []

    glue.delete_table(DatabaseName="sluice_test", Name="order")
    customer = glue.get_table(DatabaseName="sluice_test", Name="customer")["Table"]
    customer["StorageDescriptor"]["Columns"][0]["Type"] = "bigint"
    glue.update_table(
        DatabaseName="sluice_test",
        TableInput={k: customer[k] for k in ("Name", "StorageDescriptor", "Parameters")},
    )
    leftover = {**customer, "Name": "parcel", "Parameters": {"sluice.record_type": "parcel"}}
    glue.create_table(
        DatabaseName="sluice_test",
        TableInput={k: leftover[k] for k in ("Name", "StorageDescriptor", "Parameters")},
    )

    problems = catalog_problems(glue, platform, resolver(platform))

    assert problems == [
        "Glue table sluice_test.customer: columns differ from the registry's schema "
        "(customer_id bigint, customer_id string)",
        "Glue table sluice_test.order is missing (record type order)",
        "Glue table sluice_test.parcel is left from record type parcel, which is no longer "
        "registered",
    ]
