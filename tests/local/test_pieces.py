"""Unit tests of the runtime's pure parts: event shapes, partial batch rules, schedules,
faults, console lines, landing keys. No moto, no processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sluice_tools.local import events
from sluice_tools.local.commands import landing_key
from sluice_tools.local.delivery import S3Dedupe, failed_ids, s3_builder, settled
from sluice_tools.local.faults import FaultPlan, FaultRule, parse
from sluice_tools.local.pool import Outcome
from sluice_tools.local.runtime import internal_queue_name
from sluice_tools.local.schedule import period_seconds
from sluice_tools.local.worker import console_line

BATCH = [{"MessageId": f"m{i}", "ReceiptHandle": f"h{i}"} for i in range(3)]


def ids(messages: Any) -> list[str]:
    return [m["MessageId"] for m in messages]


def test_a_failed_invocation_deletes_nothing():
    assert settled(BATCH, Outcome(ok=False, error={"errorType": "X"}), True) == []
    assert settled(BATCH, Outcome(ok=False, error={"errorType": "X"}), False) == []


def test_batch_item_failures_are_ignored_without_report_batch_item_failures():
    payload = {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert ids(settled(BATCH, Outcome(ok=True, payload=payload), False)) == ["m0", "m1", "m2"]


def test_batch_item_failures_keep_only_the_listed_messages_when_reported():
    payload = {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert ids(settled(BATCH, Outcome(ok=True, payload=payload), True)) == ["m0", "m2"]


@pytest.mark.parametrize("payload", [None, {}, {"batchItemFailures": []}, {"other": 1}])
def test_an_empty_partial_response_is_complete_success(payload):
    assert ids(settled(BATCH, Outcome(ok=True, payload=payload), True)) == ["m0", "m1", "m2"]


@pytest.mark.parametrize(
    "payload",
    [
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"id": "m1"}]},
        {"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]},
        {"batchItemFailures": "m1"},
        "a string",
    ],
)
def test_a_malformed_partial_response_fails_the_whole_batch(payload):
    assert failed_ids(payload, {"m0", "m1", "m2"}) is None
    assert settled(BATCH, Outcome(ok=True, payload=payload), True) == []


def s3_body(key: str = "incoming%2Forder%2Fa+b%2Bc.jsonl") -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": "us-east-1",
                    "eventTime": "2026-11-27T00:00:00.000Z",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "rt-1",
                        "bucket": {"name": "landing", "arn": "arn:aws:s3:::landing"},
                        "object": {"key": key, "size": 12, "eTag": "abc"},
                    },
                }
            ]
        }
    )


def test_s3_records_keep_the_form_encoded_key_with_slashes_and_gain_lambdas_fields():
    found = events.s3_records(s3_body(), "the-lambda-config")
    assert found is not None
    (record,) = found
    assert record["eventSource"] == "aws:s3"
    assert record["s3"]["object"]["key"] == "incoming/order/a+b%2Bc.jsonl"
    assert record["s3"]["object"]["size"] == 12
    assert record["s3"]["object"]["eTag"] == "abc"
    assert record["s3"]["object"]["sequencer"]
    assert record["s3"]["configurationId"] == "the-lambda-config"
    assert record["userIdentity"]["principalId"]


def test_the_s3_test_event_never_reaches_a_function():
    body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "landing"})
    assert events.s3_records(body, "x") is None


def _s3_record(event_name: str, etag: str, version: str = "") -> dict[str, object]:
    obj = {"key": "k", "eTag": etag, **({"versionId": version} if version else {})}
    return {"eventName": event_name, "s3": {"bucket": {"name": "landing"}, "object": obj}}


def test_moto_s_two_events_for_one_multipart_upload_reach_the_function_once():
    # What moto 5.2.5 emits for one multipart upload: the same key and ETag, two event names,
    # in two notification messages.
    dedupe = S3Dedupe()
    put = events.s3_event_key(_s3_record("ObjectCreated:Put", "abc-2"))
    complete = events.s3_event_key(_s3_record("ObjectCreated:CompleteMultipartUpload", "abc-2"))
    assert dedupe.first(put, "m-1")
    assert not dedupe.first(complete, "m-2")
    assert dedupe.filtered == 1
    assert dedupe.first(events.s3_event_key(_s3_record("ObjectCreated:Put", "new-etag")), "m-3")


def test_the_retry_of_an_s3_notification_is_never_taken_for_a_duplicate():
    dedupe = S3Dedupe()
    key = events.s3_event_key(_s3_record("ObjectCreated:Put", "abc"))
    assert dedupe.first(key, "m-1")
    assert dedupe.first(key, "m-1")  # the same message again: Lambda's retry
    assert dedupe.filtered == 0


def test_each_version_of_a_key_is_its_own_s3_event_even_with_the_same_bytes():
    dedupe = S3Dedupe()
    first = events.s3_event_key(_s3_record("ObjectCreated:Put", "abc", "v1"))
    again = events.s3_event_key(_s3_record("ObjectCreated:Put", "abc", "v2"))
    assert dedupe.first(first, "m-1")
    assert dedupe.first(again, "m-2")


class OneMessageQueue:
    """An internal async queue holding one message: receive counts and visibility as SQS."""

    def __init__(self, body: str) -> None:
        self.body, self.receives, self.visible, self.deleted = body, 0, True, False

    def receive_message(self, **_: Any) -> dict[str, Any]:
        if self.deleted or not self.visible:
            return {}
        self.receives += 1
        self.visible = False
        attributes = {"ApproximateReceiveCount": str(self.receives)}
        return {
            "Messages": [
                {
                    "MessageId": "m-1",
                    "ReceiptHandle": "r",
                    "Body": self.body,
                    "Attributes": attributes,
                }
            ]
        }

    def change_message_visibility(self, **_: Any) -> None:
        self.visible = True  # the retry delay has passed

    def delete_message_batch(self, **_: Any) -> None:
        self.deleted = True


class FailsFirst:
    """A function pool whose first `n` invocations fail; it keeps the events it was given."""

    def __init__(self, n: int) -> None:
        from sluice_tools.local.worker import WorkerSpec

        self.n, self.events = n, []  # type: ignore[var-annotated]
        self.spec = WorkerSpec("ingest", "arn:f", "app.h", "", "", {}, 60, 128, "", False)

    def invoke(self, event: Any) -> Any:
        from sluice_tools.local.pool import Outcome

        self.events.append(event)
        ok = len(self.events) > self.n
        return Outcome(ok=ok, error=None if ok else {"errorType": "Injected"})


def test_a_failed_s3_triggered_invocation_is_retried_with_the_same_event():
    import threading

    from sluice_tools.local.delivery import Activity, AsyncPoller
    from sluice_tools.local.topology import FunctionSpec

    body = json.dumps({"Records": [{"eventName": "ObjectCreated:Put", **_s3_record("", "abc")}]})
    queue, pool = OneMessageQueue(body), FailsFirst(1)
    spec = FunctionSpec("ingest", "arn:f", "app.h", 60, 128, {}, "ingest")
    async_poller = AsyncPoller(
        name="p",
        pool=pool,  # type: ignore[arg-type]
        sqs=queue,
        queue_url="url",
        activity=Activity(),
        stop=threading.Event(),
        function=spec,
        build=s3_builder({}, S3Dedupe()),
    )
    for _ in range(3):
        async_poller._poll_once()

    assert len(pool.events) == 2  # the first attempt and its retry
    assert pool.events[0]["Records"][0]["s3"]["object"]["key"] == "k"
    assert pool.events[1] == pool.events[0] | {"Records": pool.events[1]["Records"]}
    assert queue.deleted
    assert async_poller.activity.dropped == 0


def test_the_sns_event_has_lambdas_shape_from_the_sqs_envelope():
    body = json.dumps(
        {
            "Type": "Notification",
            "MessageId": "mid",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
            "Message": "hello",
            "Timestamp": "2026-11-27T00:00:00.000Z",
            "SigningCertURL": "https://cert",
            "UnsubscribeURL": "https://unsub",
            "MessageAttributes": {"priority": {"Type": "String", "Value": "high"}},
        }
    )
    event = events.sns_event(body, "arn:sub")
    (record,) = event["Records"]
    assert record["EventSource"] == "aws:sns"
    assert record["EventSubscriptionArn"] == "arn:sub"
    sns = record["Sns"]
    assert (sns["Type"], sns["MessageId"], sns["Message"]) == ("Notification", "mid", "hello")
    assert sns["MessageAttributes"] == {"priority": {"Type": "String", "Value": "high"}}
    assert sns["SigningCertUrl"] == "https://cert"
    assert sns["Timestamp"] == "2026-11-27T00:00:00.000Z"


def test_the_on_failure_record_has_lambdas_shape():
    record = events.on_failure_record(
        request_id="r1",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:f",
        attempts=3,
        payload={"Records": []},
        error={"errorType": "RuntimeError", "errorMessage": "boom"},
    )
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["requestId"] == "r1"
    assert record["requestPayload"] == {"Records": []}
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorMessage"] == "boom"


def test_the_sqs_event_carries_attributes_in_lambdas_case():
    message = {
        "MessageId": "m",
        "ReceiptHandle": "h",
        "Body": "b",
        "Attributes": {"ApproximateReceiveCount": "2"},
        "MessageAttributes": {"record_type": {"DataType": "String", "StringValue": "order"}},
    }
    (record,) = events.sqs_event([message], "arn:q", "us-east-1")["Records"]
    assert record["messageId"] == "m"
    assert record["attributes"]["ApproximateReceiveCount"] == "2"
    assert record["messageAttributes"]["record_type"]["stringValue"] == "order"
    assert record["messageAttributes"]["record_type"]["dataType"] == "String"
    assert record["eventSourceARN"] == "arn:q"


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(5 minutes)", 300),
        ("rate(1 minute)", 60),
        ("rate(2 hours)", 7200),
        ("rate(1 day)", 86400),
        ("cron(0/15 * * * ? *)", 900),
        ("cron(0 * * * ? *)", 3600),
        ("cron(0 12 * * ? *)", 86400),
    ],
)
def test_schedule_periods(expression, seconds):
    assert period_seconds(expression) == seconds


def test_an_unknown_schedule_never_fires():
    assert period_seconds("at(2026-11-27T00:00:00)") is None
    assert period_seconds("rate(0 minutes)") is None


def test_a_fault_fires_its_number_of_times_for_matching_invocations_only():
    plan = FaultPlan([FaultRule(function="-cleanse", kind="error", times=2, match="o-1")])
    assert plan.decide("sluice-router-local-route", "o-1") is None
    assert plan.decide("sluice-cleanse-local-cleanse", "o-2") is None
    assert (plan.decide("sluice-cleanse-local-cleanse", "x o-1 y") or {}).get("kind") == "error"
    assert plan.decide("sluice-cleanse-local-cleanse", "o-1") is not None
    assert plan.decide("sluice-cleanse-local-cleanse", "o-1") is None


def test_faults_read_from_env_json():
    plan = FaultPlan.from_env({"SLUICE_FAULTS": '[{"function": "route", "kind": "crash"}]'})
    assert plan.rules[0].kind == "crash"
    assert plan.rules[0].times is None
    with pytest.raises(ValueError, match="fault kind"):
        parse('{"function": "x", "kind": "explode"}')


def test_a_json_log_line_becomes_one_short_console_line():
    line = json.dumps(
        {
            "timestamp": "2026-11-27T07:00:01.123Z",
            "level": "WARNING",
            "message": "record rejected",
            "logger": "sluice.batch",
            "correlation_id": "ingest-1",
            "reason": "bad email",
        }
    )
    assert console_line("fn", line) == (
        "07:00:01.123 fn WARNING record rejected correlation_id=ingest-1 reason=bad email"
    )


def test_metric_lines_and_library_chatter_stay_in_the_log_file():
    assert console_line("fn", json.dumps({"_aws": {"CloudWatchMetrics": []}, "X": 1})) is None
    chatter = {"level": "INFO", "message": "Found credentials", "logger": "botocore.credentials"}
    assert console_line("fn", json.dumps(chatter)) is None
    assert str(console_line("fn", "plain print output")).endswith("fn plain print output")


def test_landing_keys_keep_the_incoming_layout(tmp_path: Path):
    sample = tmp_path / "samples" / "incoming" / "order" / "a.jsonl"
    assert landing_key(sample) == "incoming/order/a.jsonl"
    assert landing_key(tmp_path / "customer" / "c.csv") == "incoming/customer/c.csv"


def test_internal_queue_names_fit_sqs():
    assert internal_queue_name("sluice-ingest-local-on_object_created", "s3") == (
        "sluice-ingest-local-on_object_created-rt-s3"
    )
    long = internal_queue_name("f" * 90, "schedule")
    assert len(long) <= 80
    assert long.endswith("-rt-schedule")


class FakeSqs:
    """Hands out pre-set pages of messages, one page per receive call."""

    def __init__(self, pages: list[int]) -> None:
        self.pages = pages
        self.calls: list[dict[str, Any]] = []
        self.sent = 0

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        size = min(self.pages.pop(0), kwargs["MaxNumberOfMessages"]) if self.pages else 0
        messages = [{"MessageId": f"m{self.sent + i}"} for i in range(size)]
        self.sent += size
        return {"Messages": messages} if messages else {}


def poller(sqs: FakeSqs, batch_size: int, window_s: int, visibility: int | None = None) -> Any:
    import threading

    from sluice_tools.local.delivery import Activity, SqsPoller
    from sluice_tools.local.topology import SqsMapping

    mapping = SqsMapping("u", "f", "arn:q", batch_size, window_s, True, 2, True)
    return SqsPoller(
        name="p",
        pool=None,  # type: ignore[arg-type]
        sqs=sqs,
        queue_url="url",
        activity=Activity(),
        stop=threading.Event(),
        mapping=mapping,
        visibility_timeout_s=visibility,
    ), mapping


def test_without_a_batching_window_one_receive_makes_the_batch():
    sqs = FakeSqs([3, 10])
    p, mapping = poller(sqs, batch_size=10, window_s=0)
    assert len(p._receive(mapping)) == 3
    assert len(sqs.calls) == 1
    assert "VisibilityTimeout" not in sqs.calls[0]  # the queue's own timeout


def test_a_batching_window_gathers_up_to_the_batch_size_over_several_receives():
    sqs = FakeSqs([10, 10, 10])
    p, mapping = poller(sqs, batch_size=25, window_s=5, visibility=7)
    batch = p._receive(mapping)
    assert len(batch) == 25
    assert [c["MaxNumberOfMessages"] for c in sqs.calls] == [10, 10, 5]
    assert {c["VisibilityTimeout"] for c in sqs.calls} == {7}


def test_a_batching_window_stops_gathering_when_the_queue_is_empty():
    sqs = FakeSqs([4, 0])
    p, mapping = poller(sqs, batch_size=25, window_s=1)
    assert len(p._receive(mapping)) == 4


def test_an_invocation_reports_the_cpu_time_its_worker_spent_apart_from_waiting(
    tmp_path: Path,
) -> None:
    # The benchmarks price Lambda GB-seconds from this CPU time, not from wall time at moto.
    from sluice_tools.local.pool import FunctionPool
    from sluice_tools.local.worker import WorkerSpec

    code = tmp_path / "code"
    code.mkdir()
    (code / "handler.py").write_text(
        "import time\n"
        "def burn(event, context):\n"
        "    end = time.process_time() + 0.2\n"
        "    while time.process_time() < end:\n"
        "        pass\n"
        "def wait(event, context):\n"
        "    time.sleep(0.4)\n"
    )
    outcomes = {}
    for name in ("burn", "wait"):
        spec = WorkerSpec(
            function=f"f-{name}",
            arn=f"arn:aws:lambda:us-east-1:123456789012:function:f-{name}",
            handler=f"handler.{name}",
            code_dir=str(code),
            runtime_dir=str(tmp_path / "runtime"),
            environment={},
            timeout_s=30,
            memory_mb=128,
            log_path=str(tmp_path / f"{name}.log"),
            console=False,
            isolate=False,
        )
        pool = FunctionPool(spec, concurrency=1)
        try:
            outcomes[name] = pool.invoke({})
        finally:
            pool.stop()
    burn, wait = outcomes["burn"], outcomes["wait"]
    assert burn.ok
    assert wait.ok
    assert burn.cpu_ms >= 190
    assert wait.duration_ms >= 400
    assert wait.cpu_ms < 200  # sleeping is not CPU


def test_workers_share_a_bytecode_cache_outside_the_deployed_tree(tmp_path: Path) -> None:
    # A cold start compiles each module once per deployed tree, not once per worker; the
    # extracted zip itself stays as deployed (no __pycache__ written into it).
    from sluice_tools.local.pool import FunctionPool
    from sluice_tools.local.worker import WorkerSpec

    code = tmp_path / "code"
    code.mkdir()
    (code / "handler.py").write_text(
        "import sys\ndef where(event, context):\n    return sys.modules[__name__].__cached__\n"
    )
    cache = tmp_path / "pycache"
    spec = WorkerSpec(
        function="f-cached",
        arn="arn:aws:lambda:us-east-1:123456789012:function:f-cached",
        handler="handler.where",
        code_dir=str(code),
        runtime_dir=str(tmp_path / "runtime"),
        environment={},
        timeout_s=30,
        memory_mb=128,
        log_path=str(tmp_path / "f.log"),
        console=False,
        isolate=False,
        pycache_dir=str(cache),
    )
    compiled: list[Path] = []
    stamps = []
    for _ in range(2):  # two cold starts, one after the other
        pool = FunctionPool(spec, concurrency=1)
        try:
            outcome = pool.invoke({})
        finally:
            pool.stop()
        assert outcome.ok, outcome.error
        compiled.append(Path(outcome.payload))
        stamps.append(Path(outcome.payload).stat().st_mtime_ns)
    assert compiled[0] == compiled[1]
    assert compiled[0].is_relative_to(cache)
    assert compiled[0].is_file()
    assert stamps[0] == stamps[1]  # the second worker read it, and did not compile again
    assert not (code / "__pycache__").exists()
