"""S3 event records → object references, and what a key says: record type, format, gzip.

Pure: no I/O. Keys in S3 events are form-URL-encoded (`+` for space); every record of an
event is decoded here (Chalice's `S3Event` parses only the first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import unquote_plus

from sluice.envelope import object_correlation_id

INCOMING = "incoming"


class Format(StrEnum):
    JSONL = "jsonl"
    JSON = "json"
    CSV = "csv"


_SUFFIXES = {
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
    ".json": Format.JSON,
    ".csv": Format.CSV,
}


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One version of one S3 object, as an event names it."""

    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    event_time: str = ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def version(self) -> str:
        """What record and chunk ids are derived from: the ETag (the object's content).

        The same identity as the claim (`claim_key`) and the correlation id: two versions of
        a key with the same bytes are one object, so whichever event takes the claim (the
        first upload's, or an identical re-upload's after the first reader died mid-way)
        sends the same chunks, which the next hop deduplicates. The version id only says
        which version to read. Two uploads of the same bytes with different multipart part
        sizes have different ETags: two objects, as S3 itself sees them.
        """
        return self.etag or self.version_id or ""

    @property
    def claim_key(self) -> str:
        """The per-object idempotency key: a duplicate notification carries the same one."""
        return f"{self.bucket}/{self.key}/{self.etag}"

    @property
    def unit_id(self) -> str:
        """What the stage runtime claims the object by (`sluice.stage.Unit`)."""
        return self.claim_key

    @property
    def type(self) -> str:
        """The record type the key names (`incoming/<type>/…`), or "" if none."""
        parts = self.key.split("/")
        return parts[1] if len(parts) >= 3 and parts[0] == INCOMING else ""

    @property
    def correlation_id(self) -> str:
        """One per object, deterministic, so a duplicate event converges on the same id."""
        return object_correlation_id(self.bucket, self.key, self.etag)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the key says. `problem` is set when the object cannot be ingested at all."""

    record_type: str | None
    format: Format | None
    gzip: bool
    problem: str | None = None


def is_object_created(record: Mapping[str, Any]) -> bool:
    """`ObjectCreated:*` only (AWS and moto drop the `s3:` prefix; accept both)."""
    name = str(record.get("eventName") or "")
    return name.removeprefix("s3:").startswith("ObjectCreated:")


def object_ref(record: Any) -> ObjectRef | None:
    """The object an S3 event record names, if it is an `ObjectCreated` one."""
    if not isinstance(record, Mapping) or not is_object_created(record):
        return None
    s3 = record.get("s3") or {}
    obj = s3.get("object") or {}
    bucket = str((s3.get("bucket") or {}).get("name") or "")
    key = unquote_plus(str(obj.get("key") or ""))
    if not bucket or not key:
        return None
    return ObjectRef(
        bucket=bucket,
        key=key,
        etag=str(obj.get("eTag") or "").strip('"'),
        version_id=(str(obj["versionId"]) if obj.get("versionId") not in (None, "null") else None),
        event_time=str(record.get("eventTime") or ""),
    )


def classify(key: str, types: frozenset[str]) -> KeyInfo:
    """Record type from `incoming/<type>/…`, format from the suffix (optionally `.gz`)."""
    parts = key.split("/")
    record_type = parts[1] if len(parts) >= 3 and parts[0] == INCOMING and parts[1] else None
    lower = key.lower()
    gzip = lower.endswith(".gz")
    stem = lower.removesuffix(".gz") if gzip else lower
    fmt = next((f for s, f in _SUFFIXES.items() if stem.endswith(s)), None)
    if record_type is None:
        return KeyInfo(None, fmt, gzip, f"key {key!r} is not under {INCOMING}/<type>/")
    if record_type not in types:
        known = ", ".join(sorted(types))
        return KeyInfo(
            record_type, fmt, gzip, f"unknown record type {record_type!r} (known: {known})"
        )
    if fmt is None:
        return KeyInfo(
            record_type,
            None,
            gzip,
            f"unknown suffix of {key!r}: use .jsonl, .ndjson, .json or .csv, optionally + .gz",
        )
    return KeyInfo(record_type, fmt, gzip)
