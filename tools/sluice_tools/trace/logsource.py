"""Where the functions' log lines are read from: one interface, two places.

`LocalLogFiles` reads the local runtime's `logs/<function>.log`; `CloudWatchLogs` reads the
stage's Lambda log groups (`/aws/lambda/<function>`). Both give the same `LogLine`s, so
`sluice trace` and `sluice logs` print the same thing locally and on AWS. `EventLog` reads
the pipeline's EventBridge events from their log group, the same way in both places.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

LAMBDA_LOG_PREFIX = "/aws/lambda/"
# Logs Insights: how often to ask whether a query is done, and for how long at most.
QUERY_POLL_S = 0.5
QUERY_TIMEOUT_S = 120.0
QUERY_LIMIT = 10_000  # Logs Insights' maximum rows per query
SINCE_RE = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class LogLine:
    """One line a function wrote: its time (epoch ms), function, text, and the JSON fields."""

    at_ms: int
    function: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, function: str, text: str, at_ms: int | None = None) -> LogLine:
        """A line as written; the JSON object's `timestamp` gives the time when it has one."""
        text = text.rstrip("\n")
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        fields = doc if isinstance(doc, dict) else {}
        stamp = _epoch_ms(str(fields.get("timestamp") or ""))
        at = stamp if stamp is not None else (at_ms if at_ms is not None else 0)
        return cls(at_ms=at, function=function, text=text, fields=fields)

    def get(self, name: str) -> str:
        value = self.fields.get(name)
        return "" if value is None else str(value)

    def mentions(self, text: str) -> bool:
        """`text` anywhere in the line (a field value, a list of ids, the message)."""
        return text in self.text

    @property
    def is_metrics(self) -> bool:
        """An Embedded Metric Format line (no message of its own)."""
        return "_aws" in self.fields and "message" not in self.fields


@dataclass(frozen=True)
class LogQuery:
    """Which lines: of these functions (None: all), from `since` (epoch ms), containing
    every string of `contains` (case-sensitive, as CloudWatch's quoted terms)."""

    functions: Sequence[str] | None = None
    since_ms: int | None = None
    contains: Sequence[str] = ()

    def select(self, present: list[str]) -> list[str]:
        """Of the functions `present`, the ones asked for."""
        if self.functions is None:
            return present
        return [f for f in present if f in self.functions]

    def matches(self, line: LogLine) -> bool:
        if self.functions is not None and line.function not in self.functions:
            return False
        if self.since_ms is not None and line.at_ms < self.since_ms:
            return False
        return all(line.mentions(text) for text in self.contains)


class LogSource(Protocol):
    """Reads the functions' log lines of one stage."""

    def functions(self) -> list[str]:
        """The names of the functions that have logs."""
        ...

    def read(self, query: LogQuery) -> list[LogLine]:
        """Every line `query` matches, oldest first."""
        ...

    def follow(self, query: LogQuery, poll_s: float = 1.0) -> Iterator[LogLine]:
        """Lines `query` matches as they are written, from `query.since_ms` on; endless."""
        ...


