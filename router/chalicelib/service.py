"""The router stage: route each record by `routing.json`, split its chunk into one chunk per
group of equal routing attributes, and publish those to the records topic.

No AWS calls of its own (the publisher and the stage runtime make them); built on first use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

from chalicelib.publisher import ChunkPublisher, SnsPublisher, resolve_topic_arn
from chalicelib.rules import RoutingRules, load_rules
from chalicelib.subscriptions import TopicSubscriptions
from sluice.batch import ChunkOutcome
from sluice.config import DEFAULT_CHUNK_MAX_BYTES, SNS_MAX_MESSAGE_BYTES, get_settings
from sluice.envelope import (
    Chunk,
    ChunkLimits,
    Record,
    attributes_size,
    derive_chunk_id,
    pack_records,
)
from sluice.lazy import first_use
from sluice.ledger import LedgerWriter
from sluice.observability import add_metric, get_logger
from sluice.stage import StageRuntime

STAGE = "router"
log = get_logger(__name__)

Attributes = Mapping[str, str]
OnOversize = Callable[[Record], Record | None]


def canonical_attributes(attributes: Attributes) -> str:
    """One string per set of attributes, whatever their order: sorted compact JSON."""
    return json.dumps(dict(sorted(attributes.items())), separators=(",", ":"), ensure_ascii=False)


def group_chunk_id(parent_id: str, attributes: Attributes) -> str:
    """Id of the chunk of `parent_id`'s records that share `attributes` (deterministic)."""
    return derive_chunk_id(parent_id, STAGE, canonical_attributes(attributes))


def message_size(chunk: Chunk) -> int:
    """What SNS would count for `chunk` sent as plain JSON: its body plus its attributes.

    The plain size, not the (usually compressed) message's: chunk boundaries must depend on
    the records alone, never on what the compressor makes of them, so a retry cuts the same
    chunks with the same ids.
    """
    return chunk.encoded_size() + attributes_size(chunk.message_attributes())


def split_by_attributes(
    chunk: Chunk,
    routed: Sequence[tuple[Record, Attributes]],
    *,
    limits: ChunkLimits | None = None,
    on_oversize: OnOversize | None = None,
) -> list[Chunk]:
    """One chunk per distinct set of attributes, in order of first appearance; records keep
    their order. Ids: `derive_chunk_id(chunk_id, "router", canonical attributes)`.

    A group too large for one SNS message (only if the input chunk was cut with larger limits
    than this stage's) is packed again within `limits`; its parts add their ordinal to the id.
    """
    # Grouped by the attributes' sorted items (a cheap key per record); the canonical JSON
    # that names a group's chunk is made once per group.
    grouped: dict[tuple[tuple[str, str], ...], tuple[Attributes, list[Record]]] = {}
    for record, attributes in routed:
        items = tuple(sorted(attributes.items()))
        group_of = grouped.get(items)
        if group_of is None:
            group_of = grouped[items] = (dict(attributes), [])
        group_of[1].append(record)
    out: list[Chunk] = []
    for attributes, records in grouped.values():
        key = canonical_attributes(attributes)
        group = chunk.derive(
            records, chunk_id=derive_chunk_id(chunk.chunk_id, STAGE, key), attributes=attributes
        )
        if limits is None or message_size(group) <= SNS_MAX_MESSAGE_BYTES:
            out.append(group)
            continue

        def make(
            ordinal: int, part: tuple[Record, ...], key: str = key, group: Chunk = group
        ) -> Chunk:
            return group.derive(part, chunk_id=derive_chunk_id(chunk.chunk_id, STAGE, key, ordinal))

        out.extend(pack_records(records, make, limits, on_oversize=on_oversize))
    return out


