"""Reconcile the ledger: is every record of every landed object accounted for? Pure, no I/O.

Anchored at the landing: every object version in `incoming/` of the landing bucket (pulls
land there too) is expected, with the correlation id ingest derives from (bucket, key, ETag)
(`sluice.envelope.object_correlation_id`); two versions with the same bytes share it (one
flow, the later upload a duplicate). Correlation ids the ledger holds without a landed
object (deleted since, or outside `incoming/`) are reconciled as well.

Per correlation id, the stages' entries are summed per hop, and each hop's input must equal
the previous hop's output:

    ingest      read = Σ records_in;  read = out + quarantined + duplicate + failed
    cleanse     received = Σ records_in(cleanse) must equal ingest.out
    router      received = Σ records_in(router)  must equal cleanse.out
    replay      records `sluice replay quarantine` sent back to cleanse from its quarantine
                (entries `replay#<chunk>`); cleanse's entries of those chunks move them from
                quarantined to their new outcome instead of adding to received, and each
                replayed chunk must have a cleanse entry (else in flight or unaccounted)
    consumer-S  received must equal expected(S): the router's records whose routing
                attributes (+ record_type, correlation_id) pass S's filter policy
    sink S      delivered + quarantined + failed (consumer-S) must equal its received

At every hop, and in every entry, received = out + quarantined + duplicate + failed, else
the entry is inconsistent. A gap is `expected - received - dead`, where `dead` counts the
records of chunks in the hop's DLQ (or failures queue) that the receiving stage never
recorded. Records failed one by one in a consumer (`failed = k` on its entry) travel as a
chunk whose `failed_from` names the parent chunk: in the DLQ they are dead letters already
counted as received (never subtracted twice); processed again, their entries carry
`retry_of` and move the records from `failed` to their new outcome instead of adding to
`received`. Failed records in no DLQ and never processed again are unaccounted.

Status of a flow (and exit status, the worst one winning in the order 1, 3, 2, 0):
- balanced (0): every record reached every sink its routes lead to, or quarantine; an
  object ingest skipped on purpose shows as "skipped: <reason>" (0, but visible);
- unaccounted / inconsistent (1): records nothing accounts for (a landed object without a
  ledger entry once nothing is pending, a gap with the hop's queue empty), or counts that
  contradict each other;
- in flight (2): work is pending: the hop's queue is not empty or its stage holds an
  INPROGRESS claim; an object not ingested yet while ingest may still run (its claim held,
  the local runtime's S3 event queue not empty, or, on AWS where there is no such queue,
  landed less than the grace ago). A hop that received more than its upstream recorded while
  the upstream stage is still in flight is in flight too: stages send, then write the
  ledger, and a claim redoes both after a crash;
- dead letters (3): records (or an S3 event, or a continuation) wait in a DLQ or failures
  queue; never balanced;
- not found (4): `--correlation-id` names nothing landed, recorded or dead-lettered.

What this proves and what it does not:
- Counts are per unique chunk: `StageRuntime` writes no entry for a duplicate chunk and
  the first write of an entry wins, so redeliveries and redrives never double a count.
- Sink expectations are exact only when the router's entries carry `routes` (records per
  set of routing attributes; written since the router records them). For router entries
  without them a sink whose policy reads only `record_type`/`correlation_id` is still
  exact; any other is checked as an upper bound (`bounded`, exit 0, said so).
- How many records an object holds is known here only from what ingest read: ingest's
  `ingest#done` marker (the objects' progress, `sluice.progress`) is not read by this
  reconcile, nor is the progress item. A read cut short is seen through ingest's claim (not
  COMPLETED) while ingest may still run, not afterwards.
- Data that never became a chunk of a correlation id cannot be seen here: a message that
  did not decode (quarantined under `<stage>/_messages/`) and a chunk quarantined whole
  for reusing a claimed id leave no ledger entry and show as a gap at their hop.
- Objects landed before the ledger's retention (its entries' TTL) are not expected.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

from sluice.envelope import object_correlation_id
from sluice.idempotency import Status
from sluice.ledger import (
    CHUNK_ID_ATTR,
    COUNT_ATTRS,
    DEFAULT_TTL_SECONDS,
    DELIVERED_ATTR,
    PARTITION_KEY,
    RECORDED_AT_ATTR,
    RETRY_OF_ATTR,
    ROUTES_ATTR,
    SINK_ATTR,
    SINK_PREFIX,
    SKIPPED_ATTR,
    SORT_KEY,
    SOURCE_ATTR,
    STAGE_ATTR,
    TYPE_ATTR,
    split_item,
)
from sluice.progress import REPLAY
from sluice_tools.ledger.filters import SinkPolicy
from sluice_tools.stages import CLEANSE, CONSUMER_PREFIX, INGEST, PIPELINE_STAGES, ROUTER

PIPELINE = PIPELINE_STAGES
# The stage `sluice replay quarantine` replays into (its ledger stage is REPLAY).
REPLAY_INTO = CLEANSE
INCOMING_PREFIX = "incoming/"
# Message attributes of a published chunk the ledger knows besides its routing attributes.
KNOWN_WITHOUT_ROUTES = frozenset({"record_type", "correlation_id"})
# How long an object with no ledger entry may still be picked up by ingest on AWS, where no
# queue shows a pending S3 event: Lambda retries an async invocation about 1 and then 2
# minutes after a failure (~3 min), and one ingest attempt may run for its 900 s timeout.
DEFAULT_GRACE = timedelta(seconds=3 * 60 + 900)
# Ledger entries expire (TTL) after this long: older landed objects are not expected.
DEFAULT_RETENTION = timedelta(seconds=DEFAULT_TTL_SECONDS)
INPROGRESS, COMPLETED = Status.INPROGRESS.value, Status.COMPLETED.value


class Exit(IntEnum):
    BALANCED = 0
    UNACCOUNTED = 1  # or inconsistent
    NOT_SETTLED = 2  # in flight: wait and run again
    DEAD_LETTERS = 3
    NOT_FOUND = 4


# Which exit a report with several gives: a loss first, then dead letters (act on them),
# then in flight (wait and run again).
_SEVERITY = (Exit.BALANCED, Exit.NOT_SETTLED, Exit.DEAD_LETTERS, Exit.UNACCOUNTED, Exit.NOT_FOUND)
_EXIT_OF_KIND = {
    "unaccounted": Exit.UNACCOUNTED,
    "inconsistent": Exit.UNACCOUNTED,
    "in flight": Exit.NOT_SETTLED,
    "dead letters": Exit.DEAD_LETTERS,
    "not found": Exit.NOT_FOUND,
}
_STATUS = {
    Exit.BALANCED: "balanced",
    Exit.UNACCOUNTED: "unaccounted",
    Exit.NOT_SETTLED: "in flight",
    Exit.DEAD_LETTERS: "dead letters",
    Exit.NOT_FOUND: "not found",
}


def worst(exits: Iterable[Exit]) -> Exit:
    return max(exits, key=_SEVERITY.index, default=Exit.BALANCED)


def consumer_stage(sink: str) -> str:
    return f"{CONSUMER_PREFIX}{sink}"


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger item: what one stage (or sink) did with one chunk of a correlation id."""

    correlation_id: str
    name: str  # the stage ("cleanse", "consumer-index", ...) or the sink ("index")
    chunk_id: str
    is_sink: bool = False
    type: str = ""
    source: str = ""
    records_in: int = 0
    out: int = 0
    quarantined: int = 0
    duplicate: int = 0
    failed: int = 0
    delivered: int = 0
    routes: Mapping[str, int] | None = None  # the router's, None if the entry has none
    recorded_at: str = ""
    retry_of: str | None = None  # the chunk whose failed records this one processes again
    skipped: str | None = None  # why the stage skipped the chunk (records_in 0)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> LedgerEntry:
        """From a DynamoDB item as the low-level client returns it (`{"S": ...}` values), one
        entry as `sluice.ledger.split_item` gives it (the schema is `sluice.ledger`'s)."""

        def s(name: str) -> str:
            return str((item.get(name) or {}).get("S", ""))

        def n(name: str) -> int:
            return int((item.get(name) or {}).get("N", "0"))

        entry = s(SORT_KEY)
        is_sink = entry.startswith(SINK_PREFIX)
        name, _, chunk = entry.removeprefix(SINK_PREFIX).partition("#")
        routes_attr = (item.get(ROUTES_ATTR) or {}).get("M")
        routes = (
            {k: int(v["N"]) for k, v in routes_attr.items()} if routes_attr is not None else None
        )
        records_in, out, quarantined, duplicate, failed = (n(c) for c in COUNT_ATTRS)
        return cls(
            correlation_id=s(PARTITION_KEY),
            name=s(SINK_ATTR) or s(STAGE_ATTR) or name,
            chunk_id=s(CHUNK_ID_ATTR) or chunk,
            is_sink=is_sink,
            type=s(TYPE_ATTR),
            source=s(SOURCE_ATTR),
            records_in=records_in,
            out=out,
            quarantined=quarantined,
            duplicate=duplicate,
            failed=failed,
            delivered=n(DELIVERED_ATTR),
            routes=routes,
            recorded_at=s(RECORDED_AT_ATTR),
            retry_of=s(RETRY_OF_ATTR) or None,
            skipped=s(SKIPPED_ATTR) or None,
        )

    @classmethod
    def all_from_item(cls, item: Mapping[str, Any]) -> list[LedgerEntry]:
        """The entries one item holds (`sluice.ledger.split_item`: a consumer's entry written
        with its sink's delivery is two)."""
        return [cls.from_item(part) for part in split_item(item)]

    @property
    def balances(self) -> bool:
        if self.is_sink:
            return self.delivered <= self.records_in
        return self.records_in == self.out + self.quarantined + self.duplicate + self.failed


