"""The hand-off between invocations reading one object: where to resume, as a JSON message.

It names the object version, the stream offset right after a chunk's last record, and the
next record and chunk ordinals, so the follow-up cuts exactly the chunks an unsplit run would.

Offsets count bytes of the stream the parser reads: the object's own bytes, unless the
object is gzip (then the gunzipped bytes) or began with a UTF-16/32 byte-order mark (then
the UTF-8 it is re-encoded to, without the BOM). Only the first kind maps to the object, so
only there does a follow-up start with a range request; for the others it reads the object
from its first byte through the same gunzip and re-encoding and drops `offset` bytes. That
re-reads the start but keeps one meaning of an offset whatever the object's encoding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from chalicelib.objects import Format, ObjectRef
from chalicelib.streams import REENCODED
from sluice.errors import PermanentError

CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a (possibly partial) read of one object starts."""

    bucket: str
    key: str
    etag: str
    version_id: str | None
    record_type: str
    format: str
    gzip: bool
    correlation_id: str
    ingested_at: str
    offset: int = 0  # in the stream the parser reads (see the module's docstring)
    next_ordinal: int = 0
    next_chunk: int = 0
    csv_header: list[str] | None = None
    v: int = CHECKPOINT_VERSION
    line: int = 0  # physical lines before `offset` (reasons name 1-based lines)
    encoding: str | None = None  # a UTF-16/32 the object is re-encoded from, after its BOM

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.bucket, self.key, self.etag, self.version_id)

    @property
    def fmt(self) -> Format:
        return Format(self.format)

    @property
    def claim_key(self) -> str:
        """A continuation is claimed by (object, offset): redelivery runs it once."""
        return f"{self.ref.claim_key}@{self.offset}"

    @property
    def unit_id(self) -> str:
        """What the stage runtime claims the continuation by (`sluice.stage.Unit`)."""
        return self.claim_key

    @property
    def type(self) -> str:
        return self.record_type

    @property
    def derived(self) -> bool:
        """True if offsets are not the object's bytes (gunzipped or re-encoded)."""
        return self.gzip or self.encoding is not None

    def advance(
        self,
        *,
        offset: int,
        next_ordinal: int,
        next_chunk: int,
        csv_header: list[str] | None,
        line: int,
        encoding: str | None,
    ) -> Checkpoint:
        return replace(
            self,
            offset=offset,
            next_ordinal=next_ordinal,
            next_chunk=next_chunk,
            csv_header=csv_header,
            line=line,
            encoding=encoding,
        )

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def decode(cls, body: str) -> Checkpoint:
        try:
            wire: Any = json.loads(body)
            if not isinstance(wire, dict) or wire.get("v") != CHECKPOINT_VERSION:
                raise ValueError(f"not a version {CHECKPOINT_VERSION} checkpoint")
            Format(wire["format"])
            if wire.get("encoding") not in (None, *REENCODED):
                raise ValueError(f"unknown encoding {wire.get('encoding')!r}")
            return cls(**wire)
        except (ValueError, TypeError, KeyError) as exc:
            raise PermanentError(f"continuation message is not a checkpoint: {exc}") from None
