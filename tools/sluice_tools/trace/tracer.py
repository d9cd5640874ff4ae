"""Follow one record (or one landed object) through the stages: what `sluice trace` prints.

Nothing here scans a bucket or a table, and nothing needs a request per record from the
pipeline: a record is found from the functions' log lines (consumers log the record ids
and natural keys of each chunk, cleanse the natural key of a record it refuses), the
index table's partition of a natural key, and the ledger's partition of a correlation id.
Hops come from the ledger entries on the record's path (chunk ids derive from their parent
chunk's, so the path is recomputed), with the request ids and times of the log lines, and
the durations of spans when the local runtime wrote them (`SLUICE_TRACE_FILE`).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sluice.attributes import json_from_attribute
from sluice.config import ResourceNames
from sluice.envelope import derive_chunk_id
from sluice_tools.ledger.reconcile import LedgerEntry
from sluice_tools.ledger.store import read_ledger
from sluice_tools.stages import PIPELINE_STAGES
from sluice_tools.trace.logsource import LogLine, LogQuery, LogSource

# How many extra output chunks per input a stage may cut (ordinals tried when deriving ids).
MAX_SPLIT = 8
# The warehouse's placements (`pk` = "consumer-warehouse#<chunk id>", attribute `object`).
WAREHOUSE_PLACEMENTS = "consumer-warehouse"


class NotFoundError(Exception):
    """Nothing the stage kept matches the id asked for."""


@dataclass
class Hop:
    """One stage's (or sink's) handling of the chunk that held the record."""

    stage: str
    chunk_id: str
    at: str = ""
    function: str = ""
    request_id: str = ""
    outcome: str = ""
    duration_ms: float | None = None


@dataclass
class Ending:
    """Where the record ended: curated, index, alert, quarantine or dead letter."""

    kind: str
    where: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecordTrace:
    record_id: str
    correlation_id: str = ""
    type: str = ""
    source: str = ""
    natural_key: str = ""
    hops: list[Hop] = field(default_factory=list)
    endings: list[Ending] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Stores:
    """The stage's tables and buckets (AWS, or the emulator through AWS_ENDPOINT_URL)."""

    names: ResourceNames
    dynamodb: Any
    s3: Any
    natural_keys: Mapping[str, str] = field(default_factory=dict)  # type -> payload field

    def ledger(self, correlation_id: str) -> list[LedgerEntry]:
        return read_ledger(self.dynamodb, self.names.ledger_table, correlation_id)

    def index_versions(self, record_type: str, key: str) -> list[dict[str, Any]]:
        """The index's version items of one entity: one Query of its partition."""
        items: list[dict[str, Any]] = []
        args: dict[str, Any] = {
            "TableName": self.names.records_table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"{record_type}#{key}"}},
        }
        for page in self.dynamodb.get_paginator("query").paginate(**args):
            items += page.get("Items") or []
        return items

    def placement(self, chunk_id: str) -> str:
        """The curated object the warehouse placed a chunk in (one GetItem of its placement
        in the idempotency table), or "" where the warehouse keeps none."""
        answer = self.dynamodb.get_item(
            TableName=self.names.idempotency_table,
            Key={"pk": {"S": f"{WAREHOUSE_PLACEMENTS}#{chunk_id}"}},
            ConsistentRead=True,
        )
        return _s(answer.get("Item") or {}, "object")

    def json_object(self, bucket: str, key: str) -> Any:
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return json.loads(body)

    def curated_lines(self, key: str) -> list[dict[str, Any]]:
        body = self.s3.get_object(Bucket=self.names.curated_bucket, Key=key)["Body"].read()
        text = gzip.decompress(body).decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def item_payload(item: Mapping[str, Any]) -> Any:
    """An index item's payload in any layout it was written (`sluice.attributes`), decimals
    as floats for printing; None if it cannot be read."""
    try:
        return json_from_attribute(item.get("payload") or {}, parse_float=float)
    except (ValueError, zlib.error):
        return None


def _s(item: Mapping[str, Any], name: str) -> str:
    return str((item.get(name) or {}).get("S", ""))


