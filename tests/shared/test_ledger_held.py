"""Held ledger entries: an invocation's entries of one object in one transaction, each
contribution to the object's progress added once, claims completed only after."""

from __future__ import annotations

from typing import Any

import pytest
from support.calls import Fault, failing, lose_answers
from support.events import sqs_event
from support.platform import ledger_entries

from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import ResourceNames
from sluice.envelope import Chunk, Record
from sluice.idempotency import KEY_ATTR, STATUS_ATTR
from sluice.ledger import MAX_GROUP_ENTRIES, PARTITION_KEY, SORT_KEY, LedgerWriter, split_item
from sluice.progress import PROGRESS_ENTRY
from sluice.stage import StageRuntime

AT = "2026-12-05T06:00:00.000Z"
STAGE = "cleanse"


def chunk(cid: str, corr: str = "corr-1", n: int = 4) -> Chunk:
    records = tuple(Record(f"{cid}-r{i}", i, AT, {"n": i}) for i in range(n))
    return Chunk(cid, "order", f"s3://landing/in/{corr}.jsonl", corr, records)


def cleansed(n: int = 4) -> ChunkOutcome:
    return ChunkOutcome(records_in=n, out=n - 1, quarantined=1)


def progress(corr: str) -> dict[str, int]:
    item = aws.dynamodb().get_item(
        TableName=aws_table(),
        Key={PARTITION_KEY: {"S": corr}, SORT_KEY: {"S": PROGRESS_ENTRY}},
        ConsistentRead=True,
    )["Item"]
    return {k: int(v["N"]) for k, v in item.items() if "N" in v and k != "expires_at"}


def aws_table() -> str:
    from sluice.config import get_settings

    return get_settings().names.ledger_table


def unheld(corr: str, cids: list[str]) -> dict[str, int]:
    """The progress the same entries give when each is written on its own (as before)."""
    writer = LedgerWriter()
    for cid in cids:
        writer.record_chunk(STAGE, chunk(cid, corr), cleansed())
    return progress(corr)


def test_an_invocations_entries_of_one_object_are_one_transaction_with_the_summed_progress(
    platform: ResourceNames, dynamodb_calls: Any
) -> None:
    writer = LedgerWriter()
    with writer.holding():
        for cid in ("a", "b", "c"):
            writer.record_chunk(STAGE, chunk(cid, "corr-1"), cleansed())
        writer.record_chunk(STAGE, chunk("d", "corr-2"), cleansed())
        assert dynamodb_calls.operations == []  # held
        assert writer.flush() == {}

    # One transaction per object, each object's progress read back once.
    assert dynamodb_calls.operations == ["TransactWriteItems", "GetItem"] * 2
    assert sorted(ledger_entries(platform.ledger_table, "corr-1")) == [
        "cleanse#a",
        "cleanse#b",
        "cleanse#c",
    ]
    assert progress("corr-1") == unheld("corr-3", ["a", "b", "c"])
    assert progress("corr-1")["owed_router"] == 9


def test_entries_written_before_are_left_out_and_their_contributions_not_added_again(
    platform: ResourceNames,
) -> None:
    writer = LedgerWriter()
    writer.record_chunk(STAGE, chunk("a"), cleansed())  # an earlier attempt's
    with writer.holding():
        for cid in ("a", "b", "c"):
            writer.record_chunk(STAGE, chunk(cid), cleansed(n=4))
        assert writer.flush() == {}
    assert progress("corr-1") == unheld("corr-2", ["a", "b", "c"])


def test_a_flush_whose_answer_was_lost_is_written_once(platform: ResourceNames) -> None:
    writer = LedgerWriter()
    with lose_answers(aws.dynamodb(), "TransactWriteItems") as lost, writer.holding():
        for cid in ("a", "b"):
            writer.record_chunk(STAGE, chunk(cid), cleansed())
        assert writer.flush() == {}
    assert lost.lost == ["TransactWriteItems"]
    assert progress("corr-1") == unheld("corr-2", ["a", "b"])


