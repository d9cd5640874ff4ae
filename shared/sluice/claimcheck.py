"""Claim check: a record too large for a chunk travels as an S3 reference to its payload.

`offload` stores the payload under a deterministic key and returns the stand-in record;
`resolve` swaps it back (batch calls it, so record handlers never see `payload_ref`).

A missing payload object on resolve is permanent: the key is written before the chunk that
references it is sent and S3 reads are strongly consistent, so "not there" can only mean
deleted (by the bucket's lifecycle rule, or by hand) and no retry brings it back; the record
is quarantined, which keeps it counted. Throttling, 5xx, timeouts and access denied are
transient (a policy can be fixed, then the DLQ redriven). Grant `s3:ListBucket` on the
payload bucket: without it S3 answers a missing key with 403, which reads as transient.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from sluice import aws
from sluice.config import get_settings
from sluice.envelope import Record
from sluice.errors import OversizeRecordError, PermanentError, TransientError
from sluice.lazy import first_use
from sluice.observability import add_metric, get_logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = get_logger(__name__)

PAYLOAD_PREFIX = "payloads"
CONTENT_TYPE = "application/json"
_MISSING = {"NoSuchKey", "404", "NotFound"}


class ClaimCheckMissingError(PermanentError):
    """The payload a record refers to is gone from the payload bucket."""


class ClaimCheckError(TransientError):
    """The payload bucket could not be read or written right now."""


def payload_key(record_id: str, payload: bytes) -> str:
    """`payloads/{record_id}/{content hash}.json`.

    Deterministic (a retry rewrites the same object) and per content, so a later stage that
    offloads its own version of the record never overwrites the version an earlier chunk,
    perhaps waiting in a DLQ, still refers to.
    """
    digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
    return f"{PAYLOAD_PREFIX}/{record_id}/{digest}.json"


def parse_ref(ref: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://bucket/key` reference; `PermanentError` if it is not one."""
    bucket, sep, key = ref.removeprefix("s3://").partition("/")
    if not ref.startswith("s3://") or not sep or not bucket or not key:
        raise PermanentError(f"payload_ref {ref!r} is not an s3://bucket/key reference")
    return bucket, key


class ClaimCheck:
    """Offload and resolve payloads in the payload bucket (`names.payload_bucket`)."""

    def __init__(
        self,
        client: S3Client | None = None,
        *,
        bucket: str | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._max_bytes = max_bytes

    client: first_use[S3Client] = first_use(lambda self: aws.s3())
    bucket: first_use[str] = first_use(lambda self: get_settings().names.payload_bucket)

    @property
    def max_bytes(self) -> int:
        """The largest payload carried at all (SLUICE_RECORD_MAX_BYTES, default 10 MiB)."""
        if self._max_bytes is None:
            self._max_bytes = get_settings().record_max_bytes
        return self._max_bytes

    def offload(self, record: Record) -> Record:
        """Store `record`'s payload and return it with `payload_ref` instead of `payload`.

        `OversizeRecordError` (permanent: quarantine it) above `max_bytes`.
        """
        if record.payload_ref is not None:
            return record
        body = json.dumps(record.payload, ensure_ascii=False, separators=(",", ":"))
        data = body.encode("utf-8")
        if len(data) > self.max_bytes:
            raise OversizeRecordError(
                f"record {record.id} has a {len(data)}-byte payload; Sluice carries at most "
                f"{self.max_bytes} bytes per record (SLUICE_RECORD_MAX_BYTES)"
            )
        key = payload_key(record.id, data)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=CONTENT_TYPE)
        except aws.client_errors() as exc:
            raise ClaimCheckError(f"could not store payload of {record.id}: {exc}") from exc
        add_metric("RecordsOffloaded")
        return replace(record, payload=None, payload_ref=f"s3://{self.bucket}/{key}")

    def resolve(self, record: Record) -> Record:
        """`record` with its payload read back from `payload_ref` (unchanged if it has none)."""
        if record.payload_ref is None:
            return record
        bucket, key = parse_ref(record.payload_ref)
        if bucket != self.bucket:
            raise PermanentError(
                f"payload_ref {record.payload_ref} is outside the payload bucket {self.bucket}"
            )
        try:
            data = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except aws.client_errors() as exc:
            if aws.error_code(exc) in _MISSING:
                raise ClaimCheckMissingError(
                    f"payload {record.payload_ref} of record {record.id} no longer exists "
                    "(expired by the bucket's lifecycle, or deleted)"
                ) from exc
            raise ClaimCheckError(f"could not read {record.payload_ref}: {exc}") from exc
        try:
            payload = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PermanentError(f"payload {record.payload_ref} is not JSON: {exc}") from None
        return replace(record, payload=payload, payload_ref=None)

    def offload_or_reject(
        self, reject: Callable[[Record, OversizeRecordError], None]
    ) -> Callable[[Record], Record | None]:
        """An `on_oversize` for `pack_records`: offload, or hand a record over the max to
        `reject` (the quarantine) and leave it out of the chunk."""

        def on_oversize(record: Record) -> Record | None:
            try:
                return self.offload(record)
            except OversizeRecordError as error:
                log.warning("record over the hard maximum", extra={"record_id": record.id})
                reject(record, error)
                return None

        return on_oversize
