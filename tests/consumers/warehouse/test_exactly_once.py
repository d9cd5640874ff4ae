"""Exactly once with several chunks per object, under faults injected at the emulator.

The warehouse's code runs in this process against the local runtime's emulator (moto's
server with its API-fault middleware); its AWS clients carry the app id of a (fake) worker
of the warehouse function, so the emulator's fault rules apply to its calls only, never to
the test's own. A batch that dies between placing its chunks and writing their object is
one whose PutObject never reaches moto (`error_before` on every attempt): what it leaves is
what a SIGKILL there leaves. Placements end at the invocation's remaining time (3 s from
Chalice's test context) plus a margin; the placements' clock is moved past that instead of
waiting for it.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from support import platform as moto_platform
from support.events import sqs_event

from consumers import testkit
from sluice import aws
from sluice.config import ResourceNames, reset_settings
from sluice_tools.local import apifaults
from sluice_tools.local.apifaults import ApiFaultPlan, ApiFaultRule
from sluice_tools.local.emulator import Emulator, client
from sluice_tools.local.pool import register_worker
from sluice_tools.local.worker import app_id

FUNCTION = f"sluice-consumer-warehouse-{testkit.STAGE}-consume"
FAKE_PID = 999_999_000  # above any pid_max: never a process
ORDERS = [{"order_id": f"o-{i}", "customer_id": "c-1", "amount": 10 + i} for i in range(4)]
REMAINING_MS = 3_000


class Clock:
    """The placements' clock: now, or later."""

    def __init__(self) -> None:
        import time

        self.offset = 0.0
        self._time = time.time

    def __call__(self) -> float:
        return self._time() + self.offset


@dataclass
class Stage:
    emulator: Emulator
    names: ResourceNames
    plan: ApiFaultPlan
    clock: Clock

    def operator(self, service: str) -> Any:
        """A client without the worker's app id: never faulted."""
        return client(service, self.emulator.endpoint)

    def curated(self) -> dict[str, list[dict[str, Any]]]:
        s3, bucket = self.operator("s3"), self.names.curated_bucket
        found = {}
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            found[obj["Key"]] = [json.loads(x) for x in gzip.decompress(body).splitlines()]
        return found

    def rows_per_record(self) -> Counter[str]:
        return Counter(row["_record_id"] for rows in self.curated().values() for row in rows)

    def delivered(self, chunk_id: str) -> str | None:
        """The warehouse sink's delivered count for the chunk, as `sluice ledger` reads it
        (`split_item`: the sink's entry may be written on the consumer's item)."""
        from sluice.ledger import split_item

        got = self.operator("dynamodb").query(
            TableName=self.names.ledger_table,
            KeyConditionExpression="correlation_id = :c",
            ExpressionAttributeValues={":c": {"S": "corr-test"}},
        )
        for whole in got.get("Items") or []:
            for item in split_item(whole):
                if item["entry"]["S"] == f"sink:warehouse#{chunk_id}":
                    return str(item["delivered"]["N"])
        return None

    def invoke(self, *chunks: Any, prefix: str) -> dict[str, Any]:
        from chalicelib import service
        from chalicelib.placements import Placements

        store = Placements(service.STAGE, clock=self.clock)
        response = service.runtime().handle_sqs(
            sqs_event(*chunks, prefix=prefix),
            service.handle_chunk,
            finish=functools.partial(service.write_objects, store=store),
            remaining_ms=REMAINING_MS,
        )
        return dict(response)


@pytest.fixture
def stage(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stage]:
    from chalicelib import service

    emulator = Emulator()
    emulator.start()
    plan = ApiFaultPlan()
    apifaults.use(plan)
    try:
        for name, value in emulator.env().items():
            monkeypatch.setenv(name, value)
        reset_settings()
        aws.reset_clients()
        names = ResourceNames(stage=testkit.STAGE)
        moto_platform.create_tables()
        moto_platform.create_buckets(
            (names.quarantine_bucket, names.payload_bucket, names.curated_bucket)
        )
        # From here on, the warehouse's clients are a worker's of its function.
        aws.reset_clients()
        register_worker(FAKE_PID, FUNCTION)
        monkeypatch.setenv("AWS_SDK_UA_APP_ID", app_id(FAKE_PID))
        service.reset()
        yield Stage(emulator, names, plan, Clock())
    finally:
        apifaults.use(None)
        service.reset()
        aws.reset_clients()
        emulator.stop()


def put_object_rule(kind: str, times: int | None = None) -> ApiFaultRule:
    return ApiFaultRule(kind, "s3", ("PutObject",), function=FUNCTION, times=times)


