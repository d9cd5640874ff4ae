"""`sluice replay quarantine` on moto (selection, dry run, idempotency) and the ledger's
replay hop (reconcile on hand-made entries)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from support.platform import STAGE, create_buckets, create_queues, create_tables, ledger_entries

from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import ResourceNames
from sluice.envelope import Chunk, Record, derive_chunk_id, object_correlation_id
from sluice.errors import PermanentError
from sluice.ledger import LedgerWriter
from sluice.quarantine import Quarantine
from sluice_tools.cli import main
from sluice_tools.ledger.reconcile import Exit, LedgerEntry, reconcile
from sluice_tools.replay import QuarantineReplay, Selection, parse_since, replay_chunk_id
from sluice_tools.replay.landing import LandingReplay, replay_key

NAMES = ResourceNames(stage=STAGE, prefix="sluice")
SOURCE = "s3://landing/incoming/order/a.jsonl"


# ---------------------------------------------------------------- --since


def test_since_takes_a_duration_or_an_iso_time() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("3d", now) == now - timedelta(days=3)
    assert parse_since("2026-12-04T10:00:00Z") == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert parse_since("2026-12-04T10:00:00") == datetime(2026, 12, 4, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither an ISO 8601 time"):
        parse_since("yesterday")


# ---------------------------------------------------------------- replay on moto


class Platform:
    """Quarantine, payload bucket, raw queue and ledger in moto; quarantine docs written by
    the stages' own writer."""

    def __init__(self) -> None:
        create_tables()
        create_buckets([NAMES.quarantine_bucket, NAMES.payload_bucket])
        (self.raw_url,) = create_queues([NAMES.raw_queue])
        self.s3, self.sqs, self.ddb = aws.s3(), aws.sqs(), aws.dynamodb()
        self.cleanse = Quarantine("cleanse", self.s3, bucket=NAMES.quarantine_bucket)
        self.ingest = Quarantine("ingest", self.s3, bucket=NAMES.quarantine_bucket)
        self.progress: list[str] = []

    def refuse(self, record_type: str, corr: str, n: int, reason: str) -> list[str]:
        """Cleanse refuses `n` records of one chunk; their documents' keys."""
        records = tuple(
            Record(f"r-{corr}-{i}", i, "2026-12-04T09:00:00Z", {"id": f"{corr}-{i}", "n": i})
            for i in range(n)
        )
        chunk = Chunk(derive_chunk_id(corr, "x"), record_type, SOURCE, corr, records)
        for record in records:
            self.cleanse.reject_record(record, chunk, PermanentError(reason))
        return [f"cleanse/{record_type}/2026-12-04/{r.id}.json" for r in records]

    def replay(self) -> QuarantineReplay:
        return QuarantineReplay(
            s3=self.s3,
            sqs=self.sqs,
            dynamodb=self.ddb,
            quarantine_bucket=NAMES.quarantine_bucket,
            raw_queue=NAMES.raw_queue,
            ledger_table=NAMES.ledger_table,
            payload_bucket=NAMES.payload_bucket,
            progress=self.progress.append,
        )

    def sent(self) -> list[tuple[Chunk, dict[str, Any]]]:
        """Every chunk on the raw queue (taken off it) with its message attributes."""
        got: list[tuple[Chunk, dict[str, Any]]] = []
        while True:
            page = self.sqs.receive_message(
                QueueUrl=self.raw_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages")
            if not page:
                return got
            for m in page:
                self.sqs.delete_message(QueueUrl=self.raw_url, ReceiptHandle=m["ReceiptHandle"])
                got.append((Chunk.decode(m["Body"]), m["MessageAttributes"]))

    def etag(self, key: str) -> str:
        head = self.s3.head_object(Bucket=NAMES.quarantine_bucket, Key=key)
        return str(head["ETag"]).strip('"')


@pytest.fixture
def platform(aws_env: None) -> Iterator[Platform]:
    from moto import mock_aws

    with mock_aws():
        yield Platform()


def test_cleanse_refusals_go_back_to_the_raw_queue_under_their_correlation_id(
    platform: Platform,
) -> None:
    orders = platform.refuse("order", "ingest-aaa", 3, "customer_id is required")
    platform.refuse("customer", "ingest-bbb", 2, "email is not an email")

    result = platform.replay().run(Selection(record_type="order"))

    assert (result.documents, result.matched, result.sent_records) == (3, 3, 3)
    sent = platform.sent()
    assert len(sent) == 3  # one record per chunk
    by_record = {chunk.records[0].id: (chunk, attrs) for chunk, attrs in sent}
    assert sorted(by_record) == ["r-ingest-aaa-0", "r-ingest-aaa-1", "r-ingest-aaa-2"]
    for key in orders:
        chunk, attrs = by_record[key.rsplit("/", 1)[1].removesuffix(".json")]
        assert chunk.chunk_id == replay_chunk_id(key, platform.etag(key))
        assert (chunk.type, chunk.source, chunk.correlation_id) == ("order", SOURCE, "ingest-aaa")
        assert attrs["correlation_id"]["StringValue"] == "ingest-aaa"
        assert chunk.records[0].payload == {
            "id": f"ingest-aaa-{chunk.records[0].ordinal}",
            "n": chunk.records[0].ordinal,
        }
    # The replay is in the ledger, under the original correlation id, as its own stage.
    entries = ledger_entries(NAMES.ledger_table, "ingest-aaa")
    replays = {k: v for k, v in entries.items() if k.startswith("replay#")}
    assert len(replays) == 3
    assert all((v["records_in"], v["out"]) == (1, 1) for v in replays.values())
    assert ledger_entries(NAMES.ledger_table, "ingest-bbb") == {}


def test_reason_and_since_select_and_a_dry_run_sends_nothing(platform: Platform) -> None:
    platform.refuse("order", "ingest-aaa", 2, "customer_id is required")
    platform.refuse("order", "ingest-ccc", 1, "amount must be >= 0")
    replay = platform.replay()

    later = replay.run(Selection(since=datetime.now(UTC) + timedelta(hours=1)), dry_run=True)
    assert (later.documents, later.sent_records) == (0, 0)

    dry = replay.run(
        Selection(reason_contains="CUSTOMER_ID", since=parse_since("1h")), dry_run=True
    )
    assert (dry.documents, dry.matched, dry.sent_records) == (3, 2, 2)
    assert {i.action for i in dry.items} == {"would send"}
    assert {i.correlation_id for i in dry.items} == {"ingest-aaa"}
    assert platform.sent() == []
    assert ledger_entries(NAMES.ledger_table, "ingest-aaa") == {}


def test_a_second_replay_sends_nothing_and_a_resent_chunk_keeps_its_id(
    platform: Platform,
) -> None:
    (key,) = platform.refuse("order", "ingest-aaa", 1, "customer_id is required")
    first = platform.replay().run(Selection())
    ((chunk, _),) = platform.sent()

    again = platform.replay().run(Selection())
    assert (again.sent_records, again.already) == (0, 1)
    assert platform.sent() == []

    # A run killed after sending but before its ledger entry sends the same chunk again:
    # the same id, so cleanse's claim drops it.
    platform.ddb.delete_item(
        TableName=NAMES.ledger_table,
        Key={"correlation_id": {"S": "ingest-aaa"}, "entry": {"S": f"replay#{chunk.chunk_id}"}},
    )
    platform.replay().run(Selection())
    ((resent, _),) = platform.sent()
    assert resent.chunk_id == chunk.chunk_id == first.items[0].chunk_id
    assert resent.records_json() == chunk.records_json()

    # Refused again after the replay (the document is written anew, with the new reason): a
    # new document, replayable again, as a new chunk.
    platform.refuse("order", "ingest-aaa", 1, "currency is not ISO 4217")
    third = platform.replay().run(Selection())
    ((newer, _),) = platform.sent()
    assert third.sent_records == 1
    assert newer.chunk_id == replay_chunk_id(key, platform.etag(key)) != chunk.chunk_id


def test_what_is_not_replayable_is_listed_with_why(platform: Platform) -> None:
    platform.refuse("order", "ingest-aaa", 1, "customer_id is required")
    platform.ingest.reject_raw(
        record_type="order",
        source=SOURCE,
        correlation_id="ingest-aaa",
        raw="{not json",
        reason="line is not JSON",
        error_class="ParseError",
        ref_id="r-line-7",
        ingested_at="2026-12-04T09:00:00Z",
    )
    result = platform.replay().run(Selection())
    assert (result.matched, result.sent_records) == (2, 1)
    (reason,) = result.not_replayable
    assert reason.startswith("ingest: raw input that never became a record")
    assert "sluice replay landing" in reason
    only_ingest = platform.replay().run(Selection(stage="ingest"))
    assert (only_ingest.documents, only_ingest.sent_records) == (1, 0)
    # A type without a stage looks in every stage's folder of that type.
    orders = platform.replay().run(Selection(record_type="order"), dry_run=True)
    assert sorted(i.stage for i in orders.items) == ["cleanse", "ingest"]


def test_a_claim_checked_payload_the_payload_bucket_expired_is_put_back(
    platform: Platform,
) -> None:
    payload_key = "ingest-aaa/r-big.json"
    platform.s3.put_object(Bucket=NAMES.payload_bucket, Key=payload_key, Body=b'{"id": "big"}')
    ref = f"s3://{NAMES.payload_bucket}/{payload_key}"
    record = Record("r-big", 0, "2026-12-04T09:00:00Z", payload_ref=ref)
    chunk = Chunk("c-big", "order", SOURCE, "ingest-aaa", (record,))
    platform.cleanse.reject_record(record, chunk, PermanentError("customer_id is required"))
    platform.s3.delete_object(Bucket=NAMES.payload_bucket, Key=payload_key)  # expired

    assert platform.replay().run(Selection()).sent_records == 1
    ((sent, _),) = platform.sent()
    assert sent.records[0].payload_ref == ref
    body = platform.s3.get_object(Bucket=NAMES.payload_bucket, Key=payload_key)["Body"].read()
    assert json.loads(body) == {"id": "big"}


def test_the_command_lists_a_dry_run_and_replays(platform: Platform) -> None:
    platform.refuse("order", "ingest-aaa", 2, "customer_id is required")
    args = ["replay", "quarantine", "--stage", STAGE, "--prefix", "sluice", "--type", "order"]

    dry = CliRunner().invoke(main, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    listed = [line for line in dry.output.splitlines() if line.startswith("would send ")]
    assert [line.split()[2] for line in listed] == [
        "cleanse/order/2026-12-04/r-ingest-aaa-0.json",
        "cleanse/order/2026-12-04/r-ingest-aaa-1.json",
    ]
    assert "would send 2 record(s) to cleanse in 2 chunk(s)" in dry.output
    assert platform.sent() == []

    done = CliRunner().invoke(main, [*args, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["sent_records"] == 2
    assert len(platform.sent()) == 2

    bad = CliRunner().invoke(main, [*args, "--since", "last week"])
    assert bad.exit_code == 2
    assert "neither an ISO 8601 time" in bad.output


# ---------------------------------------------------------------- reconcile: the replay hop

CORR = "ingest-abc"


def entry(name: str, chunk: str, n: int, out: int | None = None, **counts: Any) -> LedgerEntry:
    return LedgerEntry(
        CORR,
        name,
        chunk,
        type="order",
        source=SOURCE,
        records_in=n,
        out=n if out is None else out,
        **counts,
    )


def flow_of(entries: list[LedgerEntry], in_flight: dict[str, int] | None = None) -> Any:
    report = reconcile(entries, in_flight=in_flight or {})
    (flow,) = report.flows
    return flow, {h.name: h for h in flow.hops}


# 10 read; cleanse quarantined 3, then 3 replayed: 2 pass, 1 is refused again.
BEFORE = [
    entry("ingest", "c1", 10),
    entry("cleanse", "c1", 10, out=7, quarantined=3),
    entry("router", "k1", 7),
]
REPLAYED = [
    entry("replay", "p1", 1),
    entry("replay", "p2", 1),
    entry("replay", "p3", 1),
    entry("cleanse", "p1", 1),
    entry("cleanse", "p2", 1),
    entry("cleanse", "p3", 1, out=0, quarantined=1),
    entry("router", "k2", 1),
    entry("router", "k3", 1),
]


def test_the_ledger_balances_after_a_replay_and_shows_it() -> None:
    flow, hops = flow_of(BEFORE + REPLAYED)
    assert flow.exit == Exit.BALANCED, flow.problems
    assert [h.name for h in flow.hops][:3] == ["ingest", "replay", "cleanse"]
    cleanse = hops["cleanse"]
    # Received once (when the records first came); out of quarantine into their new outcome.
    assert (cleanse.expected, cleanse.received, cleanse.out, cleanse.quarantined) == (10, 10, 9, 1)
    assert (hops["replay"].received, hops["replay"].out) == (3, 3)
    assert hops["router"].received == 9
    notes = [p.message for p in flow.problems if p.where == "replay"]
    assert notes == ["replayed 3 from quarantine into cleanse: 2 passed, 1 quarantined again"]


def test_a_replayed_chunk_cleanse_never_recorded_is_pending_or_unaccounted() -> None:
    lost = [e for e in BEFORE + REPLAYED if not (e.name == "cleanse" and e.chunk_id == "p3")]
    flow, hops = flow_of(lost)
    assert flow.exit == Exit.UNACCOUNTED
    assert hops["replay"].missing == 1
    assert any("never recorded" in p.message for p in flow.problems if p.where == "replay")

    flow, hops = flow_of(lost, in_flight={"cleanse": 1})
    assert flow.exit == Exit.NOT_SETTLED
    assert hops["replay"].status == "in flight"


def test_a_landing_replay_is_a_note_on_the_original_not_a_hop() -> None:
    marker = LedgerEntry(CORR, "replay", "m1", type="order", skipped="re-ingested as s3://x/y")
    flow, hops = flow_of([*BEFORE, marker])
    assert flow.exit == Exit.BALANCED, flow.problems
    assert "replay" not in hops
    assert any("re-ingested as s3://x/y" in p.message for p in flow.problems)


# ---------------------------------------------------------------- replay landing


def test_a_landing_replay_key_carries_the_generation_and_can_fix_the_type() -> None:
    assert replay_key("incoming/order/2026/a.jsonl", 1) == "incoming/order/_replay/g1/2026/a.jsonl"
    assert replay_key("incoming/data/a.jsonl", 2, "order") == "incoming/order/_replay/g2/a.jsonl"
    with pytest.raises(ValueError, match="say which type"):
        replay_key("incoming/a.jsonl", 1)
    with pytest.raises(ValueError, match="not a landed key"):
        replay_key("outgoing/order/a.jsonl", 1)


@pytest.fixture
def landing(platform: Platform) -> Platform:
    create_buckets([NAMES.landing_bucket])
    return platform


def _landing(platform: Platform) -> LandingReplay:
    return LandingReplay(
        s3=platform.s3,
        dynamodb=platform.ddb,
        landing_bucket=NAMES.landing_bucket,
        ledger_table=NAMES.ledger_table,
    )


def test_landing_replay_copies_once_per_generation_and_spares_delivered_objects(
    landing: Platform,
) -> None:
    s3, bucket = landing.s3, NAMES.landing_bucket
    s3.put_object(Bucket=bucket, Key="incoming/data/refused.jsonl", Body=b'{"order_id": "1"}\n')
    s3.put_object(Bucket=bucket, Key="incoming/data/fine.jsonl", Body=b'{"order_id": "2"}\n')
    etag = s3.head_object(Bucket=bucket, Key="incoming/data/fine.jsonl")["ETag"].strip('"')
    fine = object_correlation_id(bucket, "incoming/data/fine.jsonl", etag)
    # Ingest sent one record of fine.jsonl on: re-ingesting it would deliver it twice.
    chunk = Chunk("c-1", "data", f"s3://{bucket}/incoming/data/fine.jsonl", fine, ())
    LedgerWriter(landing.ddb, table_name=NAMES.ledger_table).record_chunk(
        "ingest", chunk, ChunkOutcome(records_in=1, out=1)
    )

    dry = _landing(landing).run("incoming/data/", record_type="order", dry_run=True)
    assert (dry.objects, dry.copied, dry.skipped) == (2, 1, 1)
    assert "incoming/order/_replay/g1/refused.jsonl" not in _keys(landing)

    first = _landing(landing).run("incoming/data/", record_type="order")
    assert (first.copied, first.skipped) == (1, 1)
    copy = s3.head_object(Bucket=bucket, Key="incoming/order/_replay/g1/refused.jsonl")
    original = first.items[[i.key for i in first.items].index("incoming/data/refused.jsonl")]
    assert copy["Metadata"]["sluice-replay-of"] == original.correlation_id
    # The original's flow names the copy (a skipped `replay` entry: a note, not a hop).
    entries = ledger_entries(NAMES.ledger_table, original.correlation_id)
    (marker,) = [v for k, v in entries.items() if k.startswith("replay#")]
    assert "re-ingested as s3://" in str(marker["skipped"])

    again = _landing(landing).run("incoming/", record_type="order")  # copies are not read
    assert (again.objects, again.copied, again.already) == (2, 0, 1)
    later = _landing(landing).run("incoming/data/", record_type="order", generation=2)
    assert later.copied == 1
    assert "incoming/order/_replay/g2/refused.jsonl" in _keys(landing)


def _keys(platform: Platform) -> set[str]:
    listed = platform.s3.list_objects_v2(Bucket=NAMES.landing_bucket).get("Contents") or []
    return {str(o["Key"]) for o in listed}
