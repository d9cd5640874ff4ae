"""Re-ingest landed objects: each one copied to `incoming/<type>/_replay/g<N>/<rest of key>`.

Ingest names an object by (bucket, key, ETag): its claim, its correlation id and its record
ids all come from them, so the same object landed again is a duplicate by design. A
deliberate re-ingest is therefore a copy under a replay key that carries a generation:
- the same generation of the same object is the same key and the same bytes (ETag): an
  accidental second replay is skipped here, and if it copied anyway ingest's claim on
  (bucket, key, ETag) would make it a duplicate: delivered once;
- a later deliberate re-ingest (after another fix) takes the next generation (`--generation`);
- `--type` re-keys an object landed under the wrong type folder (`incoming/data/...`).

The copy is a landed object of its own, with its own correlation id, reconciled by `sluice
ledger` like any other; it names the original in its metadata (`sluice-replay-of`), and the
original's flow gets a `replay` entry (records_in 0, skipped: "re-ingested as ...") so the
ledger shows where it went. Records of a copy have new ids: an object whose records ingest
already sent on would be delivered twice, so such objects are skipped unless asked
(`include_delivered`); the point is objects ingest refused (an unknown type, a bad format,
lines a fixed parser now reads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sluice import aws
from sluice.envelope import Chunk, derive_chunk_id, object_correlation_id
from sluice.ledger import LedgerWriter
from sluice.progress import REPLAY
from sluice_tools.ledger.reconcile import INCOMING_PREFIX
from sluice_tools.ledger.store import read_ledger
from sluice_tools.stages import INGEST

REPLAY_FOLDER = "_replay"
META_REPLAY_OF = "sluice-replay-of"
META_REPLAY_SOURCE = "sluice-replay-source"


def replay_key(key: str, generation: int, record_type: str | None = None) -> str:
    """Where generation `generation` of the landed `key` is copied to."""
    parts = key.split("/")
    if parts[0] != INCOMING_PREFIX.rstrip("/") or len(parts) < 2:
        raise ValueError(f"{key!r} is not a landed key (under {INCOMING_PREFIX})")
    if generation < 1:
        raise ValueError("the generation is 1 or more")
    if len(parts) == 2:  # incoming/<file>: no type folder
        if not record_type:
            raise ValueError(f"{key!r} has no type folder: say which type (--type)")
        rest = parts[1]
    else:
        rest = "/".join(parts[2:])
    kind = record_type or parts[1]
    return f"{INCOMING_PREFIX}{kind}/{REPLAY_FOLDER}/g{generation}/{rest}"


@dataclass
class LandingItem:
    key: str
    target: str
    correlation_id: str
    action: str = ""  # copied | would copy | already replayed | skipped: ...


@dataclass
class LandingResult:
    objects: int = 0
    copied: int = 0
    already: int = 0
    skipped: int = 0
    dry_run: bool = False
    items: list[LandingItem] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would copy" if self.dry_run else "copied"
        return (
            f"{self.objects} landed object(s) read; {verb} {self.copied} for re-ingest; "
            f"{self.already} already replayed; {self.skipped} skipped"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "objects": self.objects,
            "copied": self.copied,
            "already_replayed": self.already,
            "skipped": self.skipped,
            "items": [vars(i) for i in self.items],
        }


class LandingReplay:
    def __init__(
        self,
        *,
        s3: Any,
        dynamodb: Any,
        landing_bucket: str,
        ledger_table: str,
        progress: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.s3, self.dynamodb = s3, dynamodb
        self.bucket = landing_bucket
        self.ledger_table = ledger_table
        self.ledger = LedgerWriter(dynamodb, table_name=ledger_table)
        self.progress = progress

    def objects(self, prefix: str, since: datetime | None) -> Iterator[dict[str, Any]]:
        if not prefix.startswith(INCOMING_PREFIX):
            raise ValueError(f"--prefix must start with {INCOMING_PREFIX} (got {prefix!r})")
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents") or []:
                if f"/{REPLAY_FOLDER}/" in str(obj["Key"]):
                    continue  # a replay's copy: replay its original with a new generation
                if since is not None and obj["LastModified"] < since:
                    continue
                yield obj

    def run(
        self,
        prefix: str,
        *,
        generation: int = 1,
        record_type: str | None = None,
        since: datetime | None = None,
        include_delivered: bool = False,
        dry_run: bool = False,
    ) -> LandingResult:
        result = LandingResult(dry_run=dry_run)
        for obj in self.objects(prefix, since):
            result.objects += 1
            key, etag = str(obj["Key"]), str(obj.get("ETag") or "").strip('"')
            corr = object_correlation_id(self.bucket, key, etag)
            item = LandingItem(key, replay_key(key, generation, record_type), corr)
            result.items.append(item)
            sent = self._sent_on(corr)
            if self._copied(item.target, corr):
                item.action = "already replayed"
                result.already += 1
            elif sent and not include_delivered:
                item.action = (
                    f"skipped: ingest already sent {sent} record(s) of it on (they would be "
                    "delivered twice; --include-delivered to re-ingest anyway)"
                )
                result.skipped += 1
            elif dry_run:
                item.action = "would copy"
                result.copied += 1
            else:
                self._copy(item)
                item.action = "copied"
                result.copied += 1
            if result.objects % 100 == 0:
                self.progress(f"... {result.objects} object(s) read, {result.copied} copied")
        return result

    def _sent_on(self, corr: str) -> int:
        entries = read_ledger(self.dynamodb, self.ledger_table, corr)
        return sum(e.out for e in entries if e.name == INGEST and not e.is_sink)

    def _copied(self, target: str, corr: str) -> bool:
        """The target is there, copied from this object (same key and ETag)."""
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=target)
        except aws.client_errors() as exc:
            if aws.error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return bool((head.get("Metadata") or {}).get(META_REPLAY_OF) == corr)

    def _copy(self, item: LandingItem) -> None:
        """Copy, then the original's `replay` entry: a run killed in between finds the copy
        the next time and does not copy again (an identical copy would be a duplicate for
        ingest anyway: same key, same bytes)."""
        self.s3.copy_object(
            Bucket=self.bucket,
            Key=item.target,
            CopySource={"Bucket": self.bucket, "Key": item.key},
            Metadata={META_REPLAY_OF: item.correlation_id, META_REPLAY_SOURCE: item.key},
            MetadataDirective="REPLACE",
        )
        copy_etag = str(self.s3.head_object(Bucket=self.bucket, Key=item.target)["ETag"])
        copy_corr = object_correlation_id(self.bucket, item.target, copy_etag.strip('"'))
        record_type = item.key.split("/")[1] if item.key.count("/") >= 2 else ""
        marker = Chunk(
            derive_chunk_id(item.correlation_id, REPLAY, item.target),
            record_type or "_unknown",
            f"s3://{self.bucket}/{item.key}",
            item.correlation_id,
            (),
        )
        self.ledger.record_skipped(
            REPLAY,
            marker,
            f"re-ingested as s3://{self.bucket}/{item.target} (correlation id {copy_corr})",
        )
