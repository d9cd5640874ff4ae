"""Write rejected data to the quarantine bucket: one JSON object per rejection, with why.

Keys are deterministic (no "now" in them), so a retried rejection overwrites the same
object instead of adding one. It counts nothing: batch's outcome emits `RecordsQuarantined`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.claimcheck import parse_ref
from sluice.config import get_settings
from sluice.envelope import Chunk, Record, utc_now_iso
from sluice.errors import PermanentError, TransientError
from sluice.lazy import first_use
from sluice.observability import get_logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from sluice.batch import SQSMessage

log = get_logger(__name__)

CONTENT_TYPE = "application/json"
MESSAGES_FOLDER = "_messages"
UNDATED = "_undated"


class QuarantineWriteError(TransientError):
    """The quarantine bucket could not be written: retry, so the rejection is not lost."""


def date_of(timestamp: str) -> str:
    """`YYYY-MM-DD` (UTC) of an ISO 8601 time; `_undated` if it does not parse."""
    try:
        at = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return UNDATED
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.date().isoformat()


def record_key(stage: str, record_type: str, ingested_at: str, ref_id: str) -> str:
    """`{stage}/{type}/{ingested date}/{id}.json`; the id is a record's, a chunk's or a line's."""
    return f"{stage}/{record_type}/{date_of(ingested_at)}/{ref_id}.json"


def message_key(stage: str, message: SQSMessage) -> str:
    """`{stage}/_messages/{sent date}/{message id}.json` for a message that never decoded."""
    attributes = message.raw.get("attributes") or {}
    sent = attributes.get("SentTimestamp")
    try:
        at = datetime.fromtimestamp(int(str(sent)) / 1000, UTC)
    except (TypeError, ValueError, OverflowError):
        at = datetime.now(UTC)  # only when SQS gave no sent time: not deterministic
    ref = message.message_id or hashlib.sha256(message.body.encode("utf-8")).hexdigest()
    return f"{stage}/{MESSAGES_FOLDER}/{at.date().isoformat()}/{ref}.json"


class Quarantine:
    """The quarantine writer of one stage.

    `reject_record` is a `sluice.batch.RejectRecord`, `reject_message` a `RejectMessage`.
    """

    def __init__(
        self,
        stage: str,
        client: S3Client | None = None,
        *,
        bucket: str | None = None,
        clock: Callable[[], str] = utc_now_iso,
    ) -> None:
        if not stage:
            raise ValueError("a quarantine needs the stage name")
        self.stage = stage
        self._client = client
        self._bucket = bucket
        self._clock = clock

    client: first_use[S3Client] = first_use(lambda self: aws.s3())
    bucket: first_use[str] = first_use(lambda self: get_settings().names.quarantine_bucket)

    def reject_record(self, record: Record, chunk: Chunk, error: PermanentError) -> None:
        """A record of `chunk` that failed permanently (`sluice.batch.RejectRecord`)."""
        self.reject_unchunked(
            record,
            record_type=chunk.type,
            source=chunk.source,
            correlation_id=chunk.correlation_id,
            error=error,
            chunk_id=chunk.chunk_id,
        )

    def reject_unchunked(
        self,
        record: Record,
        *,
        record_type: str,
        source: str,
        correlation_id: str,
        error: PermanentError,
        chunk_id: str | None = None,
    ) -> None:
        """A record rejected before it was packed in a chunk (e.g. too large even to offload)."""
        doc = self._document(error, record_type, source, correlation_id)
        doc.update(record_id=record.id, chunk_id=chunk_id, ingested_at=record.ingested_at)
        doc["record"] = record.to_wire()
        key = record_key(self.stage, record_type, record.ingested_at, record.id)
        if record.payload_ref is not None:
            doc.update(self._keep_payload(record.payload_ref, key))
        self._put(key, doc)

    def _keep_payload(self, ref: str, key: str) -> dict[str, Any]:
        """Copy a claim-checked payload next to its record: the payload bucket may expire it."""
        try:
            bucket, source_key = parse_ref(ref)
        except PermanentError:
            return {"payload_missing": True}
        copy_key = key.removesuffix(".json") + ".payload.json"
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=copy_key,
                CopySource={"Bucket": bucket, "Key": source_key},
                ContentType=CONTENT_TYPE,
                MetadataDirective="REPLACE",
            )
        except aws.client_errors() as exc:
            if aws.error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return {"payload_missing": True}
            raise QuarantineWriteError(f"could not copy {ref} to quarantine") from exc
        return {"payload_copy": f"s3://{self.bucket}/{copy_key}"}

    def reject_chunk(self, chunk: Chunk, error: PermanentError) -> None:
        """A whole chunk refused at once (e.g. its id was claimed for other content)."""
        first = min((r.ingested_at for r in chunk.records), default="")
        doc = self._document(error, chunk.type, chunk.source, chunk.correlation_id)
        doc.update(chunk_id=chunk.chunk_id, ingested_at=first, chunk=chunk.to_wire())
        self._put(record_key(self.stage, chunk.type, first, chunk.chunk_id), doc)

    def reject_message(self, message: SQSMessage, error: PermanentError) -> None:
        """An SQS message that is not a usable envelope (`sluice.batch.RejectMessage`)."""
        doc = self._document(error, None, None, None)
        doc.update(
            message_id=message.message_id,
            receive_count=message.receive_count,
            message_attributes=_jsonable(message.raw.get("messageAttributes") or {}),
        )
        doc.update(_raw_fields(message.body))
        self._put(message_key(self.stage, message), doc)

    def reject_raw(
        self,
        *,
        record_type: str,
        source: str,
        correlation_id: str,
        raw: str | bytes,
        reason: str,
        error_class: str,
        ref_id: str,
        ingested_at: str,
        stage: str | None = None,
    ) -> str:
        """Input that never became a record (an unparseable line, a whole bad object).

        `ref_id` names it deterministically (the record id it would have had, or a hash of the
        object); returns the key written.
        """
        doc = self._document(None, record_type, source, correlation_id, stage=stage)
        doc.update(reason=reason, error_class=error_class, ref_id=ref_id, ingested_at=ingested_at)
        doc.update(_raw_fields(raw))
        key = record_key(stage or self.stage, record_type, ingested_at, ref_id)
        self._put(key, doc)
        return key

    def _document(
        self,
        error: PermanentError | None,
        record_type: str | None,
        source: str | None,
        correlation_id: str | None,
        *,
        stage: str | None = None,
    ) -> dict[str, Any]:
        return {
            "stage": stage or self.stage,
            "reason": None if error is None else error.reason,
            "error_class": None if error is None else type(error).__name__,
            "record_type": record_type,
            "source": source,
            "correlation_id": correlation_id,
            "quarantined_at": self._clock(),
        }

    def _put(self, key: str, doc: Mapping[str, Any]) -> None:
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=CONTENT_TYPE)
        except aws.client_errors() as exc:
            raise QuarantineWriteError(f"could not quarantine to s3://{self.bucket}/{key}") from exc
        log.info("quarantined", extra={"quarantine_key": key, "reason": doc.get("reason")})


def _raw_fields(raw: str | bytes) -> dict[str, Any]:
    """The raw input as text; bytes that are not UTF-8 are kept exactly, in base64, as well."""
    if isinstance(raw, str):
        return {"raw": raw}
    try:
        return {"raw": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            "raw": raw.decode("utf-8", errors="replace"),
            "raw_base64": base64.b64encode(raw).decode("ascii"),
        }


def _jsonable(value: Any) -> Any:
    """`value` if JSON can carry it, else its text (message attributes may hold bytes)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value
