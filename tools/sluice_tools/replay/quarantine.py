"""Send quarantined records back through cleanse, once each, accounted in the ledger.

A quarantine document (`sluice.quarantine`) is `{stage}/{type}/{date}/{id}.json` in the
quarantine bucket. Cleanse writes one per refused record, holding the record as it travels
(`record`), its correlation id and the reason. Those are what is replayed: each document
becomes a chunk of its one record, sent to the raw queue cleanse consumes, with the
document's correlation id, so the records are accounted under the object they came from.

Idempotency: the chunk id is derived from the document's key and ETag and the replay marker
(`replay_chunk_id`). Replaying the same document again gives the same chunk id, which
cleanse's claim drops as a duplicate (and the tool skips a document whose replay entry is in
the ledger, so it sends nothing). A record refused again after a replay overwrites its
document (the key is deterministic) with a new reason and time, so a new ETag: it is a new
document and replayable again. One record per chunk, so that how documents are selected
(which filter, in which order) never changes a chunk's content under the same id.

What is not replayed, and why (`not_replayable`):
- ingest's documents hold raw input that never became a record (an unparseable line, a
  whole object) or a record too large to send even by claim check: re-ingest the object
  instead (`sluice replay landing`);
- router's and consumers' documents hold records cleanse already cleansed: sending them
  through cleanse again would normalise them twice and be accounted at the wrong hop; the
  ledger reconciles a replay only into cleanse;
- `_messages/` documents are messages that never decoded: no record, no correlation id;
- a whole chunk refused for reusing a claimed id (no `record`): its records are not counted
  as quarantined in the ledger, so a replay could not be reconciled.

Order of effects per batch: send, then write the `replay` ledger entry (first write wins).
A run killed in between sends the chunk again on the next run, which cleanse drops.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.claimcheck import parse_ref
from sluice.envelope import Chunk, Record, derive_chunk_id
from sluice.errors import PermanentError
from sluice.ledger import PARTITION_KEY, SORT_KEY, LedgerWriter, stage_entry
from sluice.progress import REPLAY as REPLAY_STAGE
from sluice.quarantine import MESSAGES_FOLDER
from sluice_tools.ledger.reconcile import REPLAY_INTO as CLEANSE

PAYLOAD_SUFFIX = ".payload.json"
SQS_BATCH = 10
SEND_ATTEMPTS = 3
PROGRESS_EVERY = 100

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class ReplayError(Exception):
    """The replay could not go on (a queue refused chunks, a bucket is missing)."""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: an ISO 8601 time (UTC if it has no zone) or a duration back from now
    (`90m`, `2h`, `3d`, `1w`, `30s`)."""
    found = _DURATION.match(text)
    if found:
        amount, unit = int(found.group(1)), found.group(2).lower()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither an ISO 8601 time (2026-12-04T10:00:00Z) nor a "
            "duration (90m, 2h, 3d, 1w)"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Selection:
    """Which documents: quarantined at `stage`, of `record_type`, with a reason containing
    `reason_contains` (case-insensitive), written at or after `since`."""

    stage: str | None = None
    record_type: str | None = None
    reason_contains: str | None = None
    since: datetime | None = None

    @property
    def prefix(self) -> str:
        if self.stage is None:
            return ""
        return f"{self.stage}/{self.record_type}/" if self.record_type else f"{self.stage}/"

    def wants_key(self, key: str) -> bool:
        parts = key.split("/")
        if key.endswith(PAYLOAD_SUFFIX) or len(parts) < 4:
            return False
        if self.stage is not None and parts[0] != self.stage:
            return False
        return self.record_type is None or parts[1] == self.record_type

    def wants_doc(self, doc: Mapping[str, Any]) -> bool:
        if self.reason_contains is None:
            return True
        return self.reason_contains.lower() in str(doc.get("reason") or "").lower()


def replay_chunk_id(key: str, etag: str) -> str:
    """The chunk a quarantine document is replayed as: the same document (key and ETag), the
    same id; a document written again (refused again) gets a new one."""
    return derive_chunk_id(f"quarantine:{key}", REPLAY_STAGE, etag)


