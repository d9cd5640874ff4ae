"""EventBridge rules deliver PutEvents events to their targets as AWS does, on the runtime.

One runtime for the module (no deploy): toy functions, a custom bus and its rules are made in
moto, then the runtime reads them back (`take_over`) as it reads a deployed stage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from support.waiting import HANG_S, wait_until

from sluice_tools.local import eventbridge
from sluice_tools.local.emulator import ACCOUNT_ID
from sluice_tools.local.runtime import LocalRuntime
from sluice_tools.trace.logsource import EventLog, LogQuery

from .conftest import Echo, queue, toy_runtime, toy_zip

BUS = "toy-events"
LOG_GROUP = "/aws/events/toy"
SLUICE_EVENTS = {"source": [{"prefix": "sluice."}], "detail-type": ["Object Delivered"]}


class Toys:
    def __init__(self, runtime: LocalRuntime) -> None:
        self.runtime = runtime
        self.sqs = runtime.client("sqs")
        self.events = runtime.client("events")
        self.urls: dict[str, str] = {}
        self.arns: dict[str, str] = {}
        self.echo: Echo

    def put(self, detail_type: str, source: str = "sluice.dev", bus: str = BUS, **detail: Any):
        answer = self.events.put_events(
            Entries=[
                {
                    "EventBusName": bus,
                    "Source": source,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                }
            ]
        )
        assert answer["FailedEntryCount"] == 0, answer
        return answer["Entries"][0]["EventId"]

    def bodies(self, name: str) -> list[Any]:
        """Every message now in the toy queue `name` (deleted as read)."""
        got: list[Any] = []
        while True:
            page = self.sqs.receive_message(QueueUrl=self.urls[name], MaxNumberOfMessages=10)
            messages = page.get("Messages") or []
            if not messages:
                return got
            for message in messages:
                got.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.urls[name], ReceiptHandle=message["ReceiptHandle"]
                )


def make_toys(rt: LocalRuntime) -> Toys:
    toys = Toys(rt)
    sqs, lam, iam, events = rt.client("sqs"), rt.client("lambda"), rt.client("iam"), toys.events
    echo_url, _ = queue(sqs, "toy-echo")
    toys.echo = Echo(sqs, echo_url)
    role = iam.create_role(RoleName="toy", AssumeRolePolicyDocument="{}")["Role"]["Arn"]

    def function(name: str, handler: str) -> str:
        return str(
            lam.create_function(
                FunctionName=name,
                Runtime="python3.11",
                Role=role,
                Handler=f"app.{handler}",
                Code={"ZipFile": toy_zip()},
                Timeout=20,
                Environment={"Variables": {"ECHO_URL": echo_url}},
            )["FunctionArn"]
        )

    def toy_queue(name: str) -> str:
        toys.urls[name], arn = queue(sqs, name)
        return arn

    events.create_event_bus(Name=BUS)

    def rule(
        name: str, pattern: Any, *targets: dict[str, Any], permit: bool = True, **extra: Any
    ) -> None:
        """A rule on the bus; its functions let EventBridge invoke them for it (`permit`)."""
        toys.arns[name] = events.put_rule(
            Name=name, EventBusName=BUS, EventPattern=json.dumps(pattern), **extra
        )["RuleArn"]
        events.put_targets(Rule=name, EventBusName=BUS, Targets=list(targets))
        for target in targets:
            if permit and ":lambda:" in target["Arn"]:
                lam.add_permission(
                    FunctionName=target["Arn"],
                    StatementId=f"events-{name}",
                    Action="lambda:InvokeFunction",
                    Principal="events.amazonaws.com",
                    SourceArn=toys.arns[name],
                )

    topic = rt.client("sns").create_topic(Name="toy-delivered-topic")["TopicArn"]
    rt.client("sns").subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=toy_queue("toy-via-topic"),
        Attributes={"RawMessageDelivery": "true"},
    )
    rt.client("logs").create_log_group(logGroupName=LOG_GROUP)
    log_arn = f"arn:aws:logs:{rt.emulator.region}:{ACCOUNT_ID}:log-group:{LOG_GROUP}"
    rule(
        "toy-delivered",
        SLUICE_EVENTS,
        {"Id": "fn", "Arn": function("toy-on-delivered", "record")},
        {"Id": "logs", "Arn": log_arn},
        {"Id": "whole", "Arn": toy_queue("toy-delivered-whole")},
        {"Id": "topic", "Arn": topic},
        {
            "Id": "queue",
            "Arn": toy_queue("toy-delivered-keys"),
            "InputTransformer": {
                "InputPathsMap": {"key": "$.detail.key", "type": "$.detail-type"},
                "InputTemplate": '{"what": "<type>", "key": "<key>"}',
            },
        },
    )
    rule(
        "toy-disabled",
        {"source": [{"prefix": ""}]},
        {"Id": "fn", "Arn": function("toy-never", "record")},
        {"Id": "queue", "Arn": toy_queue("toy-disabled-q")},
        State="DISABLED",
    )
    failures_url, failures_arn = queue(sqs, "toy-failures")
    toys.urls["failures"] = failures_url
    rule(
        "toy-stuck",
        {"detail-type": ["Object Stuck"]},
        {"Id": "fn", "Arn": function("toy-stuck-boom", "boom")},
    )
    lam.put_function_event_invoke_config(
        FunctionName="toy-stuck-boom",
        MaximumRetryAttempts=2,
        DestinationConfig={"OnFailure": {"Destination": failures_arn}},
    )
    rule(
        "toy-unpermitted",
        {"detail-type": ["Unpermitted Probe"]},
        {
            "Id": "fn",
            "Arn": function("toy-unpermitted", "record"),
            "DeadLetterConfig": {"Arn": toy_queue("toy-unpermitted-dlq")},
        },
        permit=False,
    )
    # A schedule on the default bus: moto takes its empty pattern for "match every event".
    events.put_rule(Name="toy-hourly", ScheduleExpression="rate(1 hour)")
    events.put_targets(
        Rule="toy-hourly",
        Targets=[
            {"Id": "fn", "Arn": function("toy-scheduled", "record")},
            {"Id": "queue", "Arn": toy_queue("toy-scheduled-q")},
        ],
    )
    return toys


@pytest.fixture(scope="module")
def toys(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toys]:
    quick = {"async_retry_delays_s": (0.5, 0.5), "schedules": False}
    with toy_runtime(tmp_path_factory, make_toys, **quick) as made:
        yield made


@pytest.fixture(autouse=True)
def _empty_queues(toys: Toys) -> Iterator[None]:
    yield
    assert toys.runtime.wait_drained(HANG_S)
    toys.echo.drain()
    for name in toys.urls:
        toys.bodies(name)


def test_a_rule_on_a_custom_bus_is_part_of_the_topology(toys: Toys):
    rules = {(t.rule, t.function, t.enabled) for t in toys.runtime.topology.events}
    assert rules == {
        ("toy-delivered", "toy-on-delivered", True),
        ("toy-disabled", "toy-never", False),
        ("toy-stuck", "toy-stuck-boom", True),
        ("toy-unpermitted", "toy-unpermitted", True),
    }


def test_a_matching_event_invokes_the_lambda_target_once_with_eventbridges_event(toys: Toys):
    event_id = toys.put("Object Delivered", key="incoming/order/a.jsonl", counts={"in": 3})
    toys.put("Object Landed", key="incoming/order/a.jsonl")  # another detail-type
    toys.put("Object Delivered", source="elsewhere.app", key="x")  # another source
    assert toys.runtime.wait_drained(HANG_S)
    echoes = toys.echo.drain()
    assert [e["function"] for e in echoes] == ["toy-on-delivered"]
    event = echoes[0]["event"]
    assert event["id"] == event_id
    assert event["version"] == "0"
    assert event["detail-type"] == "Object Delivered"
    assert event["source"] == "sluice.dev"
    assert event["account"] == toys.runtime.client("sts").get_caller_identity()["Account"]
    assert event["region"] == toys.runtime.emulator.region
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    assert event["resources"] == []
    assert event["detail"] == {"key": "incoming/order/a.jsonl", "counts": {"in": 3}}


def test_the_same_rules_topic_and_queue_targets_get_the_event(toys: Toys):
    toys.put("Object Delivered", key="incoming/order/b.jsonl")
    assert toys.runtime.wait_drained(HANG_S)
    toys.echo.drain()
    (via_topic,) = wait_until(lambda: toys.bodies("toy-via-topic"), what="the topic's message")
    assert via_topic["detail-type"] == "Object Delivered"
    assert via_topic["detail"] == {"key": "incoming/order/b.jsonl"}
    # A queue target without settings gets the whole event, as the Lambda target does.
    (whole,) = toys.bodies("toy-delivered-whole")
    assert set(whole) == {*eventbridge.EVENT_KEYS, "resources", "detail"}
    assert whole["account"] == ACCOUNT_ID
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", whole["time"])
    # The queue target's input transformer, as moto applies it.
    assert toys.bodies("toy-delivered-keys") == [
        {"what": "Object Delivered", "key": "incoming/order/b.jsonl"}
    ]


def test_a_log_group_target_keeps_the_event_for_sluice_logs_events(toys: Toys):
    event_id = toys.put("Object Delivered", key="incoming/order/logged.jsonl")
    assert toys.runtime.wait_drained(HANG_S)
    lines = EventLog(toys.runtime.client("logs"), LOG_GROUP).read(LogQuery(contains=(event_id,)))
    assert [(line.get("detail-type"), line.fields["detail"]) for line in lines] == [
        ("Object Delivered", {"key": "incoming/order/logged.jsonl"})
    ]


def test_a_function_that_does_not_let_eventbridge_invoke_it_is_not_invoked(toys: Toys):
    toys.put("Unpermitted Probe", key="incoming/order/x.jsonl")
    assert toys.runtime.wait_drained(HANG_S)
    assert toys.echo.drain() == []
    # The target's dead-letter queue gets the event, and why, as EventBridge's would.
    (message,) = toys.sqs.receive_message(
        QueueUrl=toys.urls["toy-unpermitted-dlq"], MessageAttributeNames=["All"]
    )["Messages"]
    assert json.loads(message["Body"])["detail"] == {"key": "incoming/order/x.jsonl"}
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes["RULE_ARN"] == toys.arns["toy-unpermitted"]
    assert attributes["TARGET_ARN"].endswith(":function:toy-unpermitted")
    assert "add-permission" in attributes["ERROR_MESSAGE"]


def test_disabled_and_schedule_only_rules_deliver_no_event(toys: Toys):
    toys.put("Object Delivered", key="incoming/order/c.jsonl")
    toys.put("Anything", source="sluice.dev", bus="default")
    assert toys.runtime.wait_drained(HANG_S)
    functions = {e["function"] for e in toys.echo.drain()}
    assert functions == {"toy-on-delivered"}
    assert toys.bodies("toy-disabled-q") == []
    assert toys.bodies("toy-scheduled-q") == []


def test_a_failing_target_is_retried_twice_then_sent_to_its_on_failure_destination(toys: Toys):
    toys.put("Object Stuck", key="incoming/order/late.jsonl")
    assert toys.runtime.wait_drained(HANG_S)
    assert [e["function"] for e in toys.echo.drain()] == ["toy-stuck-boom"] * 3
    (record,) = wait_until(lambda: toys.bodies("failures"), what="the on-failure record")
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"]["detail-type"] == "Object Stuck"
    assert record["requestPayload"]["detail"] == {"key": "incoming/order/late.jsonl"}


MOTO_EVENT = {
    "version": "0",
    "id": "e-1",
    "detail-type": "Object Delivered",
    "source": "sluice.dev",
    "account": "123456789012",
    "time": 1796428800.5,
    "region": "eu-west-1",
    "resources": [],
    "detail": {"key": "incoming/order/a.jsonl", "counts": {"in": 3}},
    "ingestion-time": 1796428800.7,
}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({"Input": '{"fixed": true}'}, {"fixed": True}),
        ({"InputPath": "$.detail.counts"}, {"in": 3}),
        (
            {
                "InputTransformer": {
                    "InputPathsMap": {"key": "$.detail.key"},
                    "InputTemplate": '{"object": "<key>"}',
                }
            },
            {"object": "incoming/order/a.jsonl"},
        ),
    ],
)
def test_a_targets_input_settings_shape_what_it_receives(target, expected):
    assert eventbridge.target_input(MOTO_EVENT, {"Arn": "x", **target}) == expected


def test_without_input_settings_a_target_receives_the_whole_event_as_aws_sends_it():
    event = eventbridge.target_input(MOTO_EVENT, {"Arn": "x"})
    assert event["time"] == "2026-12-05T00:00:00Z"
    assert "ingestion-time" not in event
    assert event["detail"] == MOTO_EVENT["detail"]
    assert event["account"] == "123456789012"


RULE = "arn:aws:events:us-east-1:123456789012:rule/toy-events/on-delivered"
EVENTS = {"Service": "events.amazonaws.com"}


@pytest.mark.parametrize(
    ("statement", "allowed"),
    [
        (
            {"Principal": {"Service": "events.amazonaws.com"}, "Action": "lambda:InvokeFunction"},
            True,
        ),
        (
            {
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "lambda:InvokeFunction",
                "Condition": {"ArnLike": {"AWS:SourceArn": RULE.replace("on-", "*")}},
            },
            True,
        ),
        (
            {
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "lambda:InvokeFunction",
                "Condition": {"ArnLike": {"AWS:SourceArn": RULE + "-other"}},
            },
            False,
        ),
        ({"Principal": {"Service": "sns.amazonaws.com"}, "Action": "lambda:InvokeFunction"}, False),
        ({"Principal": {"Service": "events.amazonaws.com"}, "Action": "lambda:GetFunction"}, False),
        (
            {
                "Effect": "Deny",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "lambda:InvokeFunction",
            },
            False,
        ),
    ],
)
def test_only_a_matching_allow_lets_eventbridge_invoke_a_function(statement, allowed):
    assert eventbridge.may_invoke([statement], RULE) is allowed