@dataclass(frozen=True)
class DeadChunk:
    """Something found in a DLQ or failures queue, attributed to the stage that lost it.

    `records` is None when the message holds no envelope (an S3 event, a continuation).
    `failed_from`: the chunk whose entry counted these records as `failed` (records a
    consumer isolated one by one), from the message's `failed_from` attribute.
    """

    queue: str
    stage: str
    correlation_id: str | None
    chunk_id: str | None = None
    records: int | None = None
    source: str | None = None
    failed_from: str | None = None


@dataclass(frozen=True)
class LandedObject:
    """One version of an object in the landing bucket (an unversioned bucket: the object)."""

    bucket: str
    key: str
    etag: str  # without quotes
    landed_at: datetime  # LastModified
    version_id: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def correlation_id(self) -> str:
        return object_correlation_id(self.bucket, self.key, self.etag)

    @property
    def record_type(self) -> str:
        parts = self.key.split("/")
        return parts[1] if len(parts) >= 3 and f"{parts[0]}/" == INCOMING_PREFIX else ""


@dataclass(frozen=True)
class ClaimState:
    """One idempotency item as the ledger needs it (see `sluice.idempotency`)."""

    pk: str  # "<namespace>#<key>"; ingest's key is "<bucket>/<key>/<etag>[@offset]"
    status: str
    in_progress_expiry: int = 0  # epoch milliseconds
    expires_at: int = 0  # epoch seconds (TTL), 0 if unknown


