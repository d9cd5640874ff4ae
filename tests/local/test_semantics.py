"""The runtime delivers events as Lambda does: toy functions on moto, no deploy.

One runtime for the module: the toys and their triggers are created in moto first, then the
runtime reads them back (`take_over`) exactly as it reads a deployed stage.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from support.waiting import HANG_S, wait_until

from sluice_tools.local.faults import FaultRule
from sluice_tools.local.runtime import LocalRuntime, Options

from .conftest import Echo, depth, queue, toy_zip

VISIBILITY_S = 2
TIMEOUT_S = 20


class Toys:
    def __init__(self, runtime: LocalRuntime) -> None:
        self.runtime = runtime
        self.sqs = runtime.client("sqs")
        self.urls: dict[str, str] = {}
        self.arns: dict[str, str] = {}
        self.echo: Echo


def make_toys(rt: LocalRuntime) -> Toys:
    toys = Toys(rt)
    sqs, lam, iam = rt.client("sqs"), rt.client("lambda"), rt.client("iam")
    echo_url, _ = queue(sqs, "toy-echo")
    toys.echo = Echo(sqs, echo_url)
    role = iam.create_role(RoleName="toy", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = toy_zip()

    def function(name: str, handler: str, **extra: Any) -> str:
        env = {"ECHO_URL": echo_url, "TOY_SETTING": f"setting-of-{name}"}
        return str(
            lam.create_function(
                FunctionName=name,
                Runtime="python3.11",
                Role=role,
                Handler=f"app.{handler}",
                Code={"ZipFile": code},
                Timeout=TIMEOUT_S,
                MemorySize=256,
                Environment={"Variables": env},
                **extra,
            )["FunctionArn"]
        )

    def sqs_source(name: str, handler: str, *, report: bool, max_receive: int = 2) -> None:
        dlq_url, dlq_arn = queue(sqs, f"{name}-dlq")
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive})
        url, arn = queue(sqs, f"{name}-q", RedrivePolicy=redrive)
        toys.urls[name], toys.urls[f"{name}-dlq"] = url, dlq_url
        function(name, handler)
        lam.create_event_source_mapping(
            FunctionName=name,
            EventSourceArn=arn,
            BatchSize=10,
            FunctionResponseTypes=["ReportBatchItemFailures"] if report else [],
        )

    sqs_source("toy-reported", "partial", report=True)
    sqs_source("toy-ignored", "partial", report=False)
    sqs_source("toy-boom", "boom", report=True)
    sqs_source("toy-hang", "record", report=True, max_receive=5)

    sns = rt.client("sns")
    topic = sns.create_topic(Name="toy-topic")["TopicArn"]
    toys.arns["topic"] = topic
    arn = function("toy-sns", "record")
    sns.subscribe(
        TopicArn=topic,
        Protocol="lambda",
        Endpoint=arn,
        Attributes={"FilterPolicy": json.dumps({"kind": ["wanted"]})},
    )
    failures_url, failures_arn = queue(sqs, "toy-failures")
    toys.urls["failures"] = failures_url
    boom_topic = sns.create_topic(Name="toy-boom-topic")["TopicArn"]
    toys.arns["boom-topic"] = boom_topic
    arn = function("toy-sns-boom", "boom")
    sns.subscribe(TopicArn=boom_topic, Protocol="lambda", Endpoint=arn)
    lam.put_function_event_invoke_config(
        FunctionName="toy-sns-boom",
        MaximumRetryAttempts=2,
        DestinationConfig={"OnFailure": {"Destination": failures_arn}},
    )

    s3 = rt.client("s3")
    s3.create_bucket(Bucket="toy-landing")
    arn = function("toy-s3", "record")
    s3.put_bucket_notification_configuration(
        Bucket="toy-landing",
        NotificationConfiguration={
            "LambdaFunctionConfigurations": [
                {
                    "Id": "toy-config",
                    "LambdaFunctionArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"}]}},
                }
            ]
        },
    )

    events = rt.client("events")
    arn = function("toy-scheduled", "record")
    rule = events.put_rule(Name="toy-daily", ScheduleExpression="rate(1 day)")["RuleArn"]
    toys.arns["rule"] = rule
    events.put_targets(Rule="toy-daily", Targets=[{"Id": "1", "Arn": arn}])
    return toys


@pytest.fixture(scope="module")
def toys(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toys]:
    options = Options(
        deploy=False,
        state_dir=tmp_path_factory.mktemp("local-state"),
        console=False,
        visibility_timeout_s=VISIBILITY_S,
        async_retry_delays_s=(0.5, 0.5),
    )
    runtime = LocalRuntime(options)
    runtime.start()
    try:
        made = make_toys(runtime)
        runtime.take_over()
        yield made
    finally:
        runtime.stop()


@pytest.fixture(autouse=True)
def _no_faults(toys: Toys) -> Iterator[None]:
    yield
    toys.runtime.options.faults.clear()


def send(toys: Toys, name: str, *bodies: str) -> None:
    toys.sqs.send_message_batch(
        QueueUrl=toys.urls[name],
        Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)],
    )


def test_reported_batch_item_failures_are_retried_and_the_rest_deleted(toys: Toys):
    send(toys, "toy-reported", "ok-1", "fail-2", "ok-3")
    assert toys.runtime.wait_drained(HANG_S)
    seen = [b for echo in toys.echo.drain() for b in echo["bodies"]]
    # The failing message came back until its redrive policy moved it to the DLQ.
    assert seen.count("fail-2") == 2
    assert seen.count("ok-1") == 1
    assert seen.count("ok-3") == 1
    assert depth(toys.sqs, toys.urls["toy-reported-dlq"]) == 1


def test_batch_item_failures_are_ignored_when_the_mapping_does_not_report_them(toys: Toys):
    send(toys, "toy-ignored", "ok-1", "fail-2")
    assert toys.runtime.wait_drained(HANG_S)
    seen = [b for echo in toys.echo.drain() for b in echo["bodies"]]
    # As on AWS: a successful invocation deletes the whole batch, "failures" included (kept,
    # "fail-2" would be in flight until redelivered, and the runtime not drained before).
    assert sorted(seen) == ["fail-2", "ok-1"]
    assert depth(toys.sqs, toys.urls["toy-ignored-dlq"]) == 0


def test_a_raising_function_gets_the_batch_again_until_it_is_dead_lettered(toys: Toys):
    send(toys, "toy-boom", "anything")
    assert toys.runtime.wait_drained(HANG_S)
    attempts = toys.echo.drain()
    assert len(attempts) == 2  # maxReceiveCount 2, then moto's redrive on the next receive
    assert depth(toys.sqs, toys.urls["toy-boom-dlq"]) == 1
    assert depth(toys.sqs, toys.urls["toy-boom"]) == 0


def test_the_function_runs_its_zip_with_its_environment_and_a_lambda_context(toys: Toys):
    send(toys, "toy-hang", "hello")
    (echo,) = toys.echo.take(1)
    assert echo["function"] == "toy-hang"
    assert echo["env"]["TOY_SETTING"] == "setting-of-toy-hang"
    assert echo["env"]["AWS_LAMBDA_FUNCTION_NAME"] == "toy-hang"
    assert echo["env"]["AWS_LAMBDA_FUNCTION_TIMEOUT"] == str(TIMEOUT_S)
    assert echo["env"]["AWS_ENDPOINT_URL"] == toys.runtime.endpoint
    assert echo["path0"] == echo["env"]["LAMBDA_TASK_ROOT"]
    assert not echo["dev_packages_visible"]  # click is in the dev venv, not in the zip
    assert 0 < echo["remaining_ms"] <= TIMEOUT_S * 1000
    assert echo["memory"] == 256
    assert echo["arn"].endswith(":function:toy-hang")
    (record,) = echo["event"]["Records"]
    assert record["body"] == "hello"
    assert record["eventSource"] == "aws:sqs"
    # The first delivery is the first receive: moto itself never receives from a mapped queue
    # (without the runtime's patch it does on every SendMessage, and this count is 2).
    assert record["attributes"]["ApproximateReceiveCount"] == "1"


def test_a_worker_killed_mid_batch_loses_nothing(toys: Toys):
    toys.runtime.options.faults.add(FaultRule(function="toy-hang", kind="hang", times=1))
    send(toys, "toy-hang", "survivor")
    (pid,) = wait_until(lambda: toys.runtime.busy_workers("toy-hang"), what="a busy worker")
    os.kill(pid, signal.SIGKILL)
    (echo,) = toys.echo.take(1)
    (record,) = echo["event"]["Records"]
    assert record["body"] == "survivor"
    assert record["attributes"]["ApproximateReceiveCount"] == "2"  # visible again, redelivered
    assert toys.runtime.wait_drained(HANG_S)
    assert depth(toys.sqs, toys.urls["toy-hang-dlq"]) == 0


def test_sns_delivers_the_lambda_event_through_the_filter_policy(toys: Toys):
    sns = toys.runtime.client("sns")
    for kind in ("unwanted", "wanted"):
        sns.publish(
            TopicArn=toys.arns["topic"],
            Message=f"a {kind} message",
            MessageAttributes={"kind": {"DataType": "String", "StringValue": kind}},
        )
    assert toys.runtime.wait_drained(HANG_S)
    echoes = toys.echo.drain()
    assert len(echoes) == 1
    (record,) = echoes[0]["event"]["Records"]
    assert record["EventSource"] == "aws:sns"
    assert record["Sns"]["Message"] == "a wanted message"
    assert record["Sns"]["TopicArn"] == toys.arns["topic"]
    assert record["Sns"]["MessageAttributes"]["kind"] == {"Type": "String", "Value": "wanted"}


def test_a_failing_async_invocation_is_retried_twice_then_sent_to_its_destination(toys: Toys):
    toys.runtime.client("sns").publish(TopicArn=toys.arns["boom-topic"], Message="doomed")
    assert toys.runtime.wait_drained(HANG_S)
    assert len(toys.echo.drain()) == 3  # 1 attempt + 2 retries
    (message,) = wait_until(
        lambda: toys.sqs.receive_message(QueueUrl=toys.urls["failures"]).get("Messages"),
        what="the on-failure destination's message",
    )
    record = json.loads(message["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].split(":")[6] == "toy-sns-boom"
    assert record["requestPayload"]["Records"][0]["Sns"]["Message"] == "doomed"
    assert record["responsePayload"]["errorType"] == "RuntimeError"


def test_s3_objects_matching_the_notification_invoke_the_function_once(toys: Toys):
    s3 = toys.runtime.client("s3")
    s3.put_object(Bucket="toy-landing", Key="in/a b+c.json", Body=b"{}")
    s3.put_object(Bucket="toy-landing", Key="elsewhere/x.json", Body=b"{}")
    assert toys.runtime.wait_drained(HANG_S)
    echoes = toys.echo.drain()
    assert len(echoes) == 1
    (record,) = echoes[0]["event"]["Records"]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == "toy-landing"
    assert record["s3"]["object"]["key"] == "in/a+b%2Bc.json"  # form-URL-encoded, as S3 sends
    assert record["s3"]["object"]["size"] == 2
    assert record["s3"]["object"]["eTag"]
    assert record["s3"]["configurationId"] == "toy-config"


def test_a_schedule_fires_on_demand_with_the_scheduled_event(toys: Toys):
    assert toys.runtime.fire("scheduled") == "toy-scheduled"
    (echo,) = toys.echo.take(1)
    event = echo["event"]
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"] == [toys.arns["rule"]]