def not_replayable(key: str, doc: Mapping[str, Any]) -> str | None:
    """Why the document at `key` cannot be replayed through cleanse (None: it can)."""
    stage, _, rest = key.partition("/")
    if stage == "ingest" and isinstance(doc.get("record"), Mapping):
        return (
            "ingest: a record refused before it was sent (too large even by claim check); "
            "fix the input and re-ingest the object (`sluice replay landing`)"
        )
    if stage == "ingest":
        return (
            "ingest: raw input that never became a record; fix the input or parser and "
            "re-ingest the object (`sluice replay landing --prefix incoming/<type>/...`)"
        )
    if stage != CLEANSE:
        return (
            f"{stage}: refused after cleanse; only records cleanse refused go back through "
            "cleanse (fix and re-ingest the object with `sluice replay landing`)"
        )
    if rest.split("/", 1)[0] == MESSAGES_FOLDER:
        return "cleanse/_messages: a message that never decoded: no records to replay"
    if not isinstance(doc.get("record"), Mapping):
        return "cleanse: a whole chunk refused for reusing a claimed chunk id (no record)"
    if not doc.get("correlation_id") or not doc.get("record_type") or not doc.get("source"):
        return "cleanse: the document lacks its correlation id, type or source"
    if doc.get("payload_missing"):
        return "cleanse: its claim-checked payload was already gone when it was quarantined"
    return None


@dataclass
class Item:
    """One quarantine document and what the replay did (or would do) with it."""

    key: str
    etag: str
    stage: str
    record_type: str
    reason: str
    correlation_id: str
    chunk_id: str | None = None
    records: int = 0
    # "sent" | "would send" | "already replayed" | "not replayable: ..."
    action: str = ""


@dataclass
class Result:
    """What one replay run read, sent and skipped."""

    documents: int = 0  # documents read (matching the key filters)
    matched: int = 0  # of those, matching the reason filter
    sent_chunks: int = 0
    sent_records: int = 0
    already: int = 0
    dry_run: bool = False
    not_replayable: dict[str, int] = field(default_factory=dict)
    items: list[Item] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        lines = [
            f"{self.documents} quarantine document(s) read, {self.matched} matched; {verb} "
            f"{self.sent_records} record(s) to cleanse in {self.sent_chunks} chunk(s); "
            f"{self.already} already replayed (not sent again)"
        ]
        for reason, n in sorted(self.not_replayable.items()):
            lines.append(f"not replayable: {n} document(s): {reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "documents": self.documents,
            "matched": self.matched,
            "sent_chunks": self.sent_chunks,
            "sent_records": self.sent_records,
            "already_replayed": self.already,
            "not_replayable": dict(self.not_replayable),
            "items": [vars(i) for i in self.items],
        }