class LocalLogFiles:
    """The local runtime's log files: `<log_dir>/<function>.log`, one JSON line each."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    def functions(self) -> list[str]:
        return sorted(p.stem for p in self.log_dir.glob("*.log"))

    def read(self, query: LogQuery) -> list[LogLine]:
        lines: list[LogLine] = []
        for function in query.select(self.functions()):
            path = self.log_dir / f"{function}.log"
            with path.open("r", encoding="utf-8", errors="replace") as handle:
                lines += self._matching(function, handle, query)
        return sorted(lines, key=lambda line: line.at_ms)

    def follow(self, query: LogQuery, poll_s: float = 1.0) -> Iterator[LogLine]:
        offsets: dict[str, int] = {}
        while True:
            found: list[LogLine] = []
            for function in query.select(self.functions()):
                path = self.log_dir / f"{function}.log"
                with path.open("rb") as handle:
                    handle.seek(offsets.get(function, 0))
                    data = handle.read()
                # Only whole lines: a line being written is read on the next round.
                whole = data[: data.rfind(b"\n") + 1]
                offsets[function] = offsets.get(function, 0) + len(whole)
                text = whole.decode("utf-8", errors="replace").splitlines()
                found += self._matching(function, text, query)
            yield from sorted(found, key=lambda line: line.at_ms)
            time.sleep(poll_s)

    @staticmethod
    def _matching(function: str, texts: Iterable[str], query: LogQuery) -> list[LogLine]:
        out = []
        for text in texts:
            if not text.strip() or not all(t in text for t in query.contains):
                continue
            line = LogLine.parse(function, text)
            if query.matches(line):
                out.append(line)
        return out


class CloudWatchLogs:
    """The stage's Lambda log groups in CloudWatch Logs.

    `read` runs one Logs Insights query over every group it needs (`filter @message like`
    each string), and filters the rows again here: a query engine that ignores `filter`
    (moto 5.2.5 parses only fields, sort and limit) still gives the right lines. `follow`
    polls `FilterLogEvents` per group, since Insights is not made for tailing.
    """

    def __init__(self, client: Any, function_prefixes: Sequence[str], stage: str) -> None:
        self.client = client
        # Each app's `<app_name>-<stage>-` (Chalice's function names), e.g. "sluice-cleanse-dev-".
        self.function_prefixes = tuple(function_prefixes)
        self.stage = stage

    def functions(self) -> list[str]:
        found: set[str] = set()
        paginator = self.client.get_paginator("describe_log_groups")
        for prefix in self.function_prefixes:
            for page in paginator.paginate(logGroupNamePrefix=LAMBDA_LOG_PREFIX + prefix):
                for group in page.get("logGroups") or []:
                    name = str(group["logGroupName"]).removeprefix(LAMBDA_LOG_PREFIX)
                    if f"-{self.stage}-" in name:
                        found.add(name)
        return sorted(found)

    def read(self, query: LogQuery) -> list[LogLine]:
        groups = [LAMBDA_LOG_PREFIX + f for f in query.select(self.functions())]
        if not groups:
            return []
        now_s = int(time.time()) + 60
        since_s = (query.since_ms or 0) // 1000
        filters = "".join(f" | filter @message like {json.dumps(t)}" for t in query.contains)
        started = self.client.start_query(
            logGroupNames=groups,
            startTime=since_s,
            endTime=now_s,
            queryString=f"fields @timestamp, @message, @log{filters}"
            f" | sort @timestamp asc | limit {QUERY_LIMIT}",
        )
        rows = self._results(str(started["queryId"]))
        lines = []
        for row in rows:
            cells = {cell["field"]: cell.get("value", "") for cell in row}
            function = str(cells.get("@log", "")).rsplit(LAMBDA_LOG_PREFIX, 1)[-1]
            line = LogLine.parse(function, str(cells.get("@message", "")), _cell_ms(cells))
            if query.matches(line):
                lines.append(line)
        return sorted(lines, key=lambda line: line.at_ms)

    def _results(self, query_id: str) -> list[Any]:
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        while True:
            answer = self.client.get_query_results(queryId=query_id)
            status = answer.get("status")
            if status == "Complete":
                return list(answer.get("results") or [])
            if status in {"Failed", "Cancelled", "Timeout"}:
                raise LogReadError(f"Logs Insights query {query_id} ended {status}")
            if time.monotonic() > deadline:
                raise LogReadError(f"Logs Insights query {query_id} still {status}")
            time.sleep(QUERY_POLL_S)

    def follow(self, query: LogQuery, poll_s: float = 2.0) -> Iterator[LogLine]:
        def groups() -> dict[str, str]:  # functions deployed meanwhile are followed too
            return {f: LAMBDA_LOG_PREFIX + f for f in query.select(self.functions())}

        return _follow_groups(self.client, groups, query, poll_s)


EVENTS = "events"  # what `sluice logs` calls the pipeline's events, and their lines' function
EVENTS_LOG_PREFIX = "/aws/events/"


def events_log_group(prefix: str, stage: str) -> str:
    """The log group the bus's logging rule writes every `sluice.*` event to (platform.yaml)."""
    return f"{EVENTS_LOG_PREFIX}{prefix}-{stage}"


