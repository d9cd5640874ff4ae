"""Scheduled pulls: fetch each configured HTTP source from its cursor and land what it
returned in the landing bucket (`incoming/<type>/pulls/<name>/<timestamp>-<cursor>.jsonl`),
so pulled data takes the same S3 path as everything else. A failed pull keeps the cursor.

A source (`chalicelib/sources.json`) is {name, url, type, cursor_param, format,
secret_parameter?, enabled?}. `format` "json": the body is {"records": [...],
"next_cursor": ...}; "jsonl": one record per line, the next cursor in the `X-Next-Cursor`
header (the body is landed as is). Requests go through `safe_http` (https only, public
addresses only, no redirect to another origin, one deadline per source); the invocation's
remaining time bounds them all, and a source left without time keeps its cursor.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from chalicelib import safe_http
from chalicelib.settings import IngestSettings
from sluice import aws
from sluice.config import Settings, get_settings, names
from sluice.errors import ConfigError, TransientError
from sluice.idempotency import RemainingTime, remaining_ms_of
from sluice.lazy import first_use
from sluice.observability import add_metric, get_logger, log_context

log = get_logger(__name__)

SOURCES_FILE = Path(__file__).with_name("sources.json")
CURSOR_HEADER = "X-Next-Cursor"
RECORDS_FIELD = "records"
CURSOR_FIELD = "next_cursor"
_FORMATS = {"json", "jsonl"}
_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


class PullError(TransientError):
    """The source did not give a usable answer this time; the cursor stays put."""


@dataclass(frozen=True)
class Source:
    name: str
    url: str
    type: str
    cursor_param: str
    format: str = "json"
    secret_parameter: str | None = None
    enabled: bool = True

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Source:
        try:
            source = cls(
                name=str(raw["name"]),
                url=str(raw["url"]),
                type=str(raw["type"]),
                cursor_param=str(raw["cursor_param"]),
                format=str(raw.get("format", "json")),
                secret_parameter=raw.get("secret_parameter") or None,
                enabled=bool(raw.get("enabled", True)),
            )
        except KeyError as exc:
            raise ConfigError(f"pull source lacks {exc}: {dict(raw)!r}") from None
        if source.format not in _FORMATS:
            raise ConfigError(f"pull source {source.name}: format must be one of {_FORMATS}")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", source.name):
            raise ConfigError(f"pull source name {source.name!r}: letters, digits, '-' and '_'")
        if source.secret_parameter is not None and not re.fullmatch(
            r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", source.secret_parameter
        ):
            raise ConfigError(
                f"pull source {source.name}: secret_parameter {source.secret_parameter!r} must "
                "be a relative SSM name (it is read under /<prefix>/<stage>/, so a stage can "
                "only read its own secrets)"
            )
        return source


def stage_parameter(relative: str) -> str:
    """The SSM parameter of this stage: `/<prefix>/<stage>/<relative>` (dev never reads prod's)."""
    stage_names = names()
    return f"/{stage_names.prefix}/{stage_names.stage}/{relative}"


def load_sources(path: Path = SOURCES_FILE) -> list[Source]:
    return [Source.from_dict(raw) for raw in json.loads(path.read_text(encoding="utf-8"))]


@dataclass(frozen=True)
class Fetched:
    body: bytes  # JSON Lines, as landed
    records: int
    next_cursor: str | None


@dataclass(frozen=True)
class PullResult:
    source: str
    ok: bool
    key: str | None = None
    records: int = 0
    cursor: str | None = None
    error: str | None = None


HttpGet = Callable[..., safe_http.Answer]
# Kept back from the invocation's time (at most a tenth of it) for landing the last body
# and moving its cursor.
INVOCATION_RESERVE_S = 5.0


class Puller:
    """Pulls every enabled source; clients and the HTTP getter can be passed in."""

    def __init__(
        self,
        sources: Sequence[Source] | None = None,
        *,
        settings: Settings | None = None,
        ingest: IngestSettings | None = None,
        s3: Any = None,
        dynamodb: Any = None,
        ssm: Any = None,
        http_get: HttpGet = safe_http.get,
    ) -> None:
        self._sources = sources
        self._settings = settings
        self._ingest = ingest
        self._s3, self._dynamodb, self._ssm = s3, dynamodb, ssm
        self._get = http_get

    settings: first_use[Settings] = first_use(lambda self: get_settings())
    ingest: first_use[IngestSettings] = first_use(lambda self: IngestSettings.from_env())
    sources: first_use[Sequence[Source]] = first_use(lambda self: load_sources())

    def _client(self, name: str) -> Any:
        attr = f"_{name}"
        if getattr(self, attr) is None:
            setattr(self, attr, aws.client(name))
        return getattr(self, attr)

    def pull_all(
        self, event_time: str | None = None, remaining_ms: int | None = None
    ) -> list[PullResult]:
        """One pull per enabled source; one source failing never stops the others.

        `remaining_ms` (the invocation's time left) bounds them all: each source gets its own
        deadline within it, and a source reached with no time left is not started.
        """
        stamp = _stamp(event_time)
        until = None
        if remaining_ms is not None:
            left_s = remaining_ms / 1000
            until = time.monotonic() + left_s - min(INVOCATION_RESERVE_S, left_s / 10)
        results = []
        for source in self.sources:
            if not source.enabled:
                continue
            with log_context(correlation_id=f"pull-{source.name}-{stamp}"):
                results.append(self.pull(source, stamp, until))
        return results

    def pull(self, source: Source, stamp: str, until: float | None = None) -> PullResult:
        deadline = time.monotonic() + self.ingest.pull_source_deadline_s
        if until is not None:
            deadline = min(deadline, until)
        cursor = self.get_cursor(source.name)
        try:
            if deadline <= time.monotonic():
                raise PullError(f"{source.name}: no time left in this invocation")
            fetched = self.fetch(source, cursor, deadline)
        except PullError as error:
            log.error(
                "pull failed; cursor kept", extra={"source": source.name, "error": str(error)}
            )
            add_metric("PullsFailed")
            return PullResult(source.name, False, cursor=cursor, error=str(error))
        key = None
        if fetched.records:
            key = landing_key(source, stamp, cursor)
            self._client("s3").put_object(
                Bucket=self.settings.names.landing_bucket,
                Key=key,
                Body=fetched.body,
                ContentType="application/x-ndjson",
                Metadata={"sluice-source": source.name, "sluice-cursor": cursor or ""},
            )
        new_cursor = fetched.next_cursor if fetched.next_cursor is not None else cursor
        if new_cursor != cursor and new_cursor is not None:
            self.set_cursor(source.name, cursor, new_cursor)
        add_metric("PullsSucceeded")
        add_metric("RecordsPulled", fetched.records)
        log.info("pulled", extra={"source": source.name, "records": fetched.records, "key": key})
        return PullResult(source.name, True, key, fetched.records, new_cursor)

    def fetch(self, source: Source, cursor: str | None, deadline: float | None = None) -> Fetched:
        url = source.url
        if cursor is not None:
            sep = "&" if urllib.parse.urlsplit(url).query else "?"
            url = f"{url}{sep}{urllib.parse.urlencode({source.cursor_param: cursor})}"
        headers = {"Accept": "application/json", "User-Agent": "sluice-ingest"}
        if source.secret_parameter:
            parameter = stage_parameter(source.secret_parameter)
            headers["Authorization"] = f"Bearer {self.secret(parameter)}"
        limit = self.ingest.pull_max_bytes
        if deadline is None:
            deadline = time.monotonic() + self.ingest.pull_source_deadline_s
        try:
            answer = self._get(
                url,
                headers,
                deadline=deadline,
                max_bytes=limit,
                read_timeout_s=self.ingest.pull_timeout_s,
                allow_http_loopback=self.ingest.pull_allow_http_loopback,
            )
        except safe_http.UnsafeSourceError as exc:
            raise PullError(f"{source.name}: refused: {exc}") from None
        except safe_http.DeadlineError:
            raise PullError(f"{source.name}: no complete answer within its deadline") from None
        except urllib.error.HTTPError as exc:
            raise PullError(f"{source.name}: HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise PullError(f"{source.name}: {exc}") from None
        if answer.status != 200:
            raise PullError(f"{source.name}: HTTP {answer.status}")
        body = answer.body
        header_cursor = answer.headers.get(CURSOR_HEADER)
        if len(body) > limit:
            raise PullError(f"{source.name}: body larger than {limit} bytes")
        if source.format == "jsonl":
            return _jsonl_body(source, body, header_cursor)
        return _json_body(source, body)

    def secret(self, name: str) -> str:
        try:
            answer = self._client("ssm").get_parameter(Name=name, WithDecryption=True)
        except aws.client_errors() as exc:
            raise PullError(f"could not read SSM parameter {name}: {exc}") from exc
        return str(answer["Parameter"]["Value"])

    def get_cursor(self, source: str) -> str | None:
        item = (
            self._client("dynamodb")
            .get_item(
                TableName=self.settings.names.cursor_table,
                Key={"source": {"S": source}},
                ConsistentRead=True,
            )
            .get("Item")
        )
        value = (item or {}).get("cursor", {}).get("S")
        return None if value is None else str(value)

    def set_cursor(self, source: str, old: str | None, new: str) -> None:
        """Move the cursor only from where this pull found it (a concurrent pull loses)."""
        condition = "attribute_not_exists(#cursor)" if old is None else "#cursor = :old"
        values: dict[str, Any] = {}
        if old is not None:
            values[":old"] = {"S": old}
        args: dict[str, Any] = {
            "TableName": self.settings.names.cursor_table,
            "Item": {
                "source": {"S": source},
                "cursor": {"S": new},
                "updated_at": {"S": datetime.now(UTC).isoformat(timespec="seconds")},
            },
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#cursor": "cursor"},
        }
        if values:
            args["ExpressionAttributeValues"] = values
        self._client("dynamodb").put_item(**args)


def _json_body(source: Source, body: bytes) -> Fetched:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PullError(f"{source.name}: body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(RECORDS_FIELD), list):
        raise PullError(f"{source.name}: body is not an object with a '{RECORDS_FIELD}' list")
    cursor = doc.get(CURSOR_FIELD)
    if cursor is not None and not isinstance(cursor, str | int):
        raise PullError(f"{source.name}: '{CURSOR_FIELD}' is not a string")
    lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in doc[RECORDS_FIELD]]
    text = "".join(line + "\n" for line in lines)
    return Fetched(text.encode("utf-8"), len(lines), None if cursor is None else str(cursor))


def _jsonl_body(source: Source, body: bytes, cursor: str | None) -> Fetched:
    records = sum(1 for line in body.splitlines() if line.strip())
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return Fetched(body, records, cursor or None)


def landing_key(source: Source, stamp: str, cursor: str | None) -> str:
    safe = _SAFE.sub("_", cursor)[:100] if cursor else "start"
    return f"incoming/{source.type}/pulls/{source.name}/{stamp}-{safe}.jsonl"


def _stamp(event_time: str | None) -> str:
    """The schedule event's time (so a retried event writes the same key), else now."""
    at = None
    if event_time:
        try:
            at = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
        except ValueError:
            at = None
    at = (at or datetime.now(UTC)).astimezone(UTC)
    return at.strftime("%Y%m%dT%H%M%SZ")


@cache
def puller() -> Puller:
    """The process's puller, built on the first scheduled event."""
    return Puller()


def pull_sources(event: Mapping[str, Any], remaining: RemainingTime = None) -> dict[str, Any]:
    """Pull every enabled source within the invocation's time (`remaining`)."""
    left = remaining_ms_of(remaining) if remaining is not None else None
    results = puller().pull_all(str(event.get("time") or "") or None, left)
    return {"pulled": [r.__dict__ for r in results]}


def reset() -> None:
    puller.cache_clear()