class Tracer:
    """Answers "what happened to record X" from the logs and the stores."""

    def __init__(
        self,
        logs: LogSource,
        stores: Stores,
        spans: Path | None = None,
        since_ms: int | None = None,
    ) -> None:
        self.logs = logs
        self.stores = stores
        self.spans = _read_spans(spans)
        self.since_ms = since_ms  # how far back the logs are searched (None: all they keep)

    # -- finding records -------------------------------------------------------------

    def record_ids_for_key(self, record_type: str, key: str) -> list[str]:
        """The records of one entity: index versions, then log lines naming the key."""
        ids: list[str] = []
        for item in self.stores.index_versions(record_type, key):
            ids.append(_s(item, "sk").rsplit("#", 1)[-1])
        for line in self.logs.read(LogQuery(since_ms=self.since_ms, contains=(json.dumps(key),))):
            keys = line.fields.get("natural_keys")
            rids = line.fields.get("record_ids")
            if line.get("natural_key") == key and line.get("record_id"):
                ids.append(line.get("record_id"))
            elif isinstance(keys, list) and isinstance(rids, list) and len(keys) == len(rids):
                ids += [rid for k, rid in zip(keys, rids, strict=True) if k == key]
        found = list(dict.fromkeys(ids))
        if not found:
            raise NotFoundError(f"not found: no {record_type} record with key {key!r}")
        return found

    def trace_record(self, record_id: str) -> RecordTrace:
        lines = self.logs.read(LogQuery(since_ms=self.since_ms, contains=(record_id,)))
        if not lines:
            raise NotFoundError(f"not found: no record {record_id!r} in the logs")
        trace = RecordTrace(record_id=record_id)
        trace.correlation_id = next(
            (ln.get("correlation_id") for ln in lines if ln.get("correlation_id")), ""
        )
        entries = self.stores.ledger(trace.correlation_id) if trace.correlation_id else []
        if entries:
            trace.type, trace.source = entries[0].type, entries[0].source
        object_lines = (
            self.logs.read(LogQuery(since_ms=self.since_ms, contains=(trace.correlation_id,)))
            if trace.correlation_id
            else lines
        )
        last_chunk = ""
        failed_at: set[tuple[str, str]] = set()  # (service, chunk) where the record failed
        for line in lines:
            message = line.get("message")
            if message == "quarantined":
                doc = self._quarantine_doc(line.get("quarantine_key"))
                trace.endings.append(_quarantine_ending(line, doc))
                if doc and not trace.type:
                    trace.type = str(doc.get("record_type") or "")
                last_chunk = last_chunk or str((doc or {}).get("chunk_id") or "")
            elif message == "chunk indexed":
                last_chunk = line.get("chunk_id")
                trace.endings.append(self._index_ending(line, record_id, trace))
            elif message == "alert published":
                last_chunk = line.get("chunk_id")
                trace.endings.append(
                    Ending(
                        "alert",
                        f"SNS message {line.get('sns_message_id')}",
                        {
                            "subject": line.get("subject"),
                            "message": line.get("alert"),
                            "at": _iso(line.at_ms),
                        },
                    )
                )
            elif message.startswith("record failed in the handler"):
                # Dead-lettered with its chunk's other failures (`_dead_letters` below).
                last_chunk = line.get("chunk_id")
                failed_at.add((line.get("service"), last_chunk))
                trace.endings.append(
                    Ending(
                        "failed",
                        f"{line.get('service')} chunk {last_chunk}",
                        {"error": _last_line(line.get("exc_info")), "at": _iso(line.at_ms)},
                    )
                )
            elif message == "record refused":
                trace.natural_key = trace.natural_key or line.get("natural_key")
        trace.hops = self._hops(entries, last_chunk, object_lines)
        if any(h.stage == "sink:warehouse" and h.chunk_id == last_chunk for h in trace.hops):
            trace.endings.insert(0, self._curated_ending(last_chunk, record_id, object_lines))
        trace.endings += _dead_letters(failed_at, object_lines)
        # The same object landed again (or the logs of an earlier run) logs the same ids.
        unique = {(e.kind, e.where): e for e in trace.endings}
        trace.endings = list(unique.values())
        return trace

    # -- endings ------------------------------------------------------------------

    def _quarantine_doc(self, key: str) -> dict[str, Any] | None:
        if not key:
            return None
        try:
            doc = self.stores.json_object(self.stores.names.quarantine_bucket, key)
        except Exception:  # the document may have expired: the log line still says why
            return None
        return doc if isinstance(doc, dict) else None

    def _curated_ending(self, chunk_id: str, record_id: str, lines: list[LogLine]) -> Ending:
        """The curated object the warehouse wrote the chunk into, and the record's line."""
        key = self.stores.placement(chunk_id) or _logged_object(chunk_id, lines)
        if not key:
            return Ending("curated", "?", {"error": f"no object found for chunk {chunk_id}"})
        where = f"s3://{self.stores.names.curated_bucket}/{key}"
        try:
            rows = self.stores.curated_lines(key)
        except Exception as exc:
            return Ending("curated", where, {"error": f"could not read the object: {exc}"})
        for number, row in enumerate(rows, start=1):
            if row.get("_record_id") == record_id:
                return Ending("curated", f"{where} line {number}", {"line": number, "row": row})
        return Ending("curated", where, {"error": "the record is not in the object"})

    def _index_ending(self, line: LogLine, record_id: str, trace: RecordTrace) -> Ending:
        ids, keys = line.fields.get("record_ids") or [], line.fields.get("natural_keys") or []
        key = next((k for r, k in zip(ids, keys, strict=False) if r == record_id), "")
        trace.natural_key = trace.natural_key or str(key)
        record_type = trace.type
        where = f"{self.stores.names.records_table} pk={record_type}#{key}"
        for item in self.stores.index_versions(record_type, str(key)) if key else []:
            sk = _s(item, "sk")
            if sk.endswith(record_id):
                latest = _is_latest(item, self.stores.index_versions(record_type, str(key)))
                detail = {"sk": sk, "latest": latest, "payload": item_payload(item)}
                return Ending("index", f"{where} sk={sk}", detail)
        return Ending("index", where, {"error": "no version item for the record"})

    # -- hops -----------------------------------------------------------------------

    def _hops(self, entries: list[LedgerEntry], last_chunk: str, lines: list[LogLine]) -> list[Hop]:
        """The ledger entries on the path that ends at `last_chunk`, oldest first."""
        if not entries:
            return []
        by_chunk: dict[str, list[LedgerEntry]] = {}
        for entry in entries:
            by_chunk.setdefault(entry.chunk_id, []).append(entry)
        parents = _parents(entries)
        path: list[str] = []
        chunk = last_chunk
        while chunk and chunk not in path:
            path.append(chunk)
            chunk = parents.get(chunk, "")
        if not path:  # quarantined by ingest: no chunk of its own, the object's ingest hop
            path = [e.chunk_id for e in entries if e.name == "ingest"][:1]
        hops: list[Hop] = []
        for chunk_id in reversed(path):
            for entry in sorted(by_chunk.get(chunk_id, []), key=_stage_rank):
                hops.append(self._hop(entry, lines))
        return hops

    def _hop(self, entry: LedgerEntry, lines: list[LogLine]) -> Hop:
        name = f"sink:{entry.name}" if entry.is_sink else entry.name
        if entry.is_sink:
            outcome = f"delivered {entry.delivered} of {entry.records_in}"
        else:
            outcome = f"in {entry.records_in}, out {entry.out}, quarantined {entry.quarantined}" + (
                f", failed {entry.failed}" if entry.failed else ""
            )
        hop = Hop(stage=name, chunk_id=entry.chunk_id, at=entry.recorded_at, outcome=outcome)
        service = f"consumer-{entry.name}" if entry.is_sink else entry.name
        for line in lines:
            if line.get("service") != service:
                continue
            ours = line.get("chunk_id") == entry.chunk_id
            if ours or (entry.name == "ingest" and line.get("message") == "segment done"):
                hop.function = line.get("function_name") or line.function
                hop.request_id = line.get("request_id")
                break
        for span in self.spans.get(entry.chunk_id, []):
            attrs = span.get("attributes") or {}
            if service in str(attrs.get("faas.name") or ""):
                hop.duration_ms = span.get("duration_ms")
                hop.function = hop.function or str(attrs.get("faas.name") or "")
                hop.request_id = hop.request_id or str(attrs.get("faas.invocation_id") or "")
                break
        return hop


