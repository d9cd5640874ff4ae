"""Per-object progress: one ledger item per correlation id whose counters say what is owed.

Every ledger entry adds its contribution to the object's progress item (sort key
`PROGRESS_ENTRY`) in the same transaction that writes the entry (`sluice.ledger`), so a
contribution is added exactly when its entry is. Counters, per hop H (all ADDs):

    owed_ingest       + total (ingest's "done" entry)  - settled(ingest entries)
    owed_cleanse      + out(ingest) + out(replay)      - settled(cleanse)
    owed_router       + out(cleanse)                   - settled(router)
    owed_consumer_<c> + routed to consumer c (router)  - settled(consumer-c)
    owed_sink_<c>     + out + duplicate (consumer-c)   - delivered(sink c)

where settled = out + quarantined + duplicate (failed records are not settled; the entry of
their retry, `retry_of`, settles them). The object is complete when `ingest_total` is there
and every `owed_*` is 0 (docs/decisions.md, 2026-12-04: why that cannot happen early). Pure
functions and the item's schema; no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# The progress item's sort key in the ledger table (entries are `<stage>#<chunk>`, `sink:…`).
PROGRESS_ENTRY = "object"
# Ingest's entry saying it has read the whole object version (`records`: all it read).
DONE_CHUNK = "done"
INGEST, CLEANSE, ROUTER, REPLAY = "ingest", "cleanse", "router", "replay"
CONSUMER_PREFIX = "consumer-"

OWED_PREFIX = "owed_"
OWED_SINK_PREFIX = "owed_sink_"
OWED_CONSUMER_PREFIX = "owed_consumer_"
DELIVERED_PREFIX = "delivered_to_"
QUARANTINED_PREFIX = "quarantined_"
READ = "read"
INGEST_TOTAL = "ingest_total"
QUARANTINED = "quarantined"
SOURCE, TYPE, FIRST_AT = "source", "type", "first_at"
# The sparse index of objects not delivered yet (infra/platform.yaml, LedgerTable).
OPEN_INDEX = "open-objects"
OPEN_SHARD, OPEN_DEADLINE = "open_shard", "open_deadline"
OPEN = "open"

# Why records were quarantined, by the stage that quarantined them: small and stable codes
# for `Records Quarantined` (each stage's quarantine reasons, in detail, stay in the bucket).
QUARANTINE_CATEGORIES = {
    INGEST: "unreadable",  # not parseable, wrong encoding, too large, unknown type, empty
    CLEANSE: "invalid",  # failed its type's schema or normalisation
    ROUTER: "unroutable",  # no routing attributes could be computed, or too large
    REPLAY: "invalid",
}
CONSUMER_CATEGORY = "rejected"  # a consumer refused the record (its own rules)


def quarantine_category(stage: str) -> str:
    if stage.startswith(CONSUMER_PREFIX):
        return CONSUMER_CATEGORY
    return QUARANTINE_CATEGORIES.get(stage, "other")


def contribution(
    stage: str,
    counts: Mapping[str, int],
    *,
    sink: str | None = None,
    routed: Mapping[str, int] | None = None,
    done_total: int | None = None,
    unresolved: int = 0,
) -> dict[str, int]:
    """The counters one ledger entry adds to its object's progress item.

    `stage`: the entry's stage ("ingest", "cleanse", "router", "consumer-<c>", "replay"); for
    a delivery entry (`sink` set) ignored. `routed`: the router's records per consumer whose
    subscription the records pass. `done_total`: ingest's "done" entry (all it read).
    `unresolved`: records the router published without knowing which consumers they reach:
    owed for good (`owed_routing`), so the object is reported stuck, never complete early.
    Zero contributions are left out.
    """
    add: dict[str, int] = {}

    def plus(name: str, n: int) -> None:
        if n:
            add[name] = add.get(name, 0) + n

    if done_total is not None:
        add[INGEST_TOTAL] = done_total  # present, even 0: the object is fully read
        plus(OWED_PREFIX + INGEST, done_total)
        return add
    if sink is not None:
        delivered = counts.get("delivered", 0)
        plus(OWED_SINK_PREFIX + sink, -delivered)
        plus(DELIVERED_PREFIX + sink, delivered)
        return add
    out, quarantined = counts.get("out", 0), counts.get("quarantined", 0)
    settled = out + quarantined + counts.get("duplicate", 0)
    if quarantined:
        plus(QUARANTINED, quarantined)
        plus(QUARANTINED_PREFIX + quarantine_category(stage), quarantined)
    if stage == INGEST:
        plus(READ, counts.get("records_in", 0))
        plus(OWED_PREFIX + INGEST, -settled)
        plus(OWED_PREFIX + CLEANSE, out)
    elif stage == REPLAY:
        # Records sent back to cleanse: cleanse owes them again.
        plus(OWED_PREFIX + CLEANSE, out)
    elif stage == CLEANSE:
        plus(OWED_PREFIX + CLEANSE, -settled)
        plus(OWED_PREFIX + ROUTER, out)
    elif stage == ROUTER:
        plus(OWED_PREFIX + ROUTER, -settled)
        for consumer, n in (routed or {}).items():
            plus(OWED_CONSUMER_PREFIX + consumer, n)
        plus(OWED_PREFIX + "routing", unresolved)
    elif stage.startswith(CONSUMER_PREFIX):
        # What the consumer settled; what it passed on (out, and its in-chunk duplicates,
        # which a sink counts as delivered) its sink's entries must show delivered. The
        # consumer writes its sink's entries first: both counters must be in.
        consumer = stage.removeprefix(CONSUMER_PREFIX)
        plus(OWED_CONSUMER_PREFIX + consumer, -settled)
        plus(OWED_SINK_PREFIX + consumer, out + counts.get("duplicate", 0))
    return add


@dataclass(frozen=True)
class Progress:
    """The progress item as read back (`from_item`), with what the events need."""

    correlation_id: str
    counters: Mapping[str, int]
    source: str = ""
    record_type: str = ""
    first_at: str = ""
    raw: Mapping[str, Any] | None = None

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Progress:
        counters = {k: int(v["N"]) for k, v in item.items() if isinstance(v, Mapping) and "N" in v}

        def s(name: str) -> str:
            return str((item.get(name) or {}).get("S", ""))

        return cls(
            correlation_id=s("correlation_id"),
            counters=counters,
            source=s(SOURCE),
            record_type=s(TYPE),
            first_at=s(FIRST_AT),
            raw=item,
        )

    def has(self, attribute: str) -> bool:
        return self.raw is not None and attribute in self.raw

    @property
    def read_all(self) -> bool:
        return INGEST_TOTAL in self.counters

    @property
    def owed(self) -> dict[str, int]:
        """Records each hop still owes (non-zero ones): `ingest`, `cleanse`, `router`,
        `consumer-<c>`, `sink:<c>`. A negative count is more settled than recorded sent (an
        upstream entry not in yet; for good: a subscription added mid-flight, or routes the
        router could not match to consumers): not complete."""
        found = {}
        for name, n in self.counters.items():
            if not n or not name.startswith(OWED_PREFIX):
                continue
            if name.startswith(OWED_SINK_PREFIX):
                found[f"sink:{name.removeprefix(OWED_SINK_PREFIX)}"] = n
            elif name.startswith(OWED_CONSUMER_PREFIX):
                found[CONSUMER_PREFIX + name.removeprefix(OWED_CONSUMER_PREFIX)] = n
            else:
                found[name.removeprefix(OWED_PREFIX)] = n
        return found

    @property
    def complete(self) -> bool:
        return self.read_all and not self.owed

    @property
    def quarantined(self) -> int:
        return self.counters.get(QUARANTINED, 0)

    @property
    def quarantined_by(self) -> dict[str, int]:
        return {
            k.removeprefix(QUARANTINED_PREFIX): n
            for k, n in sorted(self.counters.items())
            if k.startswith(QUARANTINED_PREFIX) and n
        }

    @property
    def delivered(self) -> dict[str, int]:
        return {
            k.removeprefix(DELIVERED_PREFIX): n
            for k, n in sorted(self.counters.items())
            if k.startswith(DELIVERED_PREFIX)
        }

    @property
    def bucket_and_key(self) -> tuple[str, str]:
        return split_source(self.source)

    def counts(self) -> dict[str, Any]:
        return {
            "read": self.counters.get(READ, 0),
            "records": self.counters.get(INGEST_TOTAL, 0),
            "quarantined": self.quarantined,
            "delivered": self.delivered,
        }


def split_source(source: str) -> tuple[str, str]:
    """`s3://bucket/key` → (bucket, key); anything else → ("", source)."""
    if source.startswith("s3://"):
        bucket, _, key = source.removeprefix("s3://").partition("/")
        return bucket, key
    return "", source


def iso(epoch: float) -> str:
    at = datetime.fromtimestamp(epoch, UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def update_expression(
    add: Mapping[str, int],
    *,
    source: str,
    record_type: str,
    now: float,
    expires_at: int,
    deadline_s: int,
) -> dict[str, Any]:
    """The `Update` of the progress item for one entry: its ADDs, plus the object's source,
    type, first time, the TTL and the open-index keys with the deadline (kept if there)."""
    names: dict[str, str] = {
        "#src": SOURCE,
        "#type": TYPE,
        "#first": FIRST_AT,
        "#exp": "expires_at",
        "#shard": OPEN_SHARD,
        "#deadline": OPEN_DEADLINE,
    }
    values: dict[str, Any] = {
        ":src": {"S": source},
        ":type": {"S": record_type},
        ":first": {"S": iso(now)},
        ":exp": {"N": str(expires_at)},
        ":open": {"S": OPEN},
        ":deadline": {"S": iso(now + deadline_s)},
    }
    adds = []
    for i, (name, n) in enumerate(sorted(add.items())):
        names[f"#a{i}"] = name
        values[f":a{i}"] = {"N": str(n)}
        adds.append(f"#a{i} :a{i}")
    expression = (
        "SET #src = if_not_exists(#src, :src), #type = if_not_exists(#type, :type), "
        "#first = if_not_exists(#first, :first), #exp = :exp, "
        "#shard = if_not_exists(#shard, :open), #deadline = if_not_exists(#deadline, :deadline)"
    )
    if adds:
        expression += " ADD " + ", ".join(adds)
    # A delivered object leaves the open index (its keys removed); an entry written after
    # that (a replay) puts it back with a new deadline: it is open work again. The stuck
    # check takes a delivered object that is complete again out of the index.
    return {"names": names, "values": values, "expression": expression}


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "OPEN",
    "OPEN_DEADLINE",
    "OPEN_INDEX",
    "OPEN_SHARD",
    "Progress",
    "iso",
]