@dataclass
class Hop:
    """One line of a correlation id's table: one stage, or one sink's delivery."""

    name: str
    expected: int | None  # what the previous hop sent it (None: the first hop)
    received: int = 0
    out: int = 0
    quarantined: int = 0
    duplicate: int = 0
    failed: int = 0  # still failed: counted failed, not processed again (yet)
    delivered: int | None = None  # sinks only
    dead: int = 0  # records of this hop's input in a DLQ or failures queue
    dead_failed: int = 0  # of `dead`: records also counted in `failed` (failed_from chunks)
    missing: int = 0
    # ok | in flight | unaccounted | inconsistent | bounded | dead letters
    status: str = "ok"


@dataclass(frozen=True)
class Problem:
    # unaccounted | inconsistent | in flight | dead letters | not found | skipped | note
    kind: str
    correlation_id: str | None
    where: str
    message: str

    @property
    def exit(self) -> Exit:
        return _EXIT_OF_KIND.get(self.kind, Exit.BALANCED)


@dataclass
class Flow:
    """Everything the ledger says about one correlation id."""

    correlation_id: str
    source: str = ""
    type: str = ""
    read: int = 0
    hops: list[Hop] = field(default_factory=list)
    dead_records: int = 0
    problems: list[Problem] = field(default_factory=list)
    landed_at: str = ""  # the first upload, ISO 8601; "" if not in the landing bucket
    versions: list[str] = field(default_factory=list)  # version ids ("null": unversioned)

    @property
    def exit(self) -> Exit:
        return worst(p.exit for p in self.problems)

    @property
    def status(self) -> str:
        exit = self.exit
        kinds = {p.kind for p in self.problems}
        if exit == Exit.UNACCOUNTED and "unaccounted" not in kinds:
            return "inconsistent"
        skipped = [p.message for p in self.problems if p.kind == "skipped"]
        if exit == Exit.BALANCED and skipped:
            return "skipped: " + "; ".join(skipped)
        return _STATUS[exit]


