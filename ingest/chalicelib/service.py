"""Ingest's logic: an S3 object (or a checkpoint of one) becomes chunks on the raw queue.

One claim per object version (namespace "ingest"), one per continuation; records stream
from S3 through `parsers` into `pack_records` and out through `BatchSender` as they come.
Bad input is quarantined and counted; nothing here holds a whole object.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any

from chalicelib import check, pull
from chalicelib.checkpoint import Checkpoint
from chalicelib.objects import Format, ObjectRef, classify, object_ref
from chalicelib.parsers import RAW_KEEP_BYTES, Item, ParseState, parse
from chalicelib.sender import BatchSender
from chalicelib.settings import IngestSettings
from chalicelib.streams import (
    MAGIC_BYTES,
    Counter,
    ObjectRemainderError,
    compression_of,
    gunzip,
    peek,
    read_blocks,
    reencoded,
    skip,
)
from sluice import aws
from sluice.batch import BatchResponse, ChunkOutcome
from sluice.config import Settings, get_settings
from sluice.envelope import (
    Chunk,
    ChunkLimits,
    Record,
    chunk_id,
    derive_chunk_id,
    pack_records,
    record_id,
    utc_now_iso,
)
from sluice.errors import OversizeRecordError, TransientError
from sluice.idempotency import RemainingTime, renew_lease
from sluice.lazy import first_use
from sluice.observability import add_metric, get_logger, log_context
from sluice.observability.tracing import inject_trace_context
from sluice.stage import StageRuntime

log = get_logger(__name__)

STAGE = "ingest"
UNKNOWN_TYPE = "_unknown"
_GONE = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}
# An object's claim is a lease renewed while it is read, not the invocation's 15 minutes:
# if the reader dies, another invocation of the object takes over within half a minute.
CLAIM_LEASE_MS = 30_000
# Content-Encoding values (RFC 9110) naming gzip, and compressions ingest cannot read.
_GZIP_CODINGS = frozenset({"gzip", "x-gzip"})
_OTHER_CODINGS = frozenset({"br", "zstd", "deflate", "compress", "x-compress", "bzip2"})


class ObjectReadError(TransientError):
    """S3 could not give us the object right now; the event is retried."""


class ObjectGoneError(Exception):
    """The object version an event or checkpoint names cannot be read any more (`reason`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class SegmentResult:
    """What one invocation did with one object (or the part of it it read)."""

    status: str  # "done", "handed_off", "skipped", "quarantined"
    chunks: int = 0
    outcome: ChunkOutcome = field(default_factory=ChunkOutcome)
    next_checkpoint: Checkpoint | None = None


@dataclass
class _Accounting:
    """Counts per ledger entry: items in (prev_last, last], good or bad, by ordinal."""

    prev_last: int  # ordinal of the last item already in a ledger entry
    last_read: int = -1
    bad: int = 0  # bad items read in this segment
    committed_bad: int = 0
    bad_before: dict[int, int] = field(default_factory=dict)
    end_of: dict[int, tuple[int, int]] = field(default_factory=dict)  # (offset, line) after
    total: ChunkOutcome = field(default_factory=ChunkOutcome)

    def good(self, item: Item) -> None:
        self.bad_before[item.ordinal] = self.bad
        self.end_of[item.ordinal] = (item.end, item.end_line)

    def commit(self, chunk: Chunk) -> tuple[ChunkOutcome, tuple[int, int]]:
        """The ledger outcome of `chunk`; the stream offset and line after its last record."""
        last = chunk.records[-1].ordinal
        bad = self.bad_before[last] - self.committed_bad
        outcome = ChunkOutcome(
            records_in=last - self.prev_last, out=len(chunk.records), quarantined=bad
        )
        end = self.end_of[last]
        self.prev_last, self.committed_bad = last, self.bad_before[last]
        for ordinal in [o for o in self.end_of if o <= last]:
            del self.end_of[ordinal], self.bad_before[ordinal]
        self._add(outcome)
        return outcome, end

    def tail(self, remainder: bool) -> ChunkOutcome:
        extra = 1 if remainder else 0
        outcome = ChunkOutcome(
            records_in=self.last_read - self.prev_last + extra,
            quarantined=self.bad - self.committed_bad + extra,
        )
        self._add(outcome)
        return outcome

    def _add(self, o: ChunkOutcome) -> None:
        self.total.records_in += o.records_in
        self.total.out += o.out
        self.total.quarantined += o.quarantined


class Ingestor:
    """The ingest stage; every collaborator can be passed in (tests) or is built on first use."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        ingest: IngestSettings | None = None,
        runtime: StageRuntime | None = None,
        s3: Any = None,
        sqs: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._ingest = ingest
        self.runtime = runtime or StageRuntime(STAGE, lease_ms=CLAIM_LEASE_MS)
        self.runtime.sleep = sleep
        # A duplicate event waiting for the object's claim keeps the time to read it itself.
        self.runtime.claim_wait_margin_ms = self.ingest.safety_margin_ms
        self._s3 = s3
        self._sqs = sqs
        self._sleep = sleep
        self._queue_urls: dict[str, str] = {}

    # ------------------------------------------------------------------ collaborators

    settings: first_use[Settings] = first_use(lambda self: get_settings())
    ingest: first_use[IngestSettings] = first_use(lambda self: IngestSettings.from_env())
    s3: first_use[Any] = first_use(lambda self: aws.s3())
    sqs: first_use[Any] = first_use(lambda self: aws.sqs())

    def queue_url(self, name: str) -> str:
        url = self._queue_urls.get(name)
        if url is None:
            try:
                url = str(self.sqs.get_queue_url(QueueName=name)["QueueUrl"])
            except aws.client_errors() as exc:
                raise TransientError(f"could not find queue {name}: {exc}") from exc
            self._queue_urls[name] = url
        return url

    # ------------------------------------------------------------------ entry points

    def handle_s3_event(
        self, event: Mapping[str, Any], remaining: RemainingTime = None
    ) -> dict[str, int]:
        """What the app does with an S3 event: every created object ingested, once."""
        return self.runtime.handle_s3(
            event, self.ingest_object, decode=self.created_object, remaining_ms=remaining
        )

    def handle_continue(
        self, event: Mapping[str, Any], remaining: RemainingTime = None
    ) -> BatchResponse:
        """What the app does with the continuation queue's event: each object continued
        from its checkpoint, once; failures reported."""
        return self.runtime.handle_sqs(
            event, self.continue_object, decode=Checkpoint.decode, remaining_ms=remaining
        )

    def created_object(self, record: Mapping[str, Any]) -> ObjectRef | None:
        """The object version an S3 event record names (None: not a created object), its
        ETag read from S3 when the event lacks it (the claim is per content)."""
        ref = object_ref(record)
        if ref is not None and not ref.etag:
            ref = self._with_etag(ref)
        return ref

    def ingest_object(self, ref: ObjectRef) -> SegmentResult:
        """Ingest one claimed object version (the first segment; the rest is handed off)."""
        return self._start(ref, self.runtime.remaining)

    def continue_object(self, checkpoint: Checkpoint) -> SegmentResult:
        """Ingest one claimed segment of an object from its checkpoint."""
        with log_context(correlation_id=checkpoint.correlation_id):
            add_metric("ContinuationsIn")
            return self.run_segment(checkpoint, self.runtime.remaining)

    # ------------------------------------------------------------------ one object

    def _with_etag(self, ref: ObjectRef) -> ObjectRef:
        try:
            head = self.s3.head_object(Bucket=ref.bucket, Key=ref.key)
        except aws.client_errors() as exc:
            raise ObjectReadError(f"could not read {ref.uri}: {exc}") from exc
        return replace(ref, etag=str(head["ETag"]).strip('"'))

    def _start(self, ref: ObjectRef, remaining: RemainingTime) -> SegmentResult:
        info = classify(ref.key, self.ingest.types)
        # Accepted: `Object Landed`, once per object version (a retry finds it sent).
        self.runtime.ledger.events.landed(
            ref.correlation_id, ref.uri, info.record_type or UNKNOWN_TYPE
        )
        checkpoint = Checkpoint(
            bucket=ref.bucket,
            key=ref.key,
            etag=ref.etag,
            version_id=ref.version_id,
            record_type=info.record_type or UNKNOWN_TYPE,
            format=(info.format or "jsonl"),
            gzip=info.gzip,
            correlation_id=ref.correlation_id,
            ingested_at="",
        )
        if info.problem is not None:
            at = ref.event_time or utc_now_iso()
            if info.record_type not in self.ingest.types:
                checkpoint = replace(checkpoint, record_type=UNKNOWN_TYPE)
            return self._quarantine_object(replace(checkpoint, ingested_at=at), info.problem)
        return self.run_segment(checkpoint, remaining)

    def run_segment(self, cp: Checkpoint, remaining: RemainingTime = None) -> SegmentResult:
        """Read from `cp` on; send chunks; hand off when time runs short; write the ledger."""
        try:
            body = self._open(cp)
        except ObjectGoneError as gone:
            # Recorded with its reason: the ledger expects every landed version, and a
            # version nothing read must show why, never vanish.
            add_metric("ObjectsSkipped")
            self.runtime.ledger.record_skipped(STAGE, _tail_chunk(cp), gone.reason)
            # Done with the object: what earlier segments read (records 0..next_ordinal-1).
            self.runtime.ledger.record_done(STAGE, _tail_chunk(cp), cp.next_ordinal)
            return SegmentResult("skipped")
        stream, length, last_modified, content_encoding = body
        if not cp.ingested_at:
            cp = replace(cp, ingested_at=last_modified)
        if cp.offset == 0 and length == 0:
            return self._quarantine_object(cp, "object is empty (0 bytes)", "EmptyObjectError")

        settings, ingest = self.settings, self.ingest
        compressed = Counter()
        try:
            blocks: Iterator[bytes] = read_blocks(stream, ingest.read_block_bytes, compressed)
            if cp.offset == 0:
                # The bytes say whether they are gzip, whatever the key and Content-Encoding
                # say; the checkpoint keeps the answer for the follow-ups.
                head, blocks = peek(blocks, MAGIC_BYTES)
                gz, problem = _compression(cp, head, content_encoding)
                if problem is not None:
                    return self._quarantine_object(cp, problem, "CompressionError")
                cp = replace(cp, gzip=gz)
            if cp.gzip:
                blocks = gunzip(
                    blocks,
                    block_bytes=ingest.read_block_bytes,
                    max_bytes=ingest.max_decompressed_bytes,
                    max_ratio=ingest.max_ratio,
                    ratio_grace_bytes=ingest.ratio_grace_bytes,
                    compressed=compressed,
                )
            if cp.encoding is not None:
                blocks = reencoded(blocks, cp.encoding)
            if cp.offset and cp.derived:
                blocks = skip(blocks, cp.offset)
            state = ParseState(
                offset=cp.offset,
                ordinal=cp.next_ordinal,
                resume=cp.offset > 0,
                header=cp.csv_header,
                line=cp.line,
                encoding=cp.encoding,
            )
            return self._pack_and_send(
                cp, parse(cp.fmt, blocks, state, settings.record_max_bytes), state, remaining
            )
        finally:
            add_metric("BytesRead", compressed.bytes, "Bytes")
            close = getattr(stream, "close", None)
            if callable(close):
                close()

    def _pack_and_send(
        self, cp: Checkpoint, items: Iterator[Item], state: ParseState, remaining: RemainingTime
    ) -> SegmentResult:
        ref = cp.ref
        source, version = ref.uri, ref.version
        acct = _Accounting(prev_last=cp.next_ordinal - 1, last_read=cp.next_ordinal - 1)
        remainder: list[ObjectRemainderError] = []

        def records() -> Iterator[Record]:
            try:
                for item in items:
                    renew_lease()  # reads the clock; writes once half the lease has passed
                    acct.last_read = item.ordinal
                    if item.payload is None:
                        self._reject_item(cp, item)
                        acct.bad += 1
                        continue
                    acct.good(item)
                    yield Record(
                        record_id(source, version, item.ordinal),
                        item.ordinal,
                        cp.ingested_at,
                        item.payload,
                    )
            except ObjectRemainderError as error:
                # Stop reading, but let pack_records cut the chunk it holds: those are good.
                remainder.append(error)

        def reject_oversize(record: Record, error: OversizeRecordError) -> None:
            self.runtime.quarantine.reject_unchunked(
                record,
                record_type=cp.record_type,
                source=source,
                correlation_id=cp.correlation_id,
                error=error,
            )
            acct.bad += 1

        def make_chunk(ordinal: int, recs: tuple[Record, ...]) -> Chunk:
            return Chunk(
                chunk_id(source, version, ordinal), cp.record_type, source, cp.correlation_id, recs
            )

        outcomes: dict[str, ChunkOutcome] = {}

        def after_send(chunk: Chunk) -> None:
            self.runtime.ledger.record_chunk(STAGE, chunk, outcomes.pop(chunk.chunk_id))

        sender = BatchSender(
            lambda: self.queue_url(self.settings.names.raw_queue),
            client=self.sqs,
            after_send=after_send,
            sleep=self._sleep,
        )
        limits = ChunkLimits(self.settings.chunk_max_records, self.settings.chunk_max_bytes)
        ordinal = cp.next_chunk
        # (chunk ordinal, last record ordinal, (offset, line) after it)
        last: tuple[int, int, tuple[int, int]] | None = None
        chunks = pack_records(
            records(),
            make_chunk,
            limits,
            first_ordinal=cp.next_chunk,
            on_oversize=self.runtime.claims.offload_or_reject(reject_oversize),
        )
        for chunk in chunks:
            if last is not None and self._low_time(remaining):
                sender.flush()
                self.runtime.writer.flush_or_raise()  # this segment's entries, then the rest
                nxt = cp.advance(
                    offset=last[2][0],
                    next_ordinal=last[1] + 1,
                    next_chunk=last[0] + 1,
                    csv_header=state.header,
                    line=last[2][1],
                    encoding=state.encoding,
                )
                self._hand_off(nxt)
                return self._finish(
                    SegmentResult("handed_off", ordinal - cp.next_chunk, acct.total, nxt)
                )
            outcome, end = acct.commit(chunk)
            outcomes[chunk.chunk_id] = outcome
            sender.add(chunk)
            last = (ordinal, chunk.records[-1].ordinal, end)
            ordinal += 1
        sender.flush()

        error = remainder[0] if remainder else None
        if error is not None:
            unread = acct.last_read + 1
            self._quarantine_remainder(cp, unread, _position(cp, state, unread), error)
        elif cp.next_ordinal == 0 and acct.last_read < 0:
            self._reject_object(cp, "object holds no records", "EmptyObjectError")
            error = ObjectRemainderError("object holds no records")
        tail = acct.tail(remainder=error is not None)
        if tail.records_in:
            self.runtime.ledger.record_chunk(STAGE, _tail_chunk(cp), tail)
        # The whole object is read and every entry of it written: items 0..last_read, and the
        # unreadable rest as one. The object's progress now knows its total (sluice.progress).
        total = acct.last_read + 1 + (1 if error is not None else 0)
        self.runtime.ledger.record_done(STAGE, _tail_chunk(cp), total)
        return self._finish(SegmentResult("done", ordinal - cp.next_chunk, acct.total))

    def _finish(self, result: SegmentResult) -> SegmentResult:
        o = result.outcome
        add_metric("ChunksOut", result.chunks)
        add_metric("RecordsIn", o.records_in)
        add_metric("RecordsOut", o.out)
        add_metric("RecordsQuarantined", o.quarantined)
        if result.status == "handed_off":
            add_metric("ObjectsHandedOff")
        log.info(
            "segment %s",
            result.status,
            extra={"chunks": result.chunks, **o.as_dict()},
        )
        return result

    def _low_time(self, remaining: RemainingTime) -> bool:
        if remaining is None:
            return False
        left = int(remaining() if callable(remaining) else remaining)
        # bool(): mypy maps chalicelib as Any from the root
        return bool(left < self.ingest.safety_margin_ms)

    def _hand_off(self, cp: Checkpoint) -> None:
        """Durably hand the rest to a follow-up invocation (the continuation queue)."""
        try:
            self.sqs.send_message(
                QueueUrl=self.queue_url(self.settings.names.ingest_continue_queue),
                MessageBody=cp.encode(),
                MessageAttributes=inject_trace_context(
                    {"correlation_id": {"DataType": "String", "StringValue": cp.correlation_id}}
                ),
            )
        except aws.client_errors() as exc:
            raise TransientError(f"could not hand off {cp.claim_key}: {exc}") from exc
        log.info(
            "handed off to a follow-up invocation",
            extra={
                "offset": cp.offset,
                "next_ordinal": cp.next_ordinal,
                "next_chunk": cp.next_chunk,
            },
        )

    # ------------------------------------------------------------------ S3 and quarantine

    def _open(self, cp: Checkpoint) -> tuple[Any, int, str, str]:
        """(body, content length, LastModified as ISO, Content-Encoding); `ObjectGoneError`
        if the version is gone."""
        args: dict[str, Any] = {"Bucket": cp.bucket, "Key": cp.key}
        if cp.version_id:
            args["VersionId"] = cp.version_id
        if cp.etag:
            args["IfMatch"] = f'"{cp.etag}"'
        if cp.offset and not cp.derived:
            args["Range"] = f"bytes={cp.offset}-"
        try:
            response = self.s3.get_object(**args)
        except aws.client_errors() as exc:
            code = aws.error_code(exc)
            if code in _GONE or code == "PreconditionFailed":
                # Deleted, or (read without a version id) overwritten: the newer version has
                # its own event. Nothing to read; the caller records why.
                reason = f"object version is gone ({code}): deleted" + (
                    "" if cp.version_id else ", or overwritten before it was read"
                )
                log.warning("object version is gone; skipped", extra={"key": cp.key, "code": code})
                raise ObjectGoneError(reason) from exc
            if code == "InvalidRange":
                return _Empty(), 0, cp.ingested_at, ""  # resumed exactly at the end
            raise ObjectReadError(f"could not read {cp.ref.uri}: {exc}") from exc
        modified = response.get("LastModified")
        at = modified.astimezone(UTC) if isinstance(modified, datetime) else datetime.now(UTC)
        iso = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        encoding = str(response.get("ContentEncoding") or "")
        return response["Body"], int(response.get("ContentLength") or 0), iso, encoding

    def _reject_item(self, cp: Checkpoint, item: Item) -> None:
        raw = item.raw[:RAW_KEEP_BYTES] if len(item.raw) > RAW_KEEP_BYTES else item.raw
        self.runtime.quarantine.reject_raw(
            record_type=cp.record_type,
            source=cp.ref.uri,
            correlation_id=cp.correlation_id,
            raw=raw,
            reason=f"{item.where}: {item.reason}",
            error_class=item.error_class,
            ref_id=record_id(cp.ref.uri, cp.ref.version, item.ordinal),
            ingested_at=cp.ingested_at,
        )

    def _describe(self, cp: Checkpoint, from_item: int) -> str:
        """What a whole-object or remainder entry keeps: where the data is, not the data."""
        return json.dumps(
            {
                "object": cp.ref.uri,
                "etag": cp.etag,
                "version_id": cp.version_id,
                "from_item": from_item,
                "gzip": cp.gzip,
                "format": cp.format,
            }
        )

    def _quarantine_remainder(
        self, cp: Checkpoint, ordinal: int, where: str, error: ObjectRemainderError
    ) -> None:
        add_metric("ObjectsQuarantined")
        self.runtime.quarantine.reject_raw(
            record_type=cp.record_type,
            source=cp.ref.uri,
            correlation_id=cp.correlation_id,
            raw=self._describe(cp, ordinal),
            reason=f"rest of the object from {where} unreadable: {error.reason}",
            error_class="ObjectRemainderError",
            ref_id=record_id(cp.ref.uri, cp.ref.version, ordinal),
            ingested_at=cp.ingested_at,
        )

    def _reject_object(self, cp: Checkpoint, reason: str, error_class: str) -> None:
        """One quarantine entry for a whole object."""
        log.warning("object quarantined", extra={"key": cp.key, "reason": reason})
        add_metric("ObjectsQuarantined")
        self.runtime.quarantine.reject_raw(
            record_type=cp.record_type,
            source=cp.ref.uri,
            correlation_id=cp.correlation_id,
            raw=self._describe(cp, 0),
            reason=reason,
            error_class=error_class,
            ref_id=record_id(cp.ref.uri, cp.ref.version, 0),
            ingested_at=cp.ingested_at,
        )

    def _quarantine_object(
        self, cp: Checkpoint, reason: str, error_class: str = "ObjectRejectedError"
    ) -> SegmentResult:
        """Quarantine a whole object; the ledger counts it as one item in, one quarantined."""
        self._reject_object(cp, reason, error_class)
        outcome = ChunkOutcome(records_in=1, quarantined=1)
        self.runtime.ledger.record_chunk(STAGE, _tail_chunk(cp), outcome)
        self.runtime.ledger.record_done(STAGE, _tail_chunk(cp), 1)
        return self._finish(SegmentResult("quarantined", 0, outcome))


def _compression(cp: Checkpoint, head: bytes, content_encoding: str) -> tuple[bool, str | None]:
    """(gzip or not, why the object cannot be read at all) from its first bytes, its key's
    `.gz` suffix (`cp.gzip`) and its Content-Encoding. The bytes win: gzip under any name is
    read, and a declared compression they do not show is one clear reason, not one per line.
    """
    found = compression_of(head)
    if found == "gzip":
        return True, None
    if found is not None:
        return False, f"{found} compressed data is not supported (only gzip is)"
    codings = {c.strip().lower() for c in content_encoding.split(",")} - {""}
    other = sorted(codings & _OTHER_CODINGS)
    if other:
        return False, f"Content-Encoding {', '.join(other)} is not supported (only gzip is)"
    declared = "its key ends in .gz" if cp.gzip else None
    if declared is None and codings & _GZIP_CODINGS:
        declared = "its Content-Encoding is gzip"
    if declared is not None:
        return False, f"{declared} but the data is not gzip (it does not start with 1f 8b)"
    return False, None


def _position(cp: Checkpoint, state: ParseState, ordinal: int) -> str:
    """Where the unread rest of an object starts, for people (1-based, as editors count)."""
    if cp.fmt is Format.JSON:
        return f"element {ordinal + 1}"
    return f"line {state.line + 1}"


def _tail_chunk(cp: Checkpoint) -> Chunk:
    """The ledger's entry for what follows an object's last chunk (bad items, a remainder)."""
    source, version = cp.ref.uri, cp.ref.version
    tail_id = derive_chunk_id(chunk_id(source, version, 0), "tail")
    return Chunk(tail_id, cp.record_type, source, cp.correlation_id, ())


class _Empty:
    def read(self, amt: int | None = None) -> bytes:
        return b""


# ---------------------------------------------------------------------- process entry points


@cache
def ingestor() -> Ingestor:
    """The process's ingestor, built on first use (never at import)."""
    return Ingestor()


def reset() -> None:
    """Forget the ingestor (tests that start a fresh AWS mock call this)."""
    ingestor.cache_clear()


def runtime() -> StageRuntime:
    """The process's stage runtime: objects and continuations claimed, 30 s leases."""
    return ingestor().runtime


def created_object(record: Mapping[str, Any]) -> ObjectRef | None:
    """The object version an S3 event record names (`StageRuntime.handle_s3`'s decode)."""
    return ingestor().created_object(record)


def ingest_object(ref: ObjectRef) -> SegmentResult:
    """Ingest one object version (the S3 event's work)."""
    return ingestor().ingest_object(ref)


def continue_object(checkpoint: Checkpoint) -> SegmentResult:
    """Ingest the next segment of an object (the continuation queue's work)."""
    return ingestor().continue_object(checkpoint)


def pull_sources(event: Mapping[str, Any]) -> dict[str, Any]:
    """Pull every configured source into the landing bucket (a schedule's work)."""
    return pull.pull_sources(event, runtime().remaining)


def check_objects(event: Mapping[str, Any]) -> dict[str, int]:
    """Objects still open past their deadline, or whose emission failed (a schedule's work)."""
    return check.check_objects()
