"""The one consumption core (`StageRuntime.handle_*`) for units other than a plain chunk
handler: a batch's `finish` (the warehouse), units of a stage's own (ingest's checkpoints and
objects, an event consumer's events), S3 events and schedules."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from support.events import sqs_event
from support.platform import ledger_entries

from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import ResourceNames
from sluice.envelope import Chunk, Record
from sluice.errors import PermanentError, TransientError
from sluice.idempotency import KEY_ATTR, STATUS_ATTR, ClaimInProgressError, IdempotencyStore
from sluice.ledger import LedgerWriteError, LedgerWriter
from sluice.stage import StageRuntime

AT = "2026-12-05T06:00:00.000Z"
STAGE = "consumer-test"


def chunk(cid: str, n: int = 2) -> Chunk:
    records = tuple(Record(f"{cid}-r{i}", i, AT, {"n": i}) for i in range(n))
    return Chunk(cid, "order", "s3://landing/in/x.jsonl", "corr-1", records)


def delivered(c: Chunk) -> ChunkOutcome:
    return ChunkOutcome(records_in=len(c.records), out=len(c.records))


def claims() -> dict[str, str]:
    table = ResourceNames(stage="test").idempotency_table
    items = aws.dynamodb().scan(TableName=table)["Items"]
    return {item[KEY_ATTR]["S"]: item[STATUS_ATTR]["S"] for item in items}


def failed_ids(response: Mapping[str, Any]) -> list[str]:
    return sorted(f["itemIdentifier"] for f in response["batchItemFailures"])


# ---------------------------------------------------------------------- finish


class Objects:
    """A batch's end that fails the chunks named in `broken` (as an object write would)."""

    def __init__(self, broken: set[str], *, raises: bool = False) -> None:
        self.broken, self.raises = broken, raises
        self.seen: list[list[str]] = []

    def __call__(self, done: Sequence[tuple[Chunk, ChunkOutcome]]) -> dict[str, BaseException]:
        self.seen.append([c.chunk_id for c, _ in done])
        if self.raises:
            raise RuntimeError("the batch's end broke")
        return {cid: TransientError("object not written") for cid in self.broken}


@pytest.mark.parametrize("claim", [True, False])
def test_a_chunk_the_batch_end_fails_is_retried_and_only_the_others_are_ledgered(
    platform: ResourceNames, claim: bool
) -> None:
    runtime = StageRuntime(STAGE, claim=claim)
    finish = Objects(broken={"c-b"})

    response = runtime.handle_sqs(sqs_event(chunk("c-a"), chunk("c-b")), delivered, finish=finish)

    assert failed_ids(response) == ["msg-1"]
    assert finish.seen == [["c-a", "c-b"]]
    assert sorted(ledger_entries(platform.ledger_table, "corr-1")) == [f"{STAGE}#c-a"]
    if claim:  # the failed chunk's claim is let go: its retry runs it again
        assert claims() == {f"{STAGE}#c-a": "COMPLETED"}
    retry = runtime.handle_sqs(sqs_event(chunk("c-b"), prefix="retry"), delivered, finish=finish)
    assert retry == {"batchItemFailures": [{"itemIdentifier": "retry-0"}]}  # still broken
    finish.broken.clear()
    again = runtime.handle_sqs(sqs_event(chunk("c-b"), prefix="again"), delivered, finish=finish)
    assert again == {"batchItemFailures": []}
    assert sorted(ledger_entries(platform.ledger_table, "corr-1")) == [
        f"{STAGE}#c-a",
        f"{STAGE}#c-b",
    ]


def test_a_batch_end_that_raises_fails_every_chunk_and_lets_their_claims_go(
    platform: ResourceNames,
) -> None:
    runtime = StageRuntime(STAGE)

    response = runtime.handle_sqs(
        sqs_event(chunk("c-a"), chunk("c-b")), delivered, finish=Objects(set(), raises=True)
    )

    assert failed_ids(response) == ["msg-0", "msg-1"]
    assert ledger_entries(platform.ledger_table, "corr-1") == {}
    assert claims() == {}


def test_the_same_chunk_twice_in_a_batch_is_handled_once_and_both_messages_share_its_fate(
    platform: ResourceNames,
) -> None:
    runtime = StageRuntime(STAGE, claim=False)
    handled: list[str] = []

    def work(c: Chunk) -> ChunkOutcome:
        handled.append(c.chunk_id)
        return delivered(c)

    finish = Objects(broken={"c-a"})
    response = runtime.handle_sqs(sqs_event(chunk("c-a"), chunk("c-a")), work, finish=finish)

    assert handled == ["c-a"]
    assert finish.seen == [["c-a"]]
    assert failed_ids(response) == ["msg-0", "msg-1"]


# ---------------------------------------------------------------------- a stage's own units


@dataclass(frozen=True)
class Step:
    """A unit of a stage's own, as a checkpoint or a pipeline event is."""

    unit_id: str
    correlation_id: str = "corr-1"
    type: str = "order"

    @classmethod
    def decode(cls, body: str) -> Step:
        try:
            return cls(str(json.loads(body)["step"]))
        except (ValueError, KeyError, TypeError):
            raise PermanentError(f"not a step: {body[:40]!r}") from None