def _logged_object(chunk_id: str, lines: list[LogLine]) -> str:
    """The object key the warehouse logged for the chunk: one object per chunk ("chunk
    written", its chunk id bound), or an object of several ("object written", `chunk_ids`)."""
    for line in lines:
        message = line.get("message")
        if message == "chunk written" and line.get("chunk_id") == chunk_id:
            return line.get("key")
        if message == "object written" and chunk_id in (line.fields.get("chunk_ids") or []):
            return line.get("key")
    return ""


def _dead_letters(failed_at: set[tuple[str, str]], lines: list[LogLine]) -> list[Ending]:
    """Where the stage sent the failed records of a chunk the record failed in."""
    out = []
    for line in lines:
        if "dead-lettered" not in line.get("message"):
            continue
        if (line.get("service"), line.get("chunk_id")) in failed_at:
            detail = {
                "error": f"{line.get('error_type')}: {line.get('reason')}",
                "failed_chunk_id": line.get("failed_chunk_id"),
            }
            out.append(Ending("dead letter", line.get("queue"), detail))
    return out


def _last_line(text: str) -> str:
    """The exception line of a traceback (its last line)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _parents(entries: Iterable[LedgerEntry]) -> dict[str, str]:
    """Each derived chunk id of the ledger to the chunk it was cut from."""
    known = {e.chunk_id for e in entries}
    parents: dict[str, str] = {}
    for entry in entries:
        candidates: list[str] = []
        if entry.name == "cleanse" and not entry.is_sink:
            candidates.append(derive_chunk_id(entry.chunk_id, "cleanse"))
            candidates += [
                derive_chunk_id(entry.chunk_id, "cleanse", k) for k in range(1, MAX_SPLIT)
            ]
        elif entry.name == "router" and not entry.is_sink:
            for route in entry.routes or {}:
                candidates.append(derive_chunk_id(entry.chunk_id, "router", route))
                candidates += [
                    derive_chunk_id(entry.chunk_id, "router", route, k) for k in range(MAX_SPLIT)
                ]
        for child in candidates:
            if child in known and child != entry.chunk_id:
                parents[child] = entry.chunk_id
    return parents


def _stage_rank(entry: LedgerEntry) -> tuple[int, str, int]:
    """Stages in pipeline order, then each consumer followed by its sink's delivery."""
    order = {name: i for i, name in enumerate(PIPELINE_STAGES)}
    if entry.is_sink:
        return (len(order), entry.name, 1)
    return (order.get(entry.name, len(order)), entry.name.removeprefix("consumer-"), 0)