def test_a_batch_that_died_after_placing_before_its_put_is_written_exactly_once_on_retry(
    stage: Stage,
) -> None:
    a = testkit.make_chunk("order", ORDERS[:2], chunk_id="c-a")
    b = testkit.make_chunk("order", ORDERS[2:], chunk_id="c-b")
    c = testkit.make_chunk("order", ORDERS[:1], chunk_id="c-c")
    rule = stage.plan.add(put_object_rule("error_before"))

    died = stage.invoke(a, b, prefix="died")
    rule.times = rule.fired  # the faults stop
    # Redelivered in other company while the dead batch's time may not be over: they wait.
    early = stage.invoke(b, c, prefix="early")
    stage.clock.offset = (REMAINING_MS + 6_000) / 1000
    alone = stage.invoke(a, prefix="alone")
    again = stage.invoke(b, c, a, prefix="again")

    assert rule.fired >= 1
    assert died == {
        "batchItemFailures": [{"itemIdentifier": "died-0"}, {"itemIdentifier": "died-1"}]
    }
    assert early == {"batchItemFailures": [{"itemIdentifier": "early-0"}]}
    assert alone == again == {"batchItemFailures": []}
    assert stage.rows_per_record() == {
        "r-c-a-0": 1,
        "r-c-a-1": 1,
        "r-c-b-0": 1,
        "r-c-b-1": 1,
        "r-c-c-0": 1,
    }
    assert (stage.delivered("c-a"), stage.delivered("c-b"), stage.delivered("c-c")) == (
        "2",
        "2",
        "1",
    )


def test_an_object_whose_put_answer_was_lost_is_not_written_twice(stage: Stage) -> None:
    a = testkit.make_chunk("order", ORDERS[:2], chunk_id="c-a")
    b = testkit.make_chunk("order", ORDERS[2:], chunk_id="c-b")
    # Every attempt lands and loses its answer: the SDK's retries rewrite the same key, then
    # the call fails; the invocation finds its object there.
    rule = stage.plan.add(put_object_rule("error_after"))

    first = stage.invoke(a, b, prefix="first")
    rule.times = rule.fired
    redelivered = stage.invoke(b, a, prefix="redelivered")
    stage.clock.offset = (REMAINING_MS + 6_000) / 1000
    later = stage.invoke(a, prefix="later")

    assert rule.fired >= 2
    assert first == redelivered == later == {"batchItemFailures": []}
    assert len(stage.curated()) == 1
    assert set(stage.rows_per_record().values()) == {1}
    assert sum(stage.rows_per_record().values()) == 4
    assert (stage.delivered("c-a"), stage.delivered("c-b")) == ("2", "2")


def test_a_placement_whose_answer_was_lost_is_taken_as_ours(stage: Stage) -> None:
    a = testkit.make_chunk("order", ORDERS[:2], chunk_id="c-a")
    rule = stage.plan.add(
        ApiFaultRule("error_after", "dynamodb", ("PutItem",), function=FUNCTION, times=1)
    )

    response = stage.invoke(a, prefix="first")

    assert rule.fired == 1
    assert response == {"batchItemFailures": []}
    assert stage.rows_per_record() == {"r-c-a-0": 1, "r-c-a-1": 1}


def test_a_duplicate_delivered_while_the_first_is_writing_waits_then_is_not_written_again(
    stage: Stage,
) -> None:
    """Two invocations with the same chunk at once: the second finds it placed, not yet in
    its object, and its placer's time not over: it waits, and its retry finds it written."""
    from chalicelib import service

    a = testkit.make_chunk("order", ORDERS[:2], chunk_id="c-a")
    b = testkit.make_chunk("order", ORDERS[2:], chunk_id="c-b")
    seen: dict[str, Any] = {}
    bucket = service.curated()
    real_put = bucket.put

    def put_after_the_duplicate(key: str, body: bytes, metadata: Any) -> None:
        if not seen:
            seen["concurrent"] = stage.invoke(b, a, prefix="concurrent")
        real_put(key, body, metadata)

    bucket.put = put_after_the_duplicate  # type: ignore[method-assign]
    first = stage.invoke(a, prefix="first")
    bucket.put = real_put  # type: ignore[method-assign]
    retry = stage.invoke(a, prefix="retry")

    assert first == retry == {"batchItemFailures": []}
    assert seen["concurrent"] == {"batchItemFailures": [{"itemIdentifier": "concurrent-1"}]}
    assert stage.rows_per_record() == {"r-c-a-0": 1, "r-c-a-1": 1, "r-c-b-0": 1, "r-c-b-1": 1}