@dataclass
class Report:
    flows: list[Flow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # not tied to one correlation id
    in_flight: Mapping[str, int] = field(default_factory=dict)
    dead_letters: Mapping[str, int] = field(default_factory=dict)  # queue → messages

    @property
    def exit_code(self) -> int:
        every = [*self.problems, *(p for f in self.flows for p in f.problems)]
        return int(worst(p.exit for p in every))

    @property
    def status(self) -> str:
        return _STATUS[Exit(self.exit_code)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "correlations": [
                {
                    "correlation_id": f.correlation_id,
                    "source": f.source,
                    "type": f.type,
                    "status": f.status,
                    "landed_at": f.landed_at,
                    "versions": list(f.versions),
                    "read": f.read,
                    "dead_records": f.dead_records,
                    "hops": [asdict(h) for h in f.hops],
                    "problems": [asdict(p) for p in f.problems],
                }
                for f in self.flows
            ],
            "problems": [asdict(p) for p in self.problems],
            "in_flight": dict(self.in_flight),
            "dead_letters": dict(self.dead_letters),
        }


@dataclass
class _Pending:
    """What is still moving: queue depths, live claims, the landing's pending events."""

    in_flight: Mapping[str, int]
    now: datetime
    grace: timedelta
    ingest_events: int | None  # None: no queue shows pending S3 events (AWS)
    stage_claims: Mapping[str, int] = field(default_factory=dict)  # stage → live INPROGRESS
    ingest_running: frozenset[str] = frozenset()  # correlation ids with a live ingest claim
    ingest_done: frozenset[str] = frozenset()  # correlation ids whose ingest claim completed

    @classmethod
    def of(
        cls,
        claims: Iterable[ClaimState],
        in_flight: Mapping[str, int],
        now: datetime,
        grace: timedelta,
        ingest_events: int | None,
    ) -> _Pending:
        now_s = now.timestamp()
        stage_claims: dict[str, int] = defaultdict(int)
        running, done = set(), set()
        for claim in claims:
            if claim.expires_at and claim.expires_at < now_s:
                continue  # past its TTL: as good as deleted
            namespace, _, key = claim.pk.partition("#")
            live = claim.status == INPROGRESS and claim.in_progress_expiry >= now_s * 1000
            if namespace == INGEST:
                corr = _ingest_claim_correlation(key)
                if corr is None:
                    continue
                if live:
                    running.add(corr)
                elif claim.status == COMPLETED and "@" not in key.rpartition("/")[2]:
                    done.add(corr)
            elif live:
                stage_claims[namespace] += 1
        return cls(
            in_flight,
            now,
            grace,
            ingest_events,
            dict(stage_claims),
            frozenset(running),
            frozenset(done),
        )

    def stage(self, name: str) -> str | None:
        """Why `name` may still record more (None: nothing pending there)."""
        parts = []
        if self.in_flight.get(name):
            parts.append(f"{self.in_flight[name]} message(s) in its queue")
        if self.stage_claims.get(name):
            parts.append(f"{self.stage_claims[name]} chunk claim(s) in progress")
        return ", ".join(parts) or None

    def ingest(self, corr: str, landed_at: datetime | None) -> str | None:
        """Why ingest may still read (more of) the object `corr` (None: nothing pending)."""
        if corr in self.ingest_running:
            return "ingest holds its claim on the object (INPROGRESS)"
        if corr in self.ingest_done:
            return None
        if self.ingest_events:
            return f"{self.ingest_events} S3 event(s) wait in the runtime's queue for ingest"
        if self.ingest_events is None and landed_at is not None:
            age = self.now - landed_at
            if age < self.grace:
                return (
                    f"landed {int(age.total_seconds())} s ago, within the "
                    f"{int(self.grace.total_seconds())} s grace for Lambda's retries (--grace)"
                )
        return None


def _ingest_claim_correlation(key: str) -> str | None:
    """`<bucket>/<key>/<etag>[@offset]` → the object's correlation id."""
    bucket, _, rest = key.partition("/")
    object_key, _, etag = rest.rpartition("/")
    etag = etag.partition("@")[0]
    if not bucket or not object_key or not etag:
        return None
    return object_correlation_id(bucket, object_key, etag)


def reconcile(
    entries: Iterable[LedgerEntry],
    dead_letters: Iterable[DeadChunk] = (),
    in_flight: Mapping[str, int] | None = None,
    *,
    sinks: Mapping[str, SinkPolicy] | None = None,
    landed: Iterable[LandedObject] | None = None,
    claims: Iterable[ClaimState] = (),
    ingest_events: int | None = None,
    now: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
    retention: timedelta | None = DEFAULT_RETENTION,
    correlation_id: str | None = None,
) -> Report:
    """Account for every record of every landed object and every correlation id in `entries`.

    `dead_letters`: what the DLQs and failures queues hold; `in_flight`: messages waiting
    or in process per receiving stage ("cleanse" for the raw queue, "consumer-index", ...,
    "ingest" for continuations); `sinks`: each consumer's filter policy (without it, sinks
    seen in the ledger are checked as upper bounds only); `landed`: the object versions of
    the landing bucket's `incoming/` (None: the landing was not read, only the ledger is
    checked); `claims`: the idempotency table's items (INPROGRESS ones, and ingest's);
    `ingest_events`: messages in the local runtime's S3 event queues (None on AWS, where an
    object younger than `grace` with no entry is in flight instead); `now`: the clock;
    `retention`: landed objects older than this are not expected (the ledger forgot them);
    `correlation_id`: only this one (none found: "not found", exit 4).
    """
    now = now or datetime.now(UTC)
    in_flight = dict(in_flight or {})
    pending = _Pending.of(claims, in_flight, now, grace, ingest_events)
    by_corr: dict[str, list[LedgerEntry]] = defaultdict(list)
    for entry in entries:
        if correlation_id is None or entry.correlation_id == correlation_id:
            by_corr[entry.correlation_id].append(entry)
    report = Report(in_flight=in_flight)
    landed_by_corr = _landed(landed or (), now, retention, correlation_id, report)
    known = set(by_corr) | set(landed_by_corr)
    sources = {e.source: c for c, es in by_corr.items() for e in es if e.source}
    for landed_corr, objects in landed_by_corr.items():
        sources.setdefault(objects[0].uri, landed_corr)
    dead_by_corr: dict[str, list[DeadChunk]] = defaultdict(list)
    queue_counts: dict[str, int] = defaultdict(int)
    unattributed: list[DeadChunk] = []
    for d in dead_letters:
        corr = d.correlation_id or (sources.get(d.source) if d.source else None)
        if correlation_id is not None and corr != correlation_id:
            if d.correlation_id is None and corr is None:
                unattributed.append(d)
            continue
        queue_counts[d.queue] += 1
        if corr is not None and (corr in known or correlation_id is not None):
            known.add(corr)
            dead_by_corr[corr].append(d)
        else:
            report.problems.append(
                Problem(
                    "dead letters",
                    d.correlation_id,
                    d.queue,
                    f"dead-lettered, no landed object or ledger entry to tie it to: "
                    f"{d.source or d.chunk_id or '?'} "
                    f"({'records unknown' if d.records is None else f'{d.records} records'})",
                )
            )
    report.dead_letters = dict(queue_counts)
    if unattributed:
        report.problems.append(
            Problem(
                "note",
                None,
                ", ".join(sorted({d.queue for d in unattributed})),
                f"{len(unattributed)} dead-lettered message(s) name no correlation id; "
                "run without --correlation-id to see them",
            )
        )
    if in_flight.get(INGEST):
        report.problems.append(
            Problem(
                "in flight",
                None,
                INGEST,
                f"{in_flight[INGEST]} ingest continuation(s) pending: read counts may still grow",
            )
        )
    if correlation_id is not None and not known:
        report.problems.append(
            Problem(
                "not found",
                correlation_id,
                "ledger",
                "no landed object, ledger entry or dead-lettered message carries this "
                "correlation id",
            )
        )
    for corr in sorted(known):
        objects = landed_by_corr.get(corr, [])
        dead = dead_by_corr.get(corr, [])
        if by_corr.get(corr):
            flow = _flow(corr, by_corr[corr], dead, objects, pending, sinks)
        else:
            flow = _unstarted_flow(corr, dead, objects, pending)
        _note_landing(flow, objects)
        report.flows.append(flow)
    return report


def _landed(
    landed: Iterable[LandedObject],
    now: datetime,
    retention: timedelta | None,
    correlation_id: str | None,
    report: Report,
) -> dict[str, list[LandedObject]]:
    """The expected objects by correlation id, oldest first; too old ones only counted."""
    found: dict[str, list[LandedObject]] = defaultdict(list)
    old = 0
    for obj in landed:
        if retention is not None and now - obj.landed_at > retention:
            old += 1
            continue
        corr = obj.correlation_id
        if correlation_id is None or corr == correlation_id:
            found[corr].append(obj)
    if old:
        report.problems.append(
            Problem(
                "note",
                None,
                "landing",
                f"{old} object version(s) landed more than {retention} ago are not checked: "
                "the ledger keeps its entries that long",
            )
        )
    return {c: sorted(os, key=lambda o: o.landed_at) for c, os in found.items()}


def _note_landing(flow: Flow, objects: list[LandedObject]) -> None:
    if not objects:
        return
    first = objects[0]
    flow.landed_at = _iso(first.landed_at)
    flow.versions = [o.version_id or "null" for o in objects]
    if len(objects) > 1:
        later = ", ".join(f"{o.version_id or 'null'} at {_iso(o.landed_at)}" for o in objects[1:])
        flow.problems.append(
            Problem(
                "note",
                flow.correlation_id,
                "landing",
                f"uploaded {len(objects)} times with the same bytes (ETag {first.etag}): one "
                f"flow; duplicates of version {first.version_id or 'null'} at "
                f"{flow.landed_at}: {later}",
            )
        )


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _unstarted_flow(
    corr: str, dead: list[DeadChunk], objects: list[LandedObject], pending: _Pending
) -> Flow:
    """A correlation id the ledger has no entry for: a landed object ingest did not record."""
    first = objects[0] if objects else None
    source = first.uri if first else next((d.source for d in dead if d.source), "") or ""
    flow = Flow(corr, source=source, type=first.record_type if first else "")
    hop = Hop(INGEST, None)
    flow.hops.append(hop)
    landed = f"landed {_iso(first.landed_at)}" if first else "landed"
    if dead:
        hop.status = "dead letters"
        hop.dead = sum(d.records or 0 for d in dead)
        flow.dead_records = hop.dead
        queues = ", ".join(sorted({d.queue for d in dead}))
        flow.problems.append(
            Problem(
                "dead letters",
                corr,
                INGEST,
                f"{landed}, never ingested: its event is in {queues} (`sluice dlq show`)",
            )
        )
        return flow
    reason = pending.ingest(corr, first.landed_at if first else None)
    if reason is not None:
        hop.status = "in flight"
        flow.problems.append(
            Problem("in flight", corr, INGEST, f"{landed}, not ingested yet: {reason}")
        )
        return flow
    hop.status = "unaccounted"
    done = " (its claim is COMPLETED)" if corr in pending.ingest_done else ""
    flow.problems.append(
        Problem(
            "unaccounted",
            corr,
            INGEST,
            f"{landed}; ingest wrote no ledger entry{done}, nothing of it is in a DLQ and "
            "no ingest work is pending",
        )
    )
    return flow


def _flow(
    corr: str,
    entries: list[LedgerEntry],
    dead: list[DeadChunk],
    objects: list[LandedObject],
    pending: _Pending,
    sinks: Mapping[str, SinkPolicy] | None,
) -> Flow:
    first = min(entries, key=lambda e: (e.name != INGEST, e.recorded_at))
    flow = Flow(corr, source=first.source, type=first.type)
    landed_at = objects[0].landed_at if objects else None
    stages: dict[str, list[LedgerEntry]] = defaultdict(list)
    deliveries: dict[str, list[LedgerEntry]] = defaultdict(list)
    for e in entries:
        (deliveries if e.is_sink else stages)[e.name].append(e)
        if not e.balances:
            flow.problems.append(
                Problem(
                    "inconsistent",
                    corr,
                    f"{'sink:' if e.is_sink else ''}{e.name}",
                    f"entry of chunk {e.chunk_id} does not balance: in {e.records_in}, out "
                    f"{e.out}, quarantined {e.quarantined}, duplicate {e.duplicate}, failed "
                    f"{e.failed}, delivered {e.delivered}",
                )
            )
    flow.dead_records = sum(d.records or 0 for d in dead)

    def busy(stage: str) -> str | None:
        if stage == INGEST:
            reason = pending.ingest(corr, landed_at)
            if reason is None and pending.in_flight.get(INGEST):
                reason = f"{pending.in_flight[INGEST]} ingest continuation(s) pending"
            return reason
        return pending.stage(stage)

    # ingest, cleanse, router: each receives what the one before sent.
    expected: int | None = None
    upstream: str | None = None
    # (A landing replay's entry is a skipped one naming the copy: a note, not a hop.)
    replays = [e for e in stages.get(REPLAY, []) if e.skipped is None]
    replayed = frozenset(e.chunk_id for e in replays)
    for name in PIPELINE:
        into = replayed if name == REPLAY_INTO else frozenset()
        hop = _stage_hop(
            name, expected, stages.get(name, []), dead, flow, busy, upstream, replayed=into
        )
        flow.hops.append(hop)
        expected, upstream = hop.out, name
    flow.read = flow.hops[0].received
    if replays:
        flow.hops.insert(1, _replay_hop(replays, stages.get(REPLAY_INTO, []), flow, busy))
    # Ingest may still read more of the object: its claim is held, or (landed, claim not
    # COMPLETED) an event is pending or Lambda may still retry.
    running = pending.ingest(corr, landed_at)
    if running is not None and (objects or corr in pending.ingest_running):
        flow.problems.append(
            Problem("in flight", corr, INGEST, f"ingest may still read more: {running}")
        )

    router = stages.get(ROUTER, [])
    names = (
        set(sinks or {})
        | set(deliveries)
        | {n.removeprefix(CONSUMER_PREFIX) for n in stages if n.startswith(CONSUMER_PREFIX)}
    )
    for sink in sorted(names):
        policy = (sinks or {}).get(sink)
        want, exact = _expected_for(router, policy, corr)
        stage = consumer_stage(sink)
        hop = _stage_hop(stage, want, stages.get(stage, []), dead, flow, busy, ROUTER, exact=exact)
        flow.hops.append(hop)
        flow.hops.append(_delivery_hop(sink, hop, deliveries.get(sink, []), flow, busy))
    _note_skipped(flow, entries)
    return flow


def _note_skipped(flow: Flow, entries: list[LedgerEntry]) -> None:
    for e in entries:
        if e.skipped is None:
            continue
        where = f"{'sink:' if e.is_sink else ''}{e.name}"
        if flow.read == 0 and not e.is_sink:
            flow.problems.append(Problem("skipped", flow.correlation_id, where, e.skipped))
        else:
            flow.problems.append(
                Problem(
                    "note", flow.correlation_id, where, f"chunk {e.chunk_id} skipped: {e.skipped}"
                )
            )


def _expected_for(
    router: list[LedgerEntry], policy: SinkPolicy | None, corr: str
) -> tuple[int, bool]:
    """Records the router sent that pass the sink's policy, and whether that is exact."""
    total, exact = 0, True
    for e in router:
        known = {"record_type": e.type, "correlation_id": corr}
        if policy is not None and e.routes is not None:
            for attributes, count in e.routes.items():
                routed = {str(k): str(v) for k, v in json.loads(attributes).items()}
                if policy.policy.matches({**routed, **known}):
                    total += count
        elif policy is not None and policy.policy.keys <= KNOWN_WITHOUT_ROUTES:
            total += e.out if policy.policy.matches(known) else 0
        else:
            total, exact = total + e.out, False
    return total, exact


Busy = Callable[[str], str | None]


def _stage_hop(
    name: str,
    expected: int | None,
    entries: list[LedgerEntry],
    dead: list[DeadChunk],
    flow: Flow,
    busy: Busy,
    upstream: str | None,
    *,
    exact: bool = True,
    replayed: frozenset[str] = frozenset(),
) -> Hop:
    corr = flow.correlation_id
    by_chunk = {e.chunk_id: e for e in entries}
    hop = Hop(name, expected)
    retried: dict[str, int] = defaultdict(int)
    for e in entries:
        if e.retry_of is not None:
            # Records counted failed in the parent: they move from failed to their outcome.
            retried[e.retry_of] += e.records_in
            hop.failed -= e.records_in
        elif e.chunk_id in replayed:
            # Records replayed from this stage's quarantine: they move from quarantined to
            # their new outcome (received once, when they first came).
            hop.quarantined -= e.records_in
        else:
            hop.received += e.records_in
        hop.out += e.out
        hop.quarantined += e.quarantined
        hop.duplicate += e.duplicate
        hop.failed += e.failed
    for parent, n in sorted(retried.items()):
        have = by_chunk[parent].failed if parent in by_chunk else None
        if have is not None and n <= have:
            continue
        what = (
            f"chunk {parent} has no entry here"
            if have is None
            else f"{n} records processed again, {have} failed"
        )
        reason = busy(name)
        kind = "in flight" if have is None and reason else "inconsistent"
        flow.problems.append(
            Problem(
                kind,
                corr,
                name,
                f"retries of chunk {parent}: {what}"
                + (f"; {reason}" if kind == "in flight" else ""),
            )
        )
    if hop.quarantined < 0:
        _mark(
            hop,
            flow,
            "inconsistent",
            f"{-hop.quarantined} more records replayed from quarantine than it quarantined",
        )
    _dead_at(hop, [d for d in dead if d.stage == name], set(by_chunk), flow)
    _stray_failed(hop, flow, busy(name))
    if expected is not None:
        hop.missing = expected - hop.received - (hop.dead - hop.dead_failed)
        _judge(hop, flow, busy, exact, f"sent to {name}", name, upstream)
    return hop


def _replay_hop(replays: list[LedgerEntry], into: list[LedgerEntry], flow: Flow, busy: Busy) -> Hop:
    """`sluice replay quarantine`'s hop: records read from quarantine documents and sent to
    cleanse (each chunk's cleanse entry says where they went; one missing is pending or lost)."""
    hop = Hop(REPLAY, None)
    hop.received = sum(e.records_in for e in replays)
    hop.out = sum(e.out for e in replays)
    arrived = {e.chunk_id: e for e in into}
    landed = [arrived[e.chunk_id] for e in replays if e.chunk_id in arrived]
    hop.missing = hop.out - sum(e.records_in for e in landed)
    passed, again = sum(e.out for e in landed), sum(e.quarantined for e in landed)
    flow.problems.append(
        Problem(
            "note",
            flow.correlation_id,
            REPLAY,
            f"replayed {hop.out} from quarantine into {REPLAY_INTO}: {passed} passed, "
            f"{again} quarantined again",
        )
    )
    if hop.missing > 0:
        reason = busy(REPLAY_INTO)
        if reason is not None:
            _mark(hop, flow, "in flight", f"{hop.missing} replayed not recorded yet; {reason}")
        else:
            _mark(
                hop,
                flow,
                "unaccounted",
                f"{hop.missing} record(s) replayed into {REPLAY_INTO} that it never recorded, "
                "and nothing is pending there",
            )
    return hop


def _dead_at(hop: Hop, dead: list[DeadChunk], seen: set[str], flow: Flow) -> None:
    """Sort what the hop's DLQs hold: stale copies of processed chunks, failed records
    (counted as failed in their parent's entry), and input the stage never recorded."""
    corr = flow.correlation_id
    stale = [d for d in dead if d.chunk_id is not None and d.chunk_id in seen]
    rest = [d for d in dead if d not in stale]
    failed = [d for d in rest if d.failed_from is not None and d.failed_from in seen]
    lost = [d for d in rest if d not in failed]
    hop.dead = sum(d.records or 0 for d in (*failed, *lost))
    hop.dead_failed = sum(d.records or 0 for d in failed)
    if stale:
        flow.problems.append(
            Problem(
                "note",
                corr,
                hop.name,
                f"{len(stale)} dead-lettered chunk(s) were processed here after all (stale "
                f"copies in {', '.join(sorted({d.queue for d in stale}))}; a redrive is a "
                "harmless duplicate)",
            )
        )
    if not (failed or lost):
        return
    hop.status = "dead letters"
    parts = []
    if failed:
        parents = ", ".join(sorted({str(d.failed_from) for d in failed}))
        parts.append(f"{hop.dead_failed} record(s) that failed in chunk(s) {parents}")
    known = sum(d.records or 0 for d in lost)
    if known:
        parts.append(f"{known} record(s) of chunk(s) never recorded here")
    unknown = [d for d in lost if d.records is None]
    if unknown:
        parts.append(
            f"{len(unknown)} event(s) or continuation(s) with an unknown number of records"
        )
    queues = ", ".join(sorted({d.queue for d in (*failed, *lost)}))
    flow.problems.append(
        Problem(
            "dead letters",
            corr,
            hop.name,
            f"{'; '.join(parts)} wait in {queues} (`sluice dlq show`, then redrive)",
        )
    )


def _stray_failed(hop: Hop, flow: Flow, reason: str | None) -> None:
    """Records still counted failed must be in a DLQ as a `failed_from` chunk."""
    stray = hop.failed - hop.dead_failed
    if stray == 0:
        return
    if stray < 0:
        kind = "in flight" if reason else "inconsistent"
        message = f"{-stray} more failed records dead-lettered than its entries count failed"
    elif reason:
        kind = "in flight"
        message = f"{stray} failed record(s) neither in its DLQ nor processed again yet"
    else:
        kind = "unaccounted"
        message = (
            f"{stray} record(s) failed here and are neither in its DLQ or failures queue nor "
            "processed again"
        )
    if reason:
        message += f"; {reason}"
    flow.problems.append(Problem(kind, flow.correlation_id, hop.name, message))
    if hop.status in ("ok", "dead letters"):
        hop.status = kind


def _delivery_hop(sink: str, stage: Hop, entries: list[LedgerEntry], flow: Flow, busy: Busy) -> Hop:
    hop = Hop(f"{SINK_PREFIX}{sink}", stage.received)
    # Entries of retried failed records deliver more, but received nothing new.
    hop.received = sum(e.records_in for e in entries if e.retry_of is None)
    hop.delivered = sum(e.delivered for e in entries)
    # The consumer's quarantined and failed records never reach the sink: they are
    # accounted for at the consumer's hop (in quarantine; in its DLQ or unaccounted there).
    hop.quarantined, hop.failed = stage.quarantined, stage.failed
    hop.missing = stage.received - hop.delivered - hop.quarantined - hop.failed
    _judge(hop, flow, busy, True, f"received by {stage.name}", stage.name, stage.name)
    return hop


def _judge(
    hop: Hop,
    flow: Flow,
    busy: Busy,
    exact: bool,
    what: str,
    stage: str,
    upstream: str | None,
) -> None:
    """Name the hop's gap: `stage` is the one whose queue feeds it, `upstream` the one whose
    entries say what it should have got."""
    more = -hop.missing
    # Stages send, then write their entry: an upstream stage killed in between has sent more
    # than it recorded, and its claim (or the redelivery) writes the entry later.
    reason = busy(upstream) if more > 0 and upstream is not None else None
    if reason is not None:
        _mark(
            hop,
            flow,
            "in flight",
            f"{more} more records than {upstream} recorded sending ({hop.expected}); "
            f"{upstream} is still at work ({reason}): it writes its entry after it sends",
        )
    elif not exact and more <= 0:
        hop.missing = 0
        _mark(
            hop,
            flow,
            "note",
            f"checked as an upper bound only ({hop.expected} at most): router entries "
            "without routes",
            status="bounded",
        )
    elif not exact:
        _mark(
            hop,
            flow,
            "inconsistent",
            f"{more} more records than the router sent at most ({hop.expected})",
        )
    elif more > 0:
        _mark(
            hop,
            flow,
            "inconsistent",
            f"{more} more records accounted for than were {what} ({hop.expected})",
        )
    elif hop.missing > 0 and (waiting := busy(stage)) is not None:
        _mark(
            hop,
            flow,
            "in flight",
            f"{hop.missing} of {hop.expected} records {what} not recorded yet; {waiting}",
        )
    elif hop.missing > 0:
        _mark(
            hop,
            flow,
            "unaccounted",
            f"{hop.missing} of {hop.expected} records {what} are unaccounted for: not "
            "recorded, not in a DLQ, and nothing is pending there",
        )


def _mark(hop: Hop, flow: Flow, kind: str, message: str, *, status: str | None = None) -> None:
    hop.status = status or kind
    flow.problems.append(Problem(kind, flow.correlation_id, hop.name, message))