def test_an_object_whose_write_fails_is_reported_and_the_others_are_written(
    platform: ResourceNames,
) -> None:
    writer = LedgerWriter()

    def of_corr_1(params: Any) -> bool:
        return bool(params["TransactItems"][0]["Put"]["Item"][PARTITION_KEY]["S"] == "corr-1")

    with (
        failing(aws.dynamodb(), "TransactWriteItems", Fault.REFUSED, when=of_corr_1, times=None),
        writer.holding(),
    ):
        writer.record_chunk(STAGE, chunk("a", "corr-1"), cleansed())
        writer.record_chunk(STAGE, chunk("b", "corr-2"), cleansed())
        failed = writer.flush()
    assert sorted(failed) == ["a"]
    assert ledger_entries(platform.ledger_table, "corr-1") == {}
    assert list(ledger_entries(platform.ledger_table, "corr-2")) == ["cleanse#b"]


def test_more_entries_than_a_transaction_takes_are_several(
    platform: ResourceNames, dynamodb_calls: Any
) -> None:
    writer = LedgerWriter()
    cids = [f"c{i:03d}" for i in range(MAX_GROUP_ENTRIES + 20)]
    with writer.holding():
        for cid in cids:
            writer.record_chunk(STAGE, chunk(cid), cleansed())
        assert writer.flush() == {}
    assert dynamodb_calls.operations.count("TransactWriteItems") == 2
    assert len(ledger_entries(platform.ledger_table, "corr-1")) == len(cids)
    assert progress("corr-1")["owed_router"] == 3 * len(cids)


def test_a_consumers_entry_and_its_sinks_delivery_are_one_item_read_back_as_two(
    platform: ResourceNames,
) -> None:
    from sluice_tools.ledger.store import read_ledger

    writer = LedgerWriter()
    c = chunk("a")
    with writer.holding():
        writer.record_delivery("index", c, delivered=3)
        writer.record_chunk("consumer-index", c, ChunkOutcome(records_in=4, out=3, quarantined=1))
        assert writer.flush() == {}

    items = aws.dynamodb().scan(TableName=platform.ledger_table)["Items"]
    stored = sorted(i[SORT_KEY]["S"] for i in items)
    assert stored == ["consumer-index#a", PROGRESS_ENTRY]  # one entry item
    whole = next(i for i in items if i[SORT_KEY]["S"] == "consumer-index#a")
    parts = {p[SORT_KEY]["S"]: p for p in split_item(whole)}
    assert parts["sink:index#a"]["delivered"] == {"N": "3"}
    assert "delivered" not in parts["consumer-index#a"]
    read = {(e.name, e.is_sink): e for e in read_ledger(aws.dynamodb(), platform.ledger_table)}
    assert read[("index", True)].delivered == 3
    assert read[("index", True)].records_in == 4
    assert (read[("consumer-index", False)].out, read[("consumer-index", False)].quarantined) == (
        3,
        1,
    )
    # The sink owes nothing: what the consumer passed on, its sink delivered.
    assert progress("corr-1").get("owed_sink_index", 0) == 0
    assert progress("corr-1")["delivered_to_index"] == 3


# ---------------------------------------------------------------- the stage runtime


class Passing:
    def __init__(self, runtime: StageRuntime) -> None:
        self.runtime = runtime

    def __call__(self, c: Chunk) -> ChunkOutcome:
        results = self.runtime.run_records(c, lambda r, _: r.payload)
        results.outcome.out = len(results.outputs)
        return results.outcome


def claim_status(names: ResourceNames, cid: str) -> str | None:
    item = (
        aws.dynamodb()
        .get_item(TableName=names.idempotency_table, Key={KEY_ATTR: {"S": f"{STAGE}#{cid}"}})
        .get("Item")
    )
    return None if item is None else str(item[STATUS_ATTR]["S"])


def test_a_batch_of_one_objects_chunks_writes_its_entries_in_one_transaction(
    platform: ResourceNames, dynamodb_calls: Any
) -> None:
    runtime = StageRuntime(STAGE)
    event = sqs_event(chunk("a"), chunk("b"), chunk("c"), prefix="m")
    assert runtime.handle_sqs(event, Passing(runtime)) == {"batchItemFailures": []}
    assert dynamodb_calls.operations.count("TransactWriteItems") == 1
    assert sorted(ledger_entries(platform.ledger_table, "corr-1")) == [
        "cleanse#a",
        "cleanse#b",
        "cleanse#c",
    ]
    assert {claim_status(platform, cid) for cid in "abc"} == {"COMPLETED"}