def _quarantine_ending(line: LogLine, doc: dict[str, Any] | None) -> Ending:
    detail: dict[str, Any] = {"reason": line.get("reason"), "stage": line.get("service")}
    if doc:
        detail["reason"] = doc.get("reason") or detail["reason"]
        detail["stage"] = doc.get("stage") or detail["stage"]
        if "raw" in doc:
            detail["raw"] = doc["raw"]
        elif isinstance(doc.get("record"), dict):
            detail["raw"] = doc["record"].get("payload")
    return Ending("quarantine", line.get("quarantine_key"), detail)


def _is_latest(item: Mapping[str, Any], versions: list[dict[str, Any]]) -> bool:
    return _s(item, "sk") == max((_s(v, "sk") for v in versions), default="")


def _iso(at_ms: int) -> str:
    from datetime import UTC, datetime

    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _read_spans(path: Path | None) -> dict[str, list[dict[str, Any]]]:
    """chunk id -> its chunk spans (the local runtime's trace file), when the file exists."""
    found: dict[str, list[dict[str, Any]]] = {}
    if path is None or not path.is_file():
        return found
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            span = json.loads(text)
        except ValueError:
            continue
        attrs = span.get("attributes") if isinstance(span, dict) else None
        if isinstance(attrs, dict) and attrs.get("sluice.chunk_id"):
            found.setdefault(str(attrs["sluice.chunk_id"]), []).append(span)
    return found
