"""Reconcile the ledger: is every record of every ingested object accounted for? Pure, no I/O.

Per correlation id (one ingested object), the stages' entries are summed per hop, and
each hop's input must equal the previous hop's output unless the gap sits in a DLQ:

    ingest      read = Σ records_in;  read = out + quarantined + duplicate + failed
    cleanse     received = Σ records_in(cleanse) must equal ingest.out
    router      received = Σ records_in(router)  must equal cleanse.out
    consumer-S  received must equal expected(S): the router's records whose routing
                attributes (+ record_type, correlation_id) pass S's filter policy
    sink S      delivered + quarantined + failed (consumer-S) must equal its received

At every hop, and in every entry, received = out + quarantined + duplicate + failed, else
the entry is inconsistent. A gap is `expected - received - dead`, where `dead` counts the
records of chunks found in the hop's queue DLQ (or failures queue) whose chunk id the
receiving stage never recorded (a chunk redriven and processed counts once). A gap with
the hop's queue not empty is "in flight" (exit 2: not settled); with it empty it is
"unaccounted" (exit 1). More received than sent is "inconsistent" (exit 1).

What this proves and what it does not:
- Counts are per unique chunk: `StageRuntime` writes no entry for a duplicate chunk and
  the first write of an entry wins, so redeliveries and redrives never double a count.
- Sink expectations are exact only when the router's entries carry `routes` (records per
  set of routing attributes; written since the router records them). For router entries
  without them a sink whose policy reads only `record_type`/`correlation_id` is still
  exact; any other is checked as an upper bound (`bounded`, exit 0, said so).
- Data that never became a chunk of a correlation id cannot be seen here: a message that
  did not decode (quarantined under `<stage>/_messages/`) and a chunk quarantined whole
  for reusing a claimed id leave no ledger entry and show as a gap at their hop. A dead
  S3 event or ingest continuation is accounted for as dead-lettered, records unknown.
- The direct (SNS → Lambda) consumers have no queue: Lambda's async retries in progress
  cannot be seen; a gap there is unaccounted once their failures queue is empty.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any

from sluice_tools.ledger.filters import SinkPolicy

INGEST, CLEANSE, ROUTER = "ingest", "cleanse", "router"
PIPELINE = (INGEST, CLEANSE, ROUTER)
CONSUMER_PREFIX = "consumer-"
SINK_PREFIX = "sink:"
# Message attributes of a published chunk the ledger knows besides its routing attributes.
KNOWN_WITHOUT_ROUTES = frozenset({"record_type", "correlation_id"})


class Exit(IntEnum):
    BALANCED = 0
    UNACCOUNTED = 1
    NOT_SETTLED = 2


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

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> LedgerEntry:
        """From a DynamoDB item as the low-level client returns it (`{"S": ...}` values)."""

        def s(name: str) -> str:
            return str((item.get(name) or {}).get("S", ""))

        def n(name: str) -> int:
            return int((item.get(name) or {}).get("N", "0"))

        entry = s("entry")
        is_sink = entry.startswith(SINK_PREFIX)
        name, _, chunk = entry.removeprefix(SINK_PREFIX).partition("#")
        routes_attr = (item.get("routes") or {}).get("M")
        routes = (
            {k: int(v["N"]) for k, v in routes_attr.items()} if routes_attr is not None else None
        )
        return cls(
            correlation_id=s("correlation_id"),
            name=s("sink") or s("stage") or name,
            chunk_id=s("chunk_id") or chunk,
            is_sink=is_sink,
            type=s("type"),
            source=s("source"),
            records_in=n("records_in"),
            out=n("out"),
            quarantined=n("quarantined"),
            duplicate=n("duplicate"),
            failed=n("failed"),
            delivered=n("delivered"),
            routes=routes,
            recorded_at=s("recorded_at"),
        )

    @property
    def balances(self) -> bool:
        if self.is_sink:
            return self.delivered <= self.records_in
        return self.records_in == self.out + self.quarantined + self.duplicate + self.failed


@dataclass(frozen=True)
class DeadChunk:
    """Something found in a DLQ or failures queue, attributed to the stage that lost it.

    `records` is None when the message holds no envelope (an S3 event, a continuation).
    """

    queue: str
    stage: str
    correlation_id: str | None
    chunk_id: str | None = None
    records: int | None = None
    source: str | None = None


@dataclass
class Hop:
    """One line of a correlation id's table: one stage, or one sink's delivery."""

    name: str
    expected: int | None  # what the previous hop sent it (None: the first hop)
    received: int = 0
    out: int = 0
    quarantined: int = 0
    duplicate: int = 0
    failed: int = 0
    delivered: int | None = None  # sinks only
    dead: int = 0
    missing: int = 0
    status: str = "ok"  # ok | in flight | unaccounted | inconsistent | bounded | dead-lettered


@dataclass(frozen=True)
class Problem:
    kind: str  # unaccounted | inconsistent | not settled | note
    correlation_id: str | None
    where: str
    message: str

    @property
    def exit(self) -> Exit:
        if self.kind in ("unaccounted", "inconsistent"):
            return Exit.UNACCOUNTED
        if self.kind == "not settled":
            return Exit.NOT_SETTLED
        return Exit.BALANCED


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

    @property
    def exit(self) -> Exit:
        return max((p.exit for p in self.problems), default=Exit.BALANCED)

    @property
    def status(self) -> str:
        return _STATUS[self.exit]


_STATUS = {
    Exit.BALANCED: "balanced",
    Exit.UNACCOUNTED: "unaccounted",
    Exit.NOT_SETTLED: "not settled",
}


@dataclass
class Report:
    flows: list[Flow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # not tied to one correlation id
    in_flight: Mapping[str, int] = field(default_factory=dict)
    dead_letters: Mapping[str, int] = field(default_factory=dict)  # queue → messages

    @property
    def exit_code(self) -> int:
        every = [*self.problems, *(p for f in self.flows for p in f.problems)]
        return int(max((p.exit for p in every), default=Exit.BALANCED))

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


def reconcile(
    entries: Iterable[LedgerEntry],
    dead_letters: Iterable[DeadChunk] = (),
    in_flight: Mapping[str, int] | None = None,
    *,
    sinks: Mapping[str, SinkPolicy] | None = None,
) -> Report:
    """Account for every record of every correlation id in `entries`.

    `dead_letters`: what the DLQs and failures queues hold; `in_flight`: messages waiting
    or in process per receiving stage ("cleanse" for the raw queue, "consumer-index", ...,
    "ingest" for continuations); `sinks`: each consumer's filter policy (without it, sinks
    seen in the ledger are checked as upper bounds only).
    """
    in_flight = dict(in_flight or {})
    dead = list(dead_letters)
    by_corr: dict[str, list[LedgerEntry]] = defaultdict(list)
    for entry in entries:
        by_corr[entry.correlation_id].append(entry)
    sources = {e.source: c for c, es in by_corr.items() for e in es if e.source}
    report = Report(in_flight=in_flight)
    dead_by_corr: dict[str, list[DeadChunk]] = defaultdict(list)
    queue_counts: dict[str, int] = defaultdict(int)
    for d in dead:
        queue_counts[d.queue] += 1
        corr = d.correlation_id or (sources.get(d.source) if d.source else None)
        if corr is not None and corr in by_corr:
            dead_by_corr[corr].append(d)
        else:
            report.problems.append(
                Problem(
                    "note",
                    d.correlation_id,
                    d.queue,
                    f"dead-lettered before any ledger entry: {d.source or d.chunk_id or '?'} "
                    f"({'records unknown' if d.records is None else f'{d.records} records'})",
                )
            )
    report.dead_letters = dict(queue_counts)
    if in_flight.get(INGEST):
        report.problems.append(
            Problem(
                "not settled",
                None,
                INGEST,
                f"{in_flight[INGEST]} ingest continuation(s) pending: read counts may still grow",
            )
        )
    for corr in sorted(by_corr):
        report.flows.append(
            _flow(corr, by_corr[corr], dead_by_corr.get(corr, []), in_flight, sinks)
        )
    return report


def _flow(
    corr: str,
    entries: list[LedgerEntry],
    dead: list[DeadChunk],
    in_flight: Mapping[str, int],
    sinks: Mapping[str, SinkPolicy] | None,
) -> Flow:
    first = min(entries, key=lambda e: (e.name != INGEST, e.recorded_at))
    flow = Flow(corr, source=first.source, type=first.type)
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

    # ingest, cleanse, router: each receives what the one before sent.
    expected: int | None = None
    for name in PIPELINE:
        hop = _stage_hop(name, expected, stages.get(name, []), dead, in_flight, flow)
        flow.hops.append(hop)
        expected = hop.out
    flow.read = flow.hops[0].received

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
        hop = _stage_hop(stage, want, stages.get(stage, []), dead, in_flight, flow, exact=exact)
        flow.hops.append(hop)
        flow.hops.append(_delivery_hop(sink, hop, deliveries.get(sink, []), in_flight, flow))
    return flow


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


def _stage_hop(
    name: str,
    expected: int | None,
    entries: list[LedgerEntry],
    dead: list[DeadChunk],
    in_flight: Mapping[str, int],
    flow: Flow,
    *,
    exact: bool = True,
) -> Hop:
    seen = {e.chunk_id for e in entries}
    hop = Hop(name, expected)
    for e in entries:
        hop.received += e.records_in
        hop.out += e.out
        hop.quarantined += e.quarantined
        hop.duplicate += e.duplicate
        hop.failed += e.failed
    lost_here = [
        d for d in dead if d.stage == name and (d.chunk_id is None or d.chunk_id not in seen)
    ]
    hop.dead = sum(d.records or 0 for d in lost_here)
    if any(d.records is None for d in lost_here):
        hop.status = "dead-lettered"
        flow.problems.append(
            Problem(
                "note",
                flow.correlation_id,
                name,
                "part of the input is dead-lettered with an unknown number of records: "
                + ", ".join(sorted({d.queue for d in lost_here if d.records is None})),
            )
        )
    if expected is None:
        return hop
    hop.missing = expected - hop.received - hop.dead
    _judge(hop, in_flight.get(name, 0), flow, exact, f"sent to {name}")
    return hop


def _delivery_hop(
    sink: str, stage: Hop, entries: list[LedgerEntry], in_flight: Mapping[str, int], flow: Flow
) -> Hop:
    hop = Hop(f"{SINK_PREFIX}{sink}", stage.received)
    hop.received = sum(e.records_in for e in entries)
    hop.delivered = sum(e.delivered for e in entries)
    # The consumer's quarantined records never reach the sink: they are accounted for.
    hop.quarantined, hop.failed = stage.quarantined, stage.failed
    hop.missing = stage.received - hop.delivered - hop.quarantined - hop.failed
    _judge(hop, in_flight.get(stage.name, 0), flow, True, f"received by {stage.name}")
    return hop


def _judge(hop: Hop, waiting: int, flow: Flow, exact: bool, what: str) -> None:
    corr = flow.correlation_id
    if not exact:
        if hop.missing >= 0:
            hop.status = "bounded"
            flow.problems.append(
                Problem(
                    "note",
                    corr,
                    hop.name,
                    f"checked as an upper bound only ({hop.expected} at most): router entries "
                    "without routes",
                )
            )
            hop.missing = 0
            return
        hop.status = "inconsistent"
        flow.problems.append(
            Problem(
                "inconsistent",
                corr,
                hop.name,
                f"{-hop.missing} more records than the router sent at most ({hop.expected})",
            )
        )
        return
    if hop.missing == 0:
        return
    if hop.missing < 0:
        hop.status = "inconsistent"
        flow.problems.append(
            Problem(
                "inconsistent",
                corr,
                hop.name,
                f"{-hop.missing} more records accounted for than were {what} ({hop.expected})",
            )
        )
    elif waiting:
        hop.status = "in flight"
        flow.problems.append(
            Problem(
                "not settled",
                corr,
                hop.name,
                f"{hop.missing} of {hop.expected} records {what} not recorded yet; "
                f"{waiting} message(s) still in its queue",
            )
        )
    else:
        hop.status = "unaccounted"
        flow.problems.append(
            Problem(
                "unaccounted",
                corr,
                hop.name,
                f"{hop.missing} of {hop.expected} records {what} are unaccounted for: not "
                "recorded, not in a DLQ, and its queue is empty",
            )
        )
