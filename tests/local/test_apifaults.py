"""Faults at the emulator's API layer, as boto3 clients see them (apifaults.py).

One emulator for the module. A "worker" client carries the app id a function worker puts in
its User-Agent; a "runtime" client is any other (the runtime's pollers, deploy, tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sluice_tools.local import apifaults
from sluice_tools.local.apifaults import ApiFaultPlan, ApiFaultRule
from sluice_tools.local.emulator import CREDENTIALS, Emulator, client
from sluice_tools.local.pool import FunctionPool, register_worker
from sluice_tools.local.worker import WorkerSpec, app_id

from .conftest import queue

RETRIES = 2  # per call, in the worker clients here (botocore's standard mode)
FUNCTION = "sluice-toy-local-handler"
FAKE_PID = 999_999_999  # above any pid_max: never a process (kill_after has its own test)


@dataclass
class Stage:
    """The emulator, resources in it, and clients of both kinds."""

    emulator: Emulator
    table: str
    queue_url: str
    topic_arn: str
    topic_tap: str  # a queue subscribed to the topic
    bucket: str

    def runtime(self, service: str) -> Any:
        return client(service, self.emulator.endpoint)

    def worker(self, service: str, function: str = FUNCTION, retries: int = RETRIES) -> Any:
        """A client as a worker of `function` makes it (a fake pid, registered as the pool does)."""
        pid = FAKE_PID + sum(map(ord, function))
        register_worker(pid, function)
        config = Config(
            retries={"mode": "standard", "max_attempts": retries},  # retries, not attempts
            user_agent_appid=app_id(pid),  # type: ignore[call-arg]  # botocore's stubs lag
            connect_timeout=5,
            read_timeout=30,
        )
        session: Any = boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=CREDENTIALS["AWS_SESSION_TOKEN"],
            region_name=self.emulator.region,
        )
        return session.client(service, endpoint_url=self.emulator.endpoint, config=config)


@pytest.fixture(scope="module")
def stage(aws_env: None) -> Iterator[Stage]:
    emulator = Emulator()
    emulator.start()
    try:
        endpoint = emulator.endpoint
        ddb, sqs = client("dynamodb", endpoint), client("sqs", endpoint)
        sns, s3 = client("sns", endpoint), client("s3", endpoint)
        ddb.create_table(
            TableName="faults",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        url, _ = queue(sqs, "faults")
        topic = sns.create_topic(Name="faults")["TopicArn"]
        tap, tap_arn = queue(sqs, "faults-tap")
        sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=tap_arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        s3.create_bucket(Bucket="faults-bucket")
        yield Stage(emulator, "faults", url, topic, tap, "faults-bucket")
    finally:
        emulator.stop()


@pytest.fixture
def plan() -> Iterator[Callable[..., ApiFaultPlan]]:
    """Put a plan in force for one test (`plan(rule, ..., seed=N)`); none afterwards."""

    def use(*rules: ApiFaultRule, seed: int | None = None) -> ApiFaultPlan:
        made = ApiFaultPlan(rules, seed=seed)
        apifaults.use(made)
        return made

    yield use
    apifaults.use(None)


# One write per service, and how to see afterwards whether it happened.
def _put_item(stage: Stage, ddb: Any, tag: str) -> None:
    ddb.put_item(TableName=stage.table, Item={"pk": {"S": tag}})


def _item_exists(stage: Stage, tag: str) -> bool:
    got = stage.runtime("dynamodb").get_item(TableName=stage.table, Key={"pk": {"S": tag}})
    return "Item" in got


def _send(stage: Stage, sqs: Any, tag: str) -> None:
    sqs.send_message(QueueUrl=stage.queue_url, MessageBody=tag)


def _publish(stage: Stage, sns: Any, tag: str) -> None:
    sns.publish(TopicArn=stage.topic_arn, Message=tag)


def _put_object(stage: Stage, s3: Any, tag: str) -> None:
    s3.put_object(Bucket=stage.bucket, Key=tag, Body=b"{}")


def _object_exists(stage: Stage, tag: str) -> bool:
    listed = stage.runtime("s3").list_objects_v2(Bucket=stage.bucket, Prefix=tag)
    return any(o["Key"] == tag for o in listed.get("Contents") or [])


def _bodies(url: str, stage: Stage) -> list[str]:
    """Every message body of a queue, consumed (the queues here are per test content)."""
    sqs = stage.runtime("sqs")
    bodies: list[str] = []
    while True:
        page = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages")
        if not page:
            return bodies
        for message in page:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


WRITES = {
    "dynamodb": _put_item,
    "sqs": _send,
    "sns": _publish,
    "s3": _put_object,
}
THROTTLING = {
    "dynamodb": ("ProvisionedThroughputExceededException", 400),
    "sqs": ("RequestThrottled", 400),
    "sns": ("Throttling", 400),
    "s3": ("SlowDown", 503),
}
INTERNAL = {
    "dynamodb": ("InternalServerError", 500),
    "sqs": ("InternalFailure", 500),
    "sns": ("InternalError", 500),
    "s3": ("InternalError", 500),
}


def _written(stage: Stage, service: str, tag: str) -> int:
    """How many times the write tagged `tag` took effect."""
    if service == "dynamodb":
        return int(_item_exists(stage, tag))
    if service == "s3":
        return int(_object_exists(stage, tag))
    url = stage.queue_url if service == "sqs" else stage.topic_tap
    return sum(1 for body in _bodies(url, stage) if body == tag)


def _failure(call: Callable[[], Any]) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize("service", sorted(WRITES))
def test_a_throttle_is_the_services_own_throttling_error_and_botocore_retries_it(
    stage: Stage, plan: Callable[..., ApiFaultPlan], service: str
):
    made = plan(ApiFaultRule(kind="throttle", service=service))
    tag = f"throttle-{service}"
    error = _failure(lambda: WRITES[service](stage, stage.worker(service), tag))
    code, status = THROTTLING[service]
    assert error.response["Error"]["Code"] == code
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error.response["ResponseMetadata"]["RetryAttempts"] == RETRIES
    assert made.counts() == {"throttle": RETRIES + 1}
    assert _written(stage, service, tag) == 0  # moto never saw it


@pytest.mark.parametrize("service", sorted(WRITES))
def test_an_error_before_is_a_500_and_nothing_is_written(
    stage: Stage, plan: Callable[..., ApiFaultPlan], service: str
):
    plan(ApiFaultRule(kind="error_before", service=service))
    tag = f"before-{service}"
    error = _failure(lambda: WRITES[service](stage, stage.worker(service), tag))
    code, status = INTERNAL[service]
    assert error.response["Error"]["Code"] == code
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error.response["ResponseMetadata"]["RetryAttempts"] == RETRIES
    assert _written(stage, service, tag) == 0


@pytest.mark.parametrize("service", sorted(WRITES))
def test_an_error_after_writes_and_loses_the_answer(
    stage: Stage, plan: Callable[..., ApiFaultPlan], service: str
):
    # Once, without SDK retries: the call fails, yet its write is there.
    plan(ApiFaultRule(kind="error_after", service=service, times=1))
    tag = f"after-{service}"
    error = _failure(lambda: WRITES[service](stage, stage.worker(service, retries=0), tag))
    assert error.response["Error"]["Code"] == INTERNAL[service][0]
    assert _written(stage, service, tag) == 1


def test_the_sdks_retry_of_a_lost_answer_writes_again(
    stage: Stage, plan: Callable[..., ApiFaultPlan]
):
    # What the functions meet: the first answer lost, the retry succeeds, two messages sent.
    plan(ApiFaultRule(kind="error_after", service="sqs", operations=("SendMessage",), times=1))
    response = stage.worker("sqs").send_message(QueueUrl=stage.queue_url, MessageBody="twice")
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert _bodies(stage.queue_url, stage).count("twice") == 2


TOY_WRITER = """
import os, boto3

