"""The curated bucket adapter: where the warehouse writes, and the Hive-style key layout.

Keys are `type=<type>/dt=YYYY-MM-DD/hour=HH/<chunk_id>.jsonl.gz`: Athena partitions on type,
date and hour, and one chunk id always maps to one key (a redelivery overwrites, never adds).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sluice import aws, jsonx
from sluice.config import get_settings
from sluice.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# A .gz file (no Content-Encoding): clients must not unpack it on the fly; Athena reads it.
CONTENT_TYPE = "application/gzip"
SUFFIX = ".jsonl.gz"
GZIP_LEVEL = 6


class CuratedWriteError(TransientError):
    """The curated bucket could not be written: the chunk is retried."""


def ingestion_hour(ingested_at: str) -> datetime:
    """The UTC time of an ISO 8601 `ingested_at`; `PermanentError` if it is not one."""
    try:
        at = datetime.fromisoformat(ingested_at.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise PermanentError(f"ingested_at {ingested_at!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise PermanentError(f"ingested_at {ingested_at!r} has no time zone")
    return at.astimezone(UTC)


def object_key(record_type: str, ingested_at: str, chunk_id: str) -> str:
    """The object of one chunk, partitioned by type and by the ingestion hour given."""
    at = ingestion_hour(ingested_at)
    return f"type={record_type}/dt={at:%Y-%m-%d}/hour={at:%H}/{chunk_id}{SUFFIX}"


def encode_lines(lines: Iterable[Mapping[str, Any]]) -> bytes:
    """JSON Lines, gzip level 6 with mtime 0: the same lines always give the same bytes.

    Level 6 (gzip's own default) is 3x faster than Python's default 9 for 2% more bytes.
    """
    text = b"".join(jsonx.dumps(line) + b"\n" for line in lines)
    return gzip.compress(text, compresslevel=GZIP_LEVEL, mtime=0)


def decode_lines(data: bytes) -> list[dict[str, Any]]:
    """The inverse of `encode_lines` (for tests and tooling)."""
    return [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines()]


class ObjectWriter(Protocol):
    """Where chunk objects go (`CuratedBucket`, or a fake in tests)."""

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> None: ...


class CuratedBucket:
    """Writes objects to the curated bucket (`names.curated_bucket`)."""

    def __init__(self, client: S3Client | None = None, *, bucket: str | None = None) -> None:
        self._client = client
        self._bucket = bucket

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = aws.s3()
        return self._client

    @property
    def bucket(self) -> str:
        if self._bucket is None:
            self._bucket = get_settings().names.curated_bucket
        return self._bucket

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=CONTENT_TYPE,
                Metadata=dict(metadata),
            )
        except aws.client_errors() as exc:
            raise CuratedWriteError(f"could not write s3://{self.bucket}/{key}: {exc}") from exc