class QuarantineReplay:
    """Replays quarantine documents of one stage's resources (clients passed in)."""

    def __init__(
        self,
        *,
        s3: Any,
        sqs: Any,
        dynamodb: Any,
        quarantine_bucket: str,
        raw_queue: str,
        ledger_table: str,
        payload_bucket: str,
        progress: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.s3, self.sqs, self.dynamodb = s3, sqs, dynamodb
        self.bucket = quarantine_bucket
        self.raw_queue = raw_queue
        self.ledger_table = ledger_table
        self.payload_bucket = payload_bucket
        self.progress = progress
        self.ledger = LedgerWriter(dynamodb, table_name=ledger_table)
        self._queue_url: str | None = None

    def documents(self, selection: Selection) -> Iterator[tuple[str, str]]:
        """(key, ETag) of every document the key filters and `since` select, in key order."""
        paginator = self.s3.get_paginator("list_objects_v2")
        prefixes = [selection.prefix]
        if selection.stage is None and selection.record_type is not None:
            # Only `<stage>/<type>/` of each stage folder, not the whole bucket.
            folders = paginator.paginate(Bucket=self.bucket, Delimiter="/")
            prefixes = [
                f"{p['Prefix']}{selection.record_type}/"
                for page in folders
                for p in page.get("CommonPrefixes") or []
            ]
        for prefix in prefixes:
            yield from self._listed(prefix, selection)

    def _listed(self, prefix: str, selection: Selection) -> Iterator[tuple[str, str]]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents") or []:
                key = str(obj["Key"])
                if not selection.wants_key(key):
                    continue
                if selection.since is not None and obj["LastModified"] < selection.since:
                    continue
                yield key, str(obj.get("ETag") or "").strip('"')

    def run(self, selection: Selection, *, dry_run: bool = False) -> Result:
        result = Result(dry_run=dry_run)
        batch: list[tuple[Item, Chunk]] = []
        for key, etag in self.documents(selection):
            result.documents += 1
            doc = self._read(key)
            if doc is None or not selection.wants_doc(doc):
                continue
            result.matched += 1
            item = self._item(key, etag, doc)
            result.items.append(item)
            reason = not_replayable(key, doc)
            if reason is not None:
                item.action = f"not replayable: {reason}"
                result.not_replayable[reason] = result.not_replayable.get(reason, 0) + 1
                continue
            chunk = self._chunk(item, doc)
            if self._already_replayed(chunk):
                item.action = "already replayed"
                result.already += 1
                continue
            if dry_run:
                item.action = "would send"
                result.sent_chunks += 1
                result.sent_records += item.records
                continue
            self._restore_payload(item, chunk, doc)
            batch.append((item, chunk))
            if len(batch) == SQS_BATCH:
                self._send(batch, result)
                batch = []
            if result.documents % PROGRESS_EVERY == 0:
                self._report_progress(result)
        if batch:
            self._send(batch, result)
        return result

    def _report_progress(self, result: Result) -> None:
        self.progress(
            f"... {result.documents} document(s) read, {result.sent_records} record(s) sent, "
            f"{result.already} already replayed"
        )

    def _read(self, key: str) -> dict[str, Any] | None:
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        try:
            doc = json.loads(body)
        except ValueError:
            self.progress(f"skipped {key}: not a JSON document")
            return None
        return doc if isinstance(doc, dict) else None

    @staticmethod
    def _item(key: str, etag: str, doc: Mapping[str, Any]) -> Item:
        return Item(
            key=key,
            etag=etag,
            stage=key.split("/", 1)[0],
            record_type=str(doc.get("record_type") or ""),
            reason=str(doc.get("reason") or ""),
            correlation_id=str(doc.get("correlation_id") or ""),
        )

    def _chunk(self, item: Item, doc: Mapping[str, Any]) -> Chunk:
        """The document's record as a chunk of its own, under its original correlation id."""
        try:
            record = Record.from_wire(doc["record"])
        except PermanentError as exc:
            raise ReplayError(f"{item.key}: its record is not readable: {exc}") from exc
        item.chunk_id = replay_chunk_id(item.key, item.etag)
        item.records = 1
        return Chunk(
            item.chunk_id, item.record_type, str(doc["source"]), item.correlation_id, (record,)
        )

    def _already_replayed(self, chunk: Chunk) -> bool:
        found = self.dynamodb.get_item(
            TableName=self.ledger_table,
            Key={
                PARTITION_KEY: {"S": chunk.correlation_id},
                SORT_KEY: {"S": stage_entry(REPLAY_STAGE, chunk.chunk_id)},
            },
            ConsistentRead=True,
            ProjectionExpression="#e",
            ExpressionAttributeNames={"#e": SORT_KEY},
        )
        return "Item" in found

    def _restore_payload(self, item: Item, chunk: Chunk, doc: Mapping[str, Any]) -> None:
        """A claim-checked record's payload must be where its `payload_ref` points when cleanse
        reads it: if the payload bucket expired it, put back the copy kept in quarantine."""
        ref = chunk.records[0].payload_ref
        copy = doc.get("payload_copy")
        if ref is None or not copy:
            return
        bucket, key = parse_ref(ref)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
            return
        except aws.client_errors() as exc:
            if aws.error_code(exc) not in {"404", "NoSuchKey", "NotFound"}:
                raise
        copy_bucket, copy_key = parse_ref(str(copy))
        self.s3.copy_object(
            Bucket=bucket, Key=key, CopySource={"Bucket": copy_bucket, "Key": copy_key}
        )
        self.progress(f"restored the payload of {item.key} to {ref}")

    @property
    def queue_url(self) -> str:
        if self._queue_url is None:
            self._queue_url = str(self.sqs.get_queue_url(QueueName=self.raw_queue)["QueueUrl"])
        return self._queue_url

    def _send(self, batch: list[tuple[Item, Chunk]], result: Result) -> None:
        """Send the chunks (one SendMessageBatch, failed entries again), then ledger each."""
        by_id = {str(i): pair for i, pair in enumerate(batch)}
        pending = list(by_id)
        for _ in range(SEND_ATTEMPTS):
            entries = [
                {
                    "Id": i,
                    "MessageBody": by_id[i][1].encode(),
                    "MessageAttributes": by_id[i][1].message_attributes(),
                }
                for i in pending
            ]
            answer = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            failed = {str(f["Id"]): f for f in answer.get("Failed") or []}
            for i in pending:
                if i not in failed:
                    self._sent(*by_id[i], result)
            pending = [i for i in pending if i in failed]
            if not pending:
                return
        detail = "; ".join(f"{f.get('Code')}: {f.get('Message')}" for f in failed.values())
        raise ReplayError(f"{self.raw_queue} refused {len(pending)} chunk(s): {detail}")

    def _sent(self, item: Item, chunk: Chunk, result: Result) -> None:
        n = len(chunk.records)
        self.ledger.record_chunk(REPLAY_STAGE, chunk, ChunkOutcome(records_in=n, out=n))
        item.action = "sent"
        result.sent_chunks += 1
        result.sent_records += n