class Router:
    """The router's chunk handler, with its parts passed in or built on first use."""

    def __init__(
        self,
        *,
        runtime: StageRuntime | None = None,
        rules: RoutingRules | None = None,
        publisher: ChunkPublisher | None = None,
        limits: ChunkLimits | None = None,
        subscriptions: TopicSubscriptions | None = None,
    ) -> None:
        self._runtime = runtime
        self._rules = rules
        self._publisher = publisher
        self._limits = limits
        self._subscriptions = subscriptions

    @property
    def runtime(self) -> StageRuntime:
        if self._runtime is None:
            # Payloads stay as their JSON: routing reads a few fields, the rest passes through.
            # The ledger learns which consumers each route reaches (objects' progress).
            ledger = LedgerWriter(route_sinks=self.subscriptions.route_sinks)
            self._runtime = StageRuntime(name=STAGE, lazy_payloads=True, ledger=ledger)
        return self._runtime

    subscriptions: first_use[TopicSubscriptions] = first_use(
        lambda self: TopicSubscriptions(self._topic_arn)
    )

    def _topic_arn(self) -> str:
        publisher = self.publisher
        return publisher.topic_arn if isinstance(publisher, SnsPublisher) else resolve_topic_arn()

    rules: first_use[RoutingRules] = first_use(lambda self: load_rules())
    publisher: first_use[ChunkPublisher] = first_use(lambda self: SnsPublisher())

    @property
    def limits(self) -> ChunkLimits:
        if self._limits is None:
            settings = get_settings()
            # What is published must fit SNS, whatever the stages before cut for SQS.
            max_bytes = min(settings.chunk_max_bytes, DEFAULT_CHUNK_MAX_BYTES)
            self._limits = ChunkLimits(settings.chunk_max_records, max_bytes)
        return self._limits

    def route_record(self, record: Record, chunk: Chunk) -> dict[str, str]:
        """A record's routing attributes (`PermanentError` → the record is quarantined)."""
        raw = record.raw_payload()
        if raw is not None:
            return self.rules.json_route(chunk.type)(raw)
        return self.rules.attributes_for(chunk.type, record.payload)

    def handle_chunk(self, chunk: Chunk) -> ChunkOutcome:
        """Route, split and publish one chunk; `out` counts the records published."""
        results = self.runtime.run_records(chunk, self.route_record)
        dropped: list[Record] = []
        offload = self.runtime.on_oversize(
            record_type=chunk.type, source=chunk.source, correlation_id=chunk.correlation_id
        )

        def on_oversize(record: Record) -> Record | None:
            stand_in = offload(record)
            if stand_in is None:
                dropped.append(record)
            return stand_in

        chunks = split_by_attributes(
            chunk, results.outputs, limits=self.limits, on_oversize=on_oversize
        )
        if chunks:
            self.publisher.publish(chunks)
        outcome = results.outcome
        outcome.quarantined += len(dropped)
        outcome.out = sum(len(c.records) for c in chunks)
        # Records per set of routing attributes: the ledger's proof of which sinks they reach.
        for c in chunks:
            key = canonical_attributes(c.attributes)
            outcome.routes[key] = outcome.routes.get(key, 0) + len(c.records)
        add_metric("ChunksOut", len(chunks))
        log.info(
            "chunk routed",
            extra={"chunks_out": len(chunks), **outcome.as_dict()},
        )
        return outcome


_router: Router | None = None


def router() -> Router:
    """The process's router, built on the first event (never at import)."""
    global _router
    if _router is None:
        _router = Router()
    return _router


def reset(replacement: Router | None = None) -> None:
    """Forget the process's router (tests that start a fresh AWS mock call this); the next
    event builds one, or uses `replacement`."""
    global _router
    _router = replacement


def runtime() -> StageRuntime:
    """The process's stage runtime: chunks claimed, payloads left as their JSON."""
    return router().runtime


def handle_chunk(chunk: Chunk) -> ChunkOutcome:
    """Route one chunk (the app's work for `StageRuntime.handle_sqs`)."""
    return router().handle_chunk(chunk)
