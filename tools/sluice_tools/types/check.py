"""`sluice types check`: a type's edited schema against the records the warehouse holds.

The curated bucket keeps each accepted record as a row (`consumers/warehouse/chalicelib/
curated.py`): keys `type=<type>/dt=YYYY-MM-DD/hour=HH/<chunk>-<token>.jsonl.gz`, gzip JSON
Lines, each row the normalised payload plus the warehouse's metadata columns. The newest
partitions are read first (dates, then hours, descending; objects in an hour newest first)
until the sample is full; each row, its metadata columns removed, is validated as cleanse
validates a normalised record (fastjsonschema on the type's schema). The records are
already normalised, so the rules are not applied again.

Whether the schema changed without a new version is judged against git's HEAD: the
committed registry is what was last deployed in the usual flow (edit, check, commit,
deploy), and git needs no AWS call; the deployed copy is `sluice doctor`'s business.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The columns the warehouse adds to every row (warehouse service.to_line): not payload.
METADATA_COLUMNS = ("_record_id", "_ingested_at", "_correlation_id", "_type")
DEFAULT_SAMPLE = 1000
SHOWN_REASONS = 5


class CheckError(Exception):
    """The check could not run (no such type, the bucket unreadable); no verdict."""


@dataclass(frozen=True)
class Rejection:
    """A curated record the schema would reject, and where it is."""

    record_id: str
    natural_key: str  # the record's natural key value ("?" if it has none)
    key: str
    line: int  # 1-based, in the object
    reason: str


@dataclass
class CheckReport:
    """What `check_type` found; `ok` when no sampled record would be rejected."""

    type: str
    version: int
    bucket: str
    objects: int = 0
    records: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)  # the first SHOWN_REASONS
    reasons: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "version": self.version,
            "bucket": self.bucket,
            "objects": self.objects,
            "records": self.records,
            "rejected": self.rejected,
            "ok": self.ok,
            "rejections": [r.__dict__ for r in self.rejections],
            "reasons": dict(self.reasons.most_common()),
            "warnings": self.warnings,
        }

    def render(self) -> str:
        lines = [
            f"Type {self.type!r} (version {self.version}), its schema in this checkout against "
            f"the newest curated records in s3://{self.bucket}/type={self.type}/:"
        ]
        if not self.records:
            lines.append("  no curated records of this type: nothing to compare with")
        else:
            objects = f"{self.objects} object{'' if self.objects == 1 else 's'}"
            lines.append(
                f"  {self.records} records checked ({objects}): {self.rejected} would be rejected"
            )
        for reason, count in self.reasons.most_common(SHOWN_REASONS):
            lines.append(f"    {count} x {reason}")
        for r in self.rejections:
            lines.append(f"  e.g. {self.type} {r.natural_key} (record {r.record_id}): {r.reason}")
            lines.append(f"       line {r.line} of {r.key}")
        lines.extend(f"Warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def partition_prefix(record_type: str) -> str:
    return f"type={record_type}/"


def recent_objects(s3: Any, bucket: str, record_type: str) -> Iterator[str]:
    """Keys of `record_type`'s curated objects, newest partition first (then newest object)."""
    for day in sorted(_prefixes(s3, bucket, partition_prefix(record_type)), reverse=True):
        for hour in sorted(_prefixes(s3, bucket, day), reverse=True):
            objects = [obj for page in _pages(s3, bucket, hour) for obj in page.get("Contents", ())]
            objects.sort(key=lambda obj: (obj["LastModified"], obj["Key"]), reverse=True)
            yield from (obj["Key"] for obj in objects)


def _pages(s3: Any, bucket: str, prefix: str, delimiter: str | None = None) -> Iterator[Any]:
    args = {"Bucket": bucket, "Prefix": prefix} | ({"Delimiter": delimiter} if delimiter else {})
    yield from s3.get_paginator("list_objects_v2").paginate(**args)


def _prefixes(s3: Any, bucket: str, prefix: str) -> list[str]:
    return [
        common["Prefix"]
        for page in _pages(s3, bucket, prefix, "/")
        for common in page.get("CommonPrefixes", ())
    ]


def read_rows(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """The rows of one curated object (gzip JSON Lines)."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        text = gzip.decompress(body).decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, EOFError, ValueError) as exc:
        raise CheckError(f"s3://{bucket}/{key} is not gzip JSON Lines: {exc}") from None


def payload_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """A curated row without the warehouse's metadata columns: the normalised record."""
    return {k: v for k, v in row.items() if k not in METADATA_COLUMNS}


def compile_validator(name: str, schema: Mapping[str, Any]) -> Any:
    """fastjsonschema's validator, as cleanse compiles it; `CheckError` for a bad schema."""
    import fastjsonschema

    try:
        return fastjsonschema.compile(dict(schema))
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise CheckError(f"type {name!r}: schema.json is not a valid JSON Schema: {exc}") from None


def check_type(
    root: Path, name: str, *, s3: Any, bucket: str, sample: int = DEFAULT_SAMPLE
) -> CheckReport:
    """Validate up to `sample` of the newest curated records of type `name` with the schema
    in `root/types/<name>/` (as edited); warnings for a schema changed without its version."""
    from fastjsonschema import JsonSchemaValueException

    from sluice.errors import ConfigError
    from sluice.registry import load_registry

    try:
        spec = load_registry(root / "types").get(name)
    except (ConfigError, KeyError) as exc:
        raise CheckError(str(exc)) from None
    validate = compile_validator(name, spec.schema)
    report = CheckReport(type=name, version=spec.version, bucket=bucket)
    report.warnings += version_warnings(root, name, spec.schema, spec.version)
    from sluice import aws

    try:
        for key in recent_objects(s3, bucket, name):
            if report.records >= sample:
                break
            rows = read_rows(s3, bucket, key)[: sample - report.records]
            report.objects += 1
            for line, row in enumerate(rows, start=1):
                report.records += 1
                try:
                    validate(payload_of(row))
                except JsonSchemaValueException as exc:
                    reason = f"invalid {name}: {exc.message}"
                    report.rejected += 1
                    report.reasons[reason] += 1
                    if len(report.rejections) < SHOWN_REASONS:
                        rid = str(row.get("_record_id", "?"))
                        natural = str(row.get(spec.natural_key, "?"))
                        report.rejections.append(Rejection(rid, natural, key, line, reason))
    except aws.client_errors() as exc:
        raise CheckError(f"cannot read s3://{bucket}/{partition_prefix(name)}: {exc}") from None
    return report


def version_warnings(root: Path, name: str, schema: Mapping[str, Any], version: int) -> list[str]:
    """A warning if `name`'s schema differs from git HEAD's while type.json's version does
    not; none for a type HEAD does not have (new) or outside a git checkout."""
    committed_schema = _at_head(root, f"types/{name}/schema.json")
    committed_type = _at_head(root, f"types/{name}/type.json")
    if committed_schema is None or committed_type is None:
        return []
    if committed_schema == dict(schema) or committed_type.get("version") != version:
        return []
    return [
        f"types/{name}/schema.json differs from git HEAD's but type.json's version is still "
        f"{version}: raise it to {version + 1} with the change"
    ]


def _at_head(root: Path, path: str) -> dict[str, Any] | None:
    """The JSON object committed at `path` in HEAD, or None (no git, not committed, bad)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "show", f"HEAD:./{path}"],
            capture_output=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
