"""`sluice deploy --stage test` of the whole pipeline into moto's server, then `doctor`.

One deploy per session (support.deployed: chalice deploy runs as a subprocess per app, about
a minute in all); the checks read the deployed state with boto3, then break one thing at a
time and put it back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from support.deployed import ROOT, STAGE, Deployed

from sluice_tools.cli import main
from sluice_tools.deploy.apps import discover_apps
from sluice_tools.deploy.pipeline import deploy_stage
from sluice_tools.deploy.render import RenderedApp
from sluice_tools.deploy.state import resolver_for
from sluice_tools.deploy.templates import stage_stacks
from sluice_tools.motocompat.cfn import fill_gaps
from sluice_tools.stages import PIPELINE_STAGES

pytestmark = pytest.mark.slow


def expected_functions() -> dict[str, str]:
    """{function name: handler} of every function the apps declare."""
    return {
        app.function_name(STAGE, handler): handler
        for app in discover_apps(ROOT)
        for handler in app.handlers(STAGE)
    }


def rendered_functions(deployed: Deployed) -> dict[str, tuple[RenderedApp, str]]:
    """{function name: (its app as rendered by the deploy, handler)}."""
    return {
        rendered.function_name(handler): (rendered, handler)
        for rendered in deployed.report.rendered
        for handler in rendered.policies
    }


def doctor(deployed: Deployed) -> Any:
    return CliRunner().invoke(main, ["doctor", "--stage", STAGE], catch_exceptions=False)


def sqs_mappings(deployed: Deployed) -> list[dict[str, Any]]:
    names = set(expected_functions())
    found = deployed.client("lambda").list_event_source_mappings()["EventSourceMappings"]
    return [m for m in found if m["FunctionArn"].rsplit(":", 1)[-1] in names]


def subscriptions(deployed: Deployed) -> list[dict[str, Any]]:
    return list(deployed.client("sns").list_subscriptions()["Subscriptions"])


def test_deploy_reports_every_app_in_pipeline_order(deployed: Deployed) -> None:
    assert deployed.report.ok, "\n".join(deployed.log)
    apps = deployed.report.apps
    assert apps[: len(PIPELINE_STAGES)] == list(PIPELINE_STAGES)
    assert sorted(apps[3:]) == apps[3:]
    assert all(a.startswith("consumers/") for a in apps[3:])


def test_every_function_exists_with_the_stage_and_prefix_in_its_environment(
    deployed: Deployed,
) -> None:
    lam = deployed.client("lambda")
    functions = rendered_functions(deployed)
    assert set(functions) == set(expected_functions())
    for name, (rendered, handler) in functions.items():
        fn = lam.get_function_configuration(FunctionName=name)
        env = fn["Environment"]["Variables"]
        assert (env["SLUICE_STAGE"], env["SLUICE_RESOURCE_PREFIX"]) == (STAGE, "sluice")
        assert env == rendered.environment(handler)
        assert fn["FunctionArn"].startswith("arn:aws:lambda:us-east-1:")


def test_every_sqs_mapping_reports_batch_item_failures(deployed: Deployed) -> None:
    mappings = sqs_mappings(deployed)
    queues = {m["EventSourceArn"].rsplit(":", 1)[-1] for m in mappings}
    assert {"sluice-test-raw", "sluice-test-clean", "sluice-test-ingest-continue"} <= queues
    for mapping in mappings:
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"], mapping


def test_the_landing_bucket_notifies_ingest(deployed: Deployed) -> None:
    config = deployed.client("s3").get_bucket_notification_configuration(
        Bucket="sluice-test-landing"
    )
    targets = [c["LambdaFunctionArn"] for c in config["LambdaFunctionConfigurations"]]
    assert any(t.endswith(":function:sluice-ingest-test-on_object_created") for t in targets)


def test_every_consumer_subscription_carries_its_filter_policy(deployed: Deployed) -> None:
    sns = deployed.client("sns")
    by_endpoint = {s["Endpoint"].rsplit(":", 1)[-1]: s for s in subscriptions(deployed)}
    checked = 0
    for spec in stage_stacks(ROOT, STAGE):
        resolver = resolver_for(deployed.target, spec)
        wanted = []
        for logical in spec.resources("AWS::SNS::Subscription"):
            props = resolver.properties(logical)
            wanted.append((props["Endpoint"].rsplit(":", 1)[-1], props["FilterPolicy"]))
        if spec.sluice_metadata.get("Direct"):
            name = spec.role.removeprefix("consumer-")
            wanted.append(
                (f"sluice-consumer-{name}-test-consume", spec.sluice_metadata["FilterPolicy"])
            )
        for endpoint, policy in wanted:
            attrs = sns.get_subscription_attributes(
                SubscriptionArn=by_endpoint[endpoint]["SubscriptionArn"]
            )["Attributes"]
            assert json.loads(attrs["FilterPolicy"]) == policy
            checked += 1
    assert checked >= 3


def test_every_dlq_and_failure_queue_has_a_depth_alarm(deployed: Deployed) -> None:
    alarms = deployed.client("cloudwatch").describe_alarms()["MetricAlarms"]
    watched = {
        d["Value"]
        for a in alarms
        if a["MetricName"] == "ApproximateNumberOfMessagesVisible"
        for d in a["Dimensions"]
        if d["Name"] == "QueueName"
    }
    queues = [
        url.rsplit("/", 1)[-1]
        for url in deployed.client("sqs").list_queues(QueueNamePrefix="sluice-test-")["QueueUrls"]
    ]
    terminal = [q for q in queues if q.endswith(("-dlq", "-failures"))]
    assert len(terminal) >= 5
    assert set(terminal) <= watched


def test_async_functions_send_failures_to_their_app_queue(deployed: Deployed) -> None:
    lam = deployed.client("lambda")
    for name, queue in (
        ("sluice-ingest-test-on_object_created", "sluice-test-ingest-failures"),
        ("sluice-ingest-test-pull_sources", "sluice-test-ingest-failures"),
        ("sluice-consumer-alerts-test-consume", "sluice-test-consumer-alerts-failures"),
    ):
        config = lam.get_function_event_invoke_config(FunctionName=name)
        assert config["MaximumRetryAttempts"] == 2
        assert config["DestinationConfig"]["OnFailure"]["Destination"].endswith(f":{queue}")


def test_moto_gaps_are_filled_from_the_templates(deployed: Deployed) -> None:
    s3, ddb = deployed.client("s3"), deployed.client("dynamodb")
    block = s3.get_public_access_block(Bucket="sluice-test-landing")
    assert all(block["PublicAccessBlockConfiguration"].values())
    assert s3.get_bucket_versioning(Bucket="sluice-test-landing")["Status"] == "Enabled"
    # moto would enforce the TLS-only Deny without its Condition: left out, buckets stay usable.
    s3.put_object(Bucket="sluice-test-payloads", Key="probe", Body=b"x")
    ttl = ddb.describe_time_to_live(TableName="sluice-test-idempotency")["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"


def test_doctor_passes_on_the_fresh_deployment(deployed: Deployed) -> None:
    result = doctor(deployed)

    assert result.exit_code == 0, result.output
    assert "stage test OK" in result.output


def test_deploying_twice_is_harmless_and_duplicates_nothing(deployed: Deployed) -> None:
    before = (len(sqs_mappings(deployed)), len(subscriptions(deployed)))

    result = CliRunner().invoke(
        main,
        ["deploy", "--stage", STAGE, "--build-dir", str(deployed.build_dir)],
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    assert "no changes" in result.output  # the stacks
    assert (len(sqs_mappings(deployed)), len(subscriptions(deployed))) == before
    assert "stage test OK" in result.output


def test_doctor_names_a_mapping_that_does_not_report_batch_item_failures(
    deployed: Deployed,
) -> None:
    lam = deployed.client("lambda")
    mapping = next(
        m for m in sqs_mappings(deployed) if m["EventSourceArn"].endswith(":sluice-test-raw")
    )
    lam.update_event_source_mapping(UUID=mapping["UUID"], FunctionResponseTypes=[])
    try:
        result = doctor(deployed)
    finally:
        lam.update_event_source_mapping(
            UUID=mapping["UUID"], FunctionResponseTypes=["ReportBatchItemFailures"]
        )

    assert result.exit_code == 1
    assert "mapping sluice-test-raw → sluice-cleanse-test-cleanse does not report" in result.output


def test_doctor_names_a_queue_whose_dlq_was_deleted(deployed: Deployed) -> None:
    sqs = deployed.client("sqs")
    url = sqs.get_queue_url(QueueName="sluice-test-clean-dlq")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["MessageRetentionPeriod"])
    sqs.delete_queue(QueueUrl=url)
    try:
        result = doctor(deployed)
    finally:
        sqs.create_queue(QueueName="sluice-test-clean-dlq", Attributes=attributes["Attributes"])

    assert result.exit_code == 1
    assert "queue sluice-test-clean-dlq does not exist" in result.output
    assert "queue sluice-test-clean has no DLQ" in result.output


def test_doctor_names_a_subscription_without_its_filter_policy(deployed: Deployed) -> None:
    sns = deployed.client("sns")
    sub = next(
        s for s in subscriptions(deployed) if s["Endpoint"].endswith(":sluice-test-consumer-index")
    )
    policy = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"][
        "FilterPolicy"
    ]
    sns.set_subscription_attributes(
        SubscriptionArn=sub["SubscriptionArn"], AttributeName="FilterPolicy", AttributeValue=""
    )
    try:
        result = doctor(deployed)
    finally:
        sns.set_subscription_attributes(
            SubscriptionArn=sub["SubscriptionArn"],
            AttributeName="FilterPolicy",
            AttributeValue=policy,
        )

    assert result.exit_code == 1
    assert "subscription sqs:sluice-test-consumer-index lacks its filter policy" in result.output


def test_doctor_names_a_deleted_alarm(deployed: Deployed) -> None:
    cloudwatch = deployed.client("cloudwatch")
    cloudwatch.delete_alarms(AlarmNames=["sluice-test-consumer-warehouse-dlq-depth"])
    try:
        result = doctor(deployed)
    finally:
        for spec in stage_stacks(ROOT, STAGE, consumers=["warehouse"])[1:]:
            fill_gaps(deployed.target, spec, resolver_for(deployed.target, spec), log=print)

    assert result.exit_code == 1
    assert "alarm sluice-test-consumer-warehouse-dlq-depth does not exist" in result.output


def test_doctor_names_an_async_function_without_a_failure_destination(
    deployed: Deployed,
) -> None:
    lam = deployed.client("lambda")
    name = "sluice-ingest-test-pull_sources"
    lam.delete_function_event_invoke_config(FunctionName=name)
    try:
        result = doctor(deployed)
    finally:
        deploy_stage(deployed.target, ["ingest"], build_dir=deployed.build_dir, log=print)

    assert result.exit_code == 1
    assert f"function {name} (events:" in result.output
    assert "has no on-failure destination" in result.output


def test_doctor_names_a_duplicate_mapping_and_a_deploy_removes_it(deployed: Deployed) -> None:
    lam = deployed.client("lambda")
    extra = lam.create_event_source_mapping(
        EventSourceArn="arn:aws:sqs:us-east-1:123456789012:sluice-test-clean",
        FunctionName="sluice-router-test-route",
        BatchSize=10,
    )

    result = doctor(deployed)
    deploy_stage(deployed.target, ["router"], build_dir=deployed.build_dir, log=print)

    assert result.exit_code == 1
    assert "sluice-router-test-route has 2 mappings from sluice-test-clean" in result.output
    uuids = {m["UUID"] for m in sqs_mappings(deployed)}
    assert extra["UUID"] not in uuids


def test_doctor_is_ok_again_after_every_repair(deployed: Deployed) -> None:
    result = doctor(deployed)

    assert result.exit_code == 0, result.output