def handler(event, context):
    ddb = boto3.client("dynamodb")
    ddb.put_item(TableName=event["table"], Item={"pk": {"S": event["tag"]}})
    open(event["after"], "w").write("the worker went on after its write")
    return {"ok": True}
"""


def _toy_pool(stage: Stage, tmp_path: Path, function: str) -> FunctionPool:
    code = tmp_path / "code"
    code.mkdir()
    (code / "toy.py").write_text(TOY_WRITER)
    spec = WorkerSpec(
        function=function,
        arn=f"arn:aws:lambda:us-east-1:123456789012:function:{function}",
        handler="toy.handler",
        code_dir=str(code),
        runtime_dir=str(tmp_path / "runtime"),
        environment=stage.emulator.env(),
        timeout_s=60,
        memory_mb=128,
        log_path=str(tmp_path / "toy.log"),
        console=False,
        isolate=False,
    )
    return FunctionPool(spec, concurrency=1)


def test_kill_after_sigkills_the_worker_once_its_write_is_done(
    stage: Stage, plan: Callable[..., ApiFaultPlan], tmp_path: Path
):
    made = plan(ApiFaultRule(kind="kill_after", service="dynamodb", operations=("PutItem",)))
    pool = _toy_pool(stage, tmp_path, "sluice-toy-local-writer")
    after = tmp_path / "after.txt"
    try:
        outcome = pool.invoke({"table": stage.table, "tag": "killed-writer", "after": str(after)})
        kept = list(pool._idle)  # a dead worker is not kept
    finally:
        pool.stop()
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error["errorType"] == "Runtime.ExitError"
    assert "exit code -9" in outcome.error["errorMessage"]  # SIGKILL
    assert not kept
    assert _item_exists(stage, "killed-writer")  # the write happened
    assert not after.exists()  # and nothing after it
    assert made.counts() == {"kill_after": 1}


def test_a_worker_of_another_function_is_not_faulted_by_a_rule_naming_one(
    stage: Stage, plan: Callable[..., ApiFaultPlan], tmp_path: Path
):
    plan(ApiFaultRule(kind="kill_after", service="dynamodb", function="-writer"))
    pool = _toy_pool(stage, tmp_path, "sluice-consumer-toy-reader-local-consume_records")
    after = tmp_path / "after.txt"
    try:
        outcome = pool.invoke({"table": stage.table, "tag": "spared", "after": str(after)})
    finally:
        pool.stop()
    assert outcome.ok, outcome.error
    assert after.exists()
    # The worker's app id is short enough for botocore (it warns past 50 characters).
    assert "user_agent_appid" not in (tmp_path / "toy.log").read_text()


@pytest.mark.parametrize("kind", ["throttle", "error_before", "error_after", "kill_after"])
def test_requests_of_non_worker_clients_are_never_faulted(
    stage: Stage, plan: Callable[..., ApiFaultPlan], kind: str
):
    made = plan(*(ApiFaultRule(kind=kind, service=s) for s in WRITES if kind != "kill_after"))
    if kind != "kill_after":  # the plan is live: a worker's call is faulted
        _failure(lambda: _send(stage, stage.worker("sqs", retries=0), f"worker-{kind}"))
        assert made.seen == 1
    else:
        made.add(ApiFaultRule(kind=kind))
    for service, write in WRITES.items():
        tag = f"runtime-{kind}-{service}"
        write(stage, stage.runtime(service), tag)
        assert _written(stage, service, tag) == 1
    assert made.seen == (0 if kind == "kill_after" else 1)


def test_rules_match_the_operation_and_the_function(
    stage: Stage, plan: Callable[..., ApiFaultPlan]
):
    made = plan(
        ApiFaultRule(
            kind="error_before",
            service="sqs",
            operations=("SendMessageBatch",),
            function="-route",
        )
    )
    entries = [{"Id": "1", "MessageBody": "batch"}]
    route, other = stage.worker("sqs", "sluice-router-local-route"), stage.worker("sqs")
    route.send_message(QueueUrl=stage.queue_url, MessageBody="single")  # another operation
    other.send_message_batch(QueueUrl=stage.queue_url, Entries=entries)  # another function
    error = _failure(lambda: route.send_message_batch(QueueUrl=stage.queue_url, Entries=entries))
    assert error.response["Error"]["Code"] == "InternalFailure"
    assert made.fired == {("error_before", "sqs", "SendMessageBatch"): RETRIES + 1}
    assert sorted(_bodies(stage.queue_url, stage)) == ["batch", "single"]


def test_stopped_faults_fire_no_more(stage: Stage, plan: Callable[..., ApiFaultPlan]):
    made = plan(ApiFaultRule(kind="error_before", service="dynamodb"))
    ddb = stage.worker("dynamodb", retries=0)
    _failure(lambda: _put_item(stage, ddb, "while-on"))
    made.stop()
    _put_item(stage, ddb, "once-stopped")
    assert _item_exists(stage, "once-stopped")
    assert made.counts() == {"error_before": 1}


def test_a_limited_rule_fires_its_number_of_times(stage: Stage, plan: Callable[..., ApiFaultPlan]):
    made = plan(ApiFaultRule(kind="throttle", service="dynamodb", times=2))
    response = stage.worker("dynamodb").put_item(TableName=stage.table, Item={"pk": {"S": "t2"}})
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert made.counts() == {"throttle": 2}


def _pattern(stage: Stage, seed: int) -> list[str]:
    """Which of 40 calls failed, and how, under a plan of two kinds at 30% each."""
    apifaults.use(
        ApiFaultPlan(
            [
                ApiFaultRule(kind="throttle", service="sqs", rate=0.3),
                ApiFaultRule(kind="error_before", service="sqs", rate=0.3),
            ],
            seed=seed,
        )
    )
    sqs = stage.worker("sqs", retries=0)
    seen = []
    for i in range(40):
        try:
            sqs.send_message(QueueUrl=stage.queue_url, MessageBody=f"seeded-{i}")
            seen.append("ok")
        except ClientError as exc:
            seen.append(exc.response["Error"]["Code"])
    _bodies(stage.queue_url, stage)
    return seen


def test_a_seeded_plan_fires_the_same_way_twice(stage: Stage, plan: Callable[..., ApiFaultPlan]):
    first, again, other = _pattern(stage, 7), _pattern(stage, 7), _pattern(stage, 8)
    assert first == again
    assert {"ok", "RequestThrottled", "InternalFailure"} <= set(first)
    assert first != other


@pytest.mark.parametrize(
    ("method", "path", "query", "copy", "operation"),
    [
        ("PUT", "/b/k/x.json", "", "", "PutObject"),
        ("PUT", "/b/k", "", "b/src", "CopyObject"),
        ("GET", "/b/k", "", "", "GetObject"),
        ("HEAD", "/b/k", "", "", "HeadObject"),
        ("DELETE", "/b/k", "", "", "DeleteObject"),
        ("GET", "/b", "list-type=2&prefix=x", "", "ListObjectsV2"),
        ("POST", "/b/k", "uploads", "", "CreateMultipartUpload"),
        ("PUT", "/b/k", "partNumber=1&uploadId=u", "", "UploadPart"),
        ("POST", "/b/k", "uploadId=u", "", "CompleteMultipartUpload"),
        ("PUT", "/b/k", "tagging", "", "PutObjectTagging"),
    ],
)
def test_s3_operations_are_named_from_method_path_and_query(method, path, query, copy, operation):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
    if copy:
        environ["HTTP_X_AMZ_COPY_SOURCE"] = copy
    assert apifaults.s3_operation(environ) == operation


def test_a_plan_is_read_from_env_json():
    made = ApiFaultPlan.from_env(
        {
            "SLUICE_API_FAULTS": '{"seed": 3, "rules": [{"kind": "kill_after", "service": "sqs",'
            ' "operations": ["SendMessageBatch"], "function": "-ingest", "rate": 0.1}]}'
        }
    )
    assert made.seed == 3
    (rule,) = made.rules
    assert (rule.kind, rule.service, rule.operations, rule.function, rule.rate) == (
        "kill_after",
        "sqs",
        ("SendMessageBatch",),
        "-ingest",
        0.1,
    )
    assert not ApiFaultPlan.from_env({}).enabled


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        ApiFaultRule(kind="explode")
