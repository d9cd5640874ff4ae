"""The hand-off between invocations reading one object: where to resume, as a JSON message.

It names the object version, the stream offset right after a chunk's last record, and the
next record and chunk ordinals, so the follow-up cuts exactly the chunks an unsplit run would.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from chalicelib.objects import Format, ObjectRef
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
    offset: int = 0  # in the decompressed stream (= the object's bytes when not gzip)
    next_ordinal: int = 0
    next_chunk: int = 0
    csv_header: list[str] | None = None
    v: int = CHECKPOINT_VERSION

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

    def advance(
        self, *, offset: int, next_ordinal: int, next_chunk: int, csv_header: list[str] | None
    ) -> Checkpoint:
        return replace(
            self,
            offset=offset,
            next_ordinal=next_ordinal,
            next_chunk=next_chunk,
            csv_header=csv_header,
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
            return cls(**wire)
        except (ValueError, TypeError, KeyError) as exc:
            raise PermanentError(f"continuation message is not a checkpoint: {exc}") from None