def steps(*bodies: str, prefix: str = "msg") -> dict[str, Any]:
    return sqs_event(*bodies, prefix=prefix)


def test_units_of_a_stage_s_own_are_claimed_once_and_a_bad_message_is_quarantined(
    platform: ResourceNames,
) -> None:
    runtime = StageRuntime(STAGE)
    done: list[str] = []

    def work(step: Step) -> str:
        done.append(step.unit_id)
        return "done"

    first = runtime.handle_sqs(
        steps('{"step": "s-1"}', "not a step", '{"step": "s-2"}'), work, decode=Step.decode
    )
    again = runtime.handle_sqs(steps('{"step": "s-1"}', prefix="again"), work, decode=Step.decode)

    assert first == again == {"batchItemFailures": []}
    assert done == ["s-1", "s-2"]
    assert claims() == {f"{STAGE}#s-1": "COMPLETED", f"{STAGE}#s-2": "COMPLETED"}
    [key] = [k for k in quarantined_keys(platform)]
    assert key.endswith("/msg-1.json")


def quarantined_keys(platform: ResourceNames) -> list[str]:
    listed = aws.s3().list_objects_v2(Bucket=platform.quarantine_bucket)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_unit_s_entries_are_written_before_its_claim_completes(platform: ResourceNames) -> None:
    runtime = StageRuntime(STAGE, ledger=LedgerWriter(table_name="no-such-table"))

    def work(step: Step) -> None:
        runtime.ledger.record_chunk(STAGE, chunk(step.unit_id), delivered(chunk(step.unit_id)))

    response = runtime.handle_sqs(steps('{"step": "s-1"}'), work, decode=Step.decode)

    # The entry could not be written: the unit fails, and its claim is let go for the retry.
    assert failed_ids(response) == ["msg-0"]
    assert claims() == {}


# ---------------------------------------------------------------------- S3 and schedules


def s3_event(*keys: str) -> dict[str, Any]:
    return {"Records": [{"eventName": "ObjectCreated:Put", "key": k} for k in keys]}


def objects(record: Mapping[str, Any]) -> Step | None:
    key = str(record.get("key") or "")
    return Step(key) if key.startswith("incoming/") else None


def test_an_s3_event_s_objects_are_each_done_once_and_one_failure_does_not_stop_the_others(
    platform: ResourceNames,
) -> None:
    runtime = StageRuntime(STAGE)
    done: list[str] = []

    def work(step: Step) -> None:
        if step.unit_id.endswith("broken"):
            raise TransientError("S3 read failed")
        done.append(step.unit_id)

    event = s3_event("incoming/a", "elsewhere/x", "incoming/broken", "incoming/b")
    with pytest.raises(TransientError):
        runtime.handle_s3(event, work, decode=objects)
    assert done == ["incoming/a", "incoming/b"]

    summary = runtime.handle_s3(s3_event("incoming/a", "incoming/b"), work, decode=objects)
    assert summary == {"objects": 2, "duplicates": 2}
    assert done == ["incoming/a", "incoming/b"]


def test_an_s3_object_claimed_elsewhere_is_waited_for_until_time_runs_low(
    platform: ResourceNames,
) -> None:
    left = [40_000]  # ms the invocation has
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        left[0] -= int(seconds * 1000)

    runtime = StageRuntime(STAGE, sleep=sleep)
    IdempotencyStore().claim(STAGE, "incoming/held", remaining_ms=600_000)

    with pytest.raises(ClaimInProgressError):
        runtime.handle_s3(
            s3_event("incoming/held"), lambda s: None, decode=objects, remaining_ms=lambda: left[0]
        )
    # 1 + 2 + 4 + 8 s waited; with 25 s left, the next 15 s wait and the 3 s margin fit: then
    # 10 s are left, too few for another.
    assert waits == [1.0, 2.0, 4.0, 8.0, 15.0]


def test_a_schedule_s_entries_are_written_at_its_end_or_it_fails(platform: ResourceNames) -> None:
    runtime = StageRuntime(STAGE)

    def work(event: Mapping[str, Any]) -> str:
        runtime.ledger.record_chunk(STAGE, chunk("c-s"), delivered(chunk("c-s")))
        assert ledger_entries(platform.ledger_table, "corr-1") == {}  # held until the end
        return str(event["time"])

    assert runtime.handle_schedule({"time": "t-1"}, work) == "t-1"
    assert sorted(ledger_entries(platform.ledger_table, "corr-1")) == [f"{STAGE}#c-s"]

    broken = StageRuntime(STAGE, ledger=LedgerWriter(table_name="no-such-table"))
    with pytest.raises(LedgerWriteError):
        broken.handle_schedule(
            {"time": "t-2"},
            lambda e: broken.ledger.record_chunk(STAGE, chunk("c-t"), delivered(chunk("c-t"))),
        )
