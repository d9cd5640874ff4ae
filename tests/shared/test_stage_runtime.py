"""StageRuntime: claim, quarantine, claim check and ledger around a stage's chunk handler."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Collection
from typing import Any

import pytest
from support.events import sqs_event
from support.platform import ledger_entries

from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.claimcheck import ClaimCheck
from sluice.config import ResourceNames, reset_settings
from sluice.envelope import Chunk, Record
from sluice.errors import PermanentError, TransientError
from sluice.idempotency import (
    IN_PROGRESS_EXPIRY_ATTR,
    IN_PROGRESS_MARGIN_MS,
    KEY_ATTR,
    STATUS_ATTR,
    Claim,
    IdempotencyStore,
    run_once,
)
from sluice.ledger import LedgerWriter
from sluice.quarantine import Quarantine
from sluice.stage import CHUNK_CLAIM_LEASE_MS, StageRuntime, chunk_payload_hash
from sluice_tools import lambda_events

AT = "2026-11-27T06:00:00.000Z"
STAGE = "cleanse"


def chunk(cid: str = "c-1", n: int = 3, bad: frozenset[int] = frozenset()) -> Chunk:
    records = tuple(Record(f"{cid}-r{i}", i, AT, {"n": i, "bad": i in bad}) for i in range(n))
    return Chunk(cid, "order", "s3://landing/in/x.jsonl", "corr-1", records)


class Handler:
    """A chunk handler over `runtime.run_records`; fails transiently `fail_times` times."""

    def __init__(
        self, runtime: StageRuntime, fail_times: int = 0, fail_on: str | None = None
    ) -> None:
        self.runtime = runtime
        self.calls: list[str] = []
        self.fail_times = fail_times
        self.fail_on = fail_on

    def __call__(self, c: Chunk) -> ChunkOutcome:
        self.calls.append(c.chunk_id)
        if self.fail_times and (self.fail_on is None or c.chunk_id == self.fail_on):
            self.fail_times -= 1
            raise TimeoutError("downstream timed out")

        def record(r: Record, _: Chunk) -> int:
            if r.payload["bad"]:
                raise PermanentError(f"record {r.id}: bad is true")
            return int(r.payload["n"])

        results = self.runtime.run_records(c, record)
        results.outcome.out = len(results.outputs)
        return results.outcome


def ledger(names: ResourceNames) -> dict[str, dict[str, Any]]:
    return ledger_entries(names.ledger_table, "corr-1")


def claim_item(names: ResourceNames, cid: str) -> dict[str, Any] | None:
    found = aws.dynamodb().get_item(
        TableName=names.idempotency_table, Key={KEY_ATTR: {"S": f"{STAGE}#{cid}"}}
    )
    return found.get("Item")


def quarantined(names: ResourceNames) -> list[str]:
    listed = aws.s3().list_objects_v2(Bucket=names.quarantine_bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def failed_ids(response: Any) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_redelivered_chunk_is_a_duplicate_and_leaves_the_ledger_unchanged(
    platform: ResourceNames, dynamodb_calls: Any
) -> None:
    runtime = StageRuntime(STAGE)
    handler = Handler(runtime)
    event = sqs_event(chunk())
    assert runtime.handle_sqs(event, handler) == {"batchItemFailures": []}
    # claim, ledger write (entry + object progress) and progress read, complete (checked
    # before the test's own reads add to the count)
    assert dynamodb_calls.operations == ["PutItem", "TransactWriteItems", "GetItem", "UpdateItem"]
    first = ledger(platform)
    assert first[f"{STAGE}#c-1"]["out"] == 3

    dynamodb_calls.clear()
    assert runtime.handle_sqs(event, handler) == {"batchItemFailures": []}
    assert dynamodb_calls.operations == ["PutItem"]  # the refused claim, nothing else
    assert handler.calls == ["c-1"]
    assert ledger(platform) == first


def test_chunk_failing_once_then_succeeding_is_counted_once(platform: ResourceNames) -> None:
    runtime = StageRuntime(STAGE)
    handler = Handler(runtime, fail_times=1)
    event = sqs_event(chunk(), prefix="m")
    assert failed_ids(runtime.handle_sqs(event, handler)) == ["m-0"]
    assert claim_item(platform, "c-1") is None  # released: the retry need not wait
    assert ledger(platform) == {}

    assert runtime.handle_sqs(event, handler) == {"batchItemFailures": []}
    assert runtime.handle_sqs(event, handler) == {"batchItemFailures": []}
    assert handler.calls == ["c-1", "c-1"]
    entry = ledger(platform)[f"{STAGE}#c-1"]
    assert (entry["records_in"], entry["out"], entry["quarantined"]) == (3, 3, 0)


def test_crash_after_the_ledger_write_redoes_effects_but_not_the_counts(
    platform: ResourceNames,
) -> None:
    class CompleteFailsOnce(IdempotencyStore):
        failed = False

        def complete(self, claim: Claim, steps: Collection[int] = ()) -> None:
            if not self.failed:
                self.failed = True
                raise TransientError("throttled")
            super().complete(claim, steps)

    runtime = StageRuntime(STAGE, idempotency=CompleteFailsOnce())
    handler = Handler(runtime)
    event = sqs_event(chunk(), prefix="m")
    assert failed_ids(runtime.handle_sqs(event, handler)) == ["m-0"]
    first = ledger(platform)
    assert first[f"{STAGE}#c-1"]["out"] == 3  # written before COMPLETED: never lost
    assert runtime.handle_sqs(event, handler) == {"batchItemFailures": []}
    assert handler.calls == ["c-1", "c-1"]
    assert ledger(platform) == first
    assert claim_item(platform, "c-1")[STATUS_ATTR] == {"S": "COMPLETED"}  # type: ignore[index]


def test_permanent_error_on_one_record_quarantines_only_that_record(
    platform: ResourceNames,
) -> None:
    runtime = StageRuntime(STAGE)
    response = runtime.handle_sqs(sqs_event(chunk(n=4, bad=frozenset({2}))), Handler(runtime))
    assert response == {"batchItemFailures": []}
    assert quarantined(platform) == ["cleanse/order/2026-11-27/c-1-r2.json"]
    entry = ledger(platform)[f"{STAGE}#c-1"]
    assert (entry["records_in"], entry["out"], entry["quarantined"]) == (4, 3, 1)


def test_malformed_message_is_quarantined_and_acknowledged(platform: ResourceNames) -> None:
    runtime = StageRuntime(STAGE)
    handler = Handler(runtime)
    response = runtime.handle_sqs(sqs_event("not an envelope", chunk(), prefix="m"), handler)
    assert response == {"batchItemFailures": []}
    assert handler.calls == ["c-1"]
    [key] = [k for k in quarantined(platform) if "/_messages/" in k]
    assert key.startswith("cleanse/_messages/")
    assert key.endswith("/m-0.json")
    doc = json.loads(aws.s3().get_object(Bucket=platform.quarantine_bucket, Key=key)["Body"].read())
    assert doc["raw"] == "not an envelope"
    assert doc["error_class"] == "MalformedEnvelopeError"


def test_transient_failure_reports_exactly_its_message(platform: ResourceNames) -> None:
    runtime = StageRuntime(STAGE)
    handler = Handler(runtime, fail_times=1, fail_on="c-b")
    event = sqs_event(chunk("c-a"), chunk("c-b"), chunk("c-c"), prefix="msg")
    assert failed_ids(runtime.handle_sqs(event, handler)) == ["msg-1"]
    assert set(ledger(platform)) == {f"{STAGE}#c-a", f"{STAGE}#c-c"}


def test_chunk_id_reused_for_other_content_is_quarantined_whole(platform: ResourceNames) -> None:
    runtime = StageRuntime(STAGE)
    handler = Handler(runtime)
    runtime.handle_sqs(sqs_event(chunk(n=3)), handler)
    first = ledger(platform)
    response = runtime.handle_sqs(sqs_event(chunk(n=2)), handler)
    assert response == {"batchItemFailures": []}
    assert handler.calls == ["c-1"]
    assert quarantined(platform) == ["cleanse/order/2026-11-27/c-1.json"]
    assert ledger(platform) == first


@pytest.mark.parametrize("remaining_ms", [12_000, 42_000])
def test_a_chunk_claim_lasts_the_remaining_time_or_its_lease_if_shorter(
    platform: ResourceNames, remaining_ms: int
) -> None:
    held_for = min(remaining_ms, CHUNK_CLAIM_LEASE_MS)

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return remaining_ms

    class Event:
        """What Chalice passes an `on_sqs_message` handler."""

        def __init__(self, raw: dict[str, Any]) -> None:
            self.raw, self.context = raw, Context()

        def to_dict(self) -> dict[str, Any]:
            return self.raw

    runtime = StageRuntime(STAGE)
    seen: list[int] = []

    def handle(c: Chunk) -> ChunkOutcome:
        now_ms = int(time.time() * 1000)
        item = claim_item(platform, c.chunk_id)
        assert item is not None
        seen.append(int(item[IN_PROGRESS_EXPIRY_ATTR]["N"]) - now_ms)
        return ChunkOutcome(records_in=len(c.records), out=len(c.records))

    assert runtime.handle_sqs(Event(sqs_event(chunk())), handle) == {"batchItemFailures": []}
    [left] = seen
    assert held_for + IN_PROGRESS_MARGIN_MS - 2_000 < left <= held_for + IN_PROGRESS_MARGIN_MS


def test_claim_false_skips_idempotency_but_keeps_the_ledger(
    platform: ResourceNames, dynamodb_calls: Any
) -> None:
    runtime = StageRuntime(STAGE)
    runtime.handle_sqs(sqs_event(chunk()), Handler(runtime), claim=False)
    assert dynamodb_calls.operations == ["TransactWriteItems", "GetItem"]  # the ledger only
    assert claim_item(platform, "c-1") is None
    assert set(ledger(platform)) == {f"{STAGE}#c-1"}


def test_parts_are_built_lazily_and_can_be_injected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_STAGE", raising=False)
    reset_settings()
    aws.reset_clients()
    fake = Quarantine(STAGE, client=object(), bucket="bucket")  # type: ignore[arg-type]
    runtime = StageRuntime(STAGE, quarantine=fake)
    assert runtime.quarantine is fake
    # Building the parts reads no settings and makes no client: that waits for first use.
    assert isinstance(runtime.ledger, LedgerWriter)
    assert isinstance(runtime.idempotency, IdempotencyStore)
    assert isinstance(runtime.claims, ClaimCheck)
    assert not aws._clients


def sns_event(*messages: str) -> dict[str, Any]:
    return lambda_events.sns_event(*messages, topic=lambda_events.topic_arn("sluice-test-records"))


def test_sns_chunk_is_handled_once_and_ledgered_once(platform: ResourceNames) -> None:
    runtime = StageRuntime(STAGE)
    handler = Handler(runtime)
    event = sns_event(chunk(bad=frozenset({1})).encode())
    [first] = runtime.handle_sns(event, handler)
    assert (first.records_in, first.out, first.quarantined) == (3, 2, 1)
    [again] = runtime.handle_sns(event, handler)  # SNS redelivers: skipped by the claim
    assert (again.duplicate, again.out) == (3, 0)
    assert handler.calls == ["c-1"]
    assert ledger(platform)[f"{STAGE}#c-1"]["out"] == 2


def test_sns_transient_failure_propagates_for_lambda_to_retry(platform: ResourceNames) -> None:
    runtime = StageRuntime(STAGE)
    handler = Handler(runtime, fail_times=1)
    with pytest.raises(TimeoutError):
        runtime.handle_sns(sns_event(chunk().encode()), handler)
    assert claim_item(platform, "c-1") is None  # released, so the retry runs
    [outcome] = runtime.handle_sns(sns_event(chunk().encode()), handler)
    assert outcome.out == 3


def test_undecodable_sns_message_is_quarantined_not_raised(platform: ResourceNames) -> None:
    runtime = StageRuntime(STAGE)
    assert runtime.handle_sns(sns_event("{broken"), Handler(runtime)) == []
    listed = aws.s3().list_objects_v2(Bucket=platform.quarantine_bucket)
    [key] = [o["Key"] for o in listed["Contents"]]
    body = json.loads(
        aws.s3().get_object(Bucket=platform.quarantine_bucket, Key=key)["Body"].read()
    )
    assert body["raw"] == "{broken"
    assert "not JSON" in body["reason"]


def test_a_long_chunk_renews_its_claim_as_its_records_are_handled(
    platform: ResourceNames,
) -> None:
    now = [time.time()]
    runtime = StageRuntime(STAGE, idempotency=IdempotencyStore(clock=lambda: now[0]))
    expiries: list[int] = []

    def slow(record: Record, c: Chunk) -> int:
        now[0] += CHUNK_CLAIM_LEASE_MS / 1000 * 0.6  # each record takes 60% of a lease
        item = claim_item(platform, c.chunk_id)
        assert item is not None
        expiries.append(int(item[IN_PROGRESS_EXPIRY_ATTR]["N"]))
        return 1

    def handle(c: Chunk) -> ChunkOutcome:
        results = runtime.run_records(c, slow)
        results.outcome.out = len(results.outputs)
        return results.outcome

    assert runtime.handle_sqs(sqs_event(chunk(n=4)), handle) == {"batchItemFailures": []}
    # Renewed before the second, third and fourth records: never lapsed while working.
    assert expiries == sorted(set(expiries))
    assert len(expiries) == 4


def _hash_before_r1(c: Chunk) -> str:
    """The claim's payload hash as the runtime took it before scheme "r1": "j2", the records
    re-encoded as sorted compact JSON."""
    wire = [r.to_wire() for r in c.records]
    text = json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "j2:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_a_chunk_claimed_before_the_hash_changed_is_still_a_duplicate(
    platform: ResourceNames,
) -> None:
    """A deploy must not process twice a chunk redelivered across it: the claim's key is the
    stage and chunk id, as before, and an older scheme's hash is not taken for other content."""
    c = chunk()
    done = run_once(
        IdempotencyStore(), STAGE, c.chunk_id, lambda: 1, payload_hash=_hash_before_r1(c)
    )
    assert done.value == 1
    runtime = StageRuntime(STAGE)
    handler = Handler(runtime)
    assert runtime.handle_sqs(sqs_event(c), handler) == {"batchItemFailures": []}
    assert handler.calls == []  # a duplicate: not handled again
    assert quarantined(platform) == []  # not refused as other content
    item = claim_item(platform, "c-1")  # the same item: same key as the old code's
    assert item is not None
    assert item["payload_hash"]["S"] == _hash_before_r1(c)


def test_the_claim_hashes_the_records_as_they_arrived(platform: ResourceNames) -> None:
    c = chunk()
    travelling = c.encode().split(',"records":', 1)[1][:-1].encode()
    assert chunk_payload_hash(c) == "r1:" + hashlib.sha256(travelling).hexdigest()
    # Sent again, compressed or not, the same records give the same hash.
    big = Chunk(c.chunk_id, c.type, c.source, c.correlation_id, chunk(n=80).records)
    assert "records_z" in big.encode()
    assert chunk_payload_hash(Chunk.decode(big.encode())) == chunk_payload_hash(big)
    runtime = StageRuntime(STAGE)
    runtime.handle_sqs(sqs_event(c), Handler(runtime))
    item = claim_item(platform, "c-1")
    assert item is not None
    assert item["payload_hash"]["S"] == chunk_payload_hash(c)