def test_when_the_entries_cannot_be_written_the_claims_are_let_go_and_the_batch_retried(
    platform: ResourceNames,
) -> None:
    runtime = StageRuntime(STAGE)
    event = sqs_event(chunk("a"), chunk("b"), prefix="m")
    with failing(aws.dynamodb(), "TransactWriteItems", Fault.REFUSED, times=None):
        response = runtime.handle_sqs(event, Passing(runtime))
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == ["m-0", "m-1"]
    assert ledger_entries(platform.ledger_table, "corr-1") == {}
    assert claim_status(platform, "a") is claim_status(platform, "b") is None  # released

    assert runtime.handle_sqs(event, Passing(runtime)) == {"batchItemFailures": []}
    assert sorted(ledger_entries(platform.ledger_table, "corr-1")) == ["cleanse#a", "cleanse#b"]
    assert {claim_status(platform, cid) for cid in "ab"} == {"COMPLETED"}


class Died(BaseException):
    """The invocation is killed (timeout, out of memory) between its effects and its end."""


def test_an_invocation_killed_before_its_entries_are_written_leaves_no_claim_completed(
    platform: ResourceNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = StageRuntime(STAGE)
    event = sqs_event(chunk("a"), chunk("b"), prefix="m")

    def killed() -> dict[str, Any]:
        raise Died

    monkeypatch.setattr(runtime.writer, "flush", killed)
    with pytest.raises(Died):
        runtime.handle_sqs(event, Passing(runtime))
    # Effects done, entries not written: no claim may say COMPLETED, or the redelivery would
    # be a duplicate and the entries never written. The claims lapse with their lease.
    assert {claim_status(platform, cid) for cid in "ab"} == {"INPROGRESS"}
    assert ledger_entries(platform.ledger_table, "corr-1") == {}


def test_held_entries_do_not_keep_their_chunks_alive(platform: ResourceNames) -> None:
    """An ingest segment holds an entry per chunk it sent until its end: holding the chunks
    would keep the whole object's records in memory (ingest's memory must stay flat)."""
    import gc
    import weakref

    class Payload:
        """A payload object a weak reference can follow (records are slotted)."""

    writer = LedgerWriter()
    with writer.holding():
        payload = Payload()
        c = Chunk(
            "a", "order", "s3://landing/in/corr-1.jsonl", "corr-1", (Record("r", 0, AT, payload),)
        )
        ref = weakref.ref(payload)
        writer.record_chunk(STAGE, c, ChunkOutcome(records_in=1, out=1))
        del c, payload
        gc.collect()
        assert ref() is None
        assert writer.flush() == {}
    assert list(ledger_entries(platform.ledger_table, "corr-1")) == ["cleanse#a"]


def test_a_long_unit_writes_as_it_goes_and_holds_at_most_one_transactions_worth(
    platform: ResourceNames, dynamodb_calls: Any
) -> None:
    """An ingest segment of thousands of chunks: what it holds stays bounded."""
    writer = LedgerWriter()
    cids = [f"c{i:03d}" for i in range(2 * MAX_GROUP_ENTRIES + 10)]
    with writer.holding():
        for cid in cids:
            writer.record_chunk(STAGE, chunk(cid), cleansed())
        # Written as they went, two full transactions; ten entries still held.
        assert dynamodb_calls.operations.count("TransactWriteItems") == 2
        assert len(ledger_entries(platform.ledger_table, "corr-1")) == 2 * MAX_GROUP_ENTRIES
        assert writer.flush() == {}
    assert dynamodb_calls.operations.count("TransactWriteItems") == 3
    assert len(ledger_entries(platform.ledger_table, "corr-1")) == len(cids)
    assert progress("corr-1")["owed_router"] == 3 * len(cids)


def test_an_entry_held_twice_is_written_once_with_its_first_counts(
    platform: ResourceNames,
) -> None:
    """DynamoDB refuses a transaction with two operations on one item: the second of two
    held writes of one entry is dropped (the first write wins, as it would across calls)."""
    writer = LedgerWriter()
    with writer.holding():
        writer.record_chunk(STAGE, chunk("a"), cleansed())
        writer.record_chunk(STAGE, chunk("a"), ChunkOutcome(records_in=4, out=4))
        writer.record_chunk(STAGE, chunk("b"), cleansed())
        assert writer.flush() == {}
    entries = ledger_entries(platform.ledger_table, "corr-1")
    assert sorted(entries) == ["cleanse#a", "cleanse#b"]
    assert entries["cleanse#a"]["out"] == 3
    assert progress("corr-1") == unheld("corr-2", ["a", "b"])