class EventLog:
    """The pipeline's EventBridge events of one stage, as the bus's logging rule writes them
    (one JSON event per log event) to `/aws/events/<prefix>-<stage>` in CloudWatch Logs: on
    AWS, and locally in the emulator (its rules deliver to log groups). Lines carry the
    function name `events`; a missing log group has no lines.
    """

    def __init__(self, client: Any, group: str) -> None:
        self.client = client
        self.group = group

    def functions(self) -> list[str]:
        found = self.client.describe_log_groups(logGroupNamePrefix=self.group)
        groups = {g["logGroupName"] for g in found.get("logGroups") or []}
        return [EVENTS] if self.group in groups else []

    def read(self, query: LogQuery) -> list[LogLine]:
        if not query.select(self.functions()):
            return []
        lines = [
            line
            for event in _log_events(self.client, self.group, query.since_ms or 0, query.contains)
            if query.matches(line := _event_line(EVENTS, event))
        ]
        return sorted(lines, key=lambda line: line.at_ms)

    def follow(self, query: LogQuery, poll_s: float = 2.0) -> Iterator[LogLine]:
        return _follow_groups(
            self.client,
            lambda: {f: self.group for f in query.select(self.functions())},
            query,
            poll_s,
        )


def _log_events(
    client: Any, group: str, since_ms: int, contains: Sequence[str]
) -> Iterator[dict[str, Any]]:
    """A log group's events from `since_ms` on containing every string of `contains`."""
    args: dict[str, Any] = {"logGroupName": group, "startTime": since_ms}
    if contains:
        args["filterPattern"] = " ".join(json.dumps(t) for t in contains)
    for page in client.get_paginator("filter_log_events").paginate(**args):
        yield from page.get("events") or []


def _event_line(function: str, event: Mapping[str, Any]) -> LogLine:
    return LogLine.parse(
        function, str(event.get("message") or ""), int(event.get("timestamp") or 0)
    )


def _follow_groups(
    client: Any, groups: Callable[[], Mapping[str, str]], query: LogQuery, poll_s: float
) -> Iterator[LogLine]:
    """Poll `FilterLogEvents` on each (function → log group) of `groups()`, endlessly."""
    seen: set[str] = set()
    since = query.since_ms or int(time.time() * 1000)
    while True:
        found: list[LogLine] = []
        newest = since
        for function, group in groups().items():
            for event in _log_events(client, group, since, query.contains):
                event_id = str(event.get("eventId") or "")
                if event_id in seen:
                    continue
                seen.add(event_id)
                line = _event_line(function, event)
                newest = max(newest, int(event.get("timestamp") or 0))
                if query.matches(line):
                    found.append(line)
        # Events may arrive late by a little: ask again from a few seconds back.
        since = max(since, newest - 5000)
        yield from sorted(found, key=lambda line: line.at_ms)
        time.sleep(poll_s)


def parse_since(text: str, now_s: float | None = None) -> int:
    """`10m`, `2h`, `30s`, `1d` ago, or an ISO 8601 time -> epoch milliseconds."""
    now = time.time() if now_s is None else now_s
    found = SINCE_RE.match(text.strip())
    if found:
        return int((now - int(found.group(1)) * UNITS[found.group(2)]) * 1000)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{text!r}: use 10m, 2h, 1d or an ISO 8601 time") from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


class LogReadError(Exception):
    """The logs could not be read (a query that failed or never finished)."""


def _epoch_ms(stamp: str) -> int | None:
    if not stamp:
        return None
    try:
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


def _cell_ms(cells: dict[str, Any]) -> int | None:
    value = str(cells.get("@timestamp") or "")
    if value.isdigit():
        return int(value)
    return _epoch_ms(value.replace(" ", "T"))
