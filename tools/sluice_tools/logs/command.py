"""`sluice logs [FUNCTION]`: read or follow the functions' JSON log lines, one readable line each.

The same `LogSource` as `sluice trace`: the local runtime's log files while `sluice local up`
runs for the stage, else CloudWatch Logs (`FilterLogEvents`; follow polls).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from sluice.config import ResourceNames
from sluice.errors import ConfigError
from sluice_tools.options import correlation_id_option, json_option, stage_options
from sluice_tools.trace.command import log_dir_option, since_option
from sluice_tools.trace.logsource import EVENTS, LogLine, LogQuery, LogReadError

# Shown in this order after the message; every other field follows as key=value.
STRUCTURED = ("request_id", "correlation_id", "chunk_id", "record_id", "duration_ms")
# What the line already says: the function name carries the pipeline stage (`service`) and
# the deployed stage (`stage`): sluice-cleanse-local-cleanse. Or noise.
HIDDEN = frozenset(
    {"timestamp", "level", "message", "logger", "service", "function_name", "cold_start", "stage"}
)


# A pipeline event's detail fields shown first, in this order (then the others but these).
EVENT_FIELDS = ("correlation_id", "record_type", "bucket", "key", "counts")
EVENT_HIDDEN = frozenset({"version"})


def format_line(line: LogLine) -> str:
    """time function level message, then the structured fields, then the extra fields."""
    when = datetime.fromtimestamp(line.at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    fields = line.fields
    if line.function == EVENTS and isinstance(fields.get("detail"), dict):
        return format_event(when, fields)
    if not fields:
        return f"{when} {line.function} {line.text}"
    level = str(fields.get("level") or "INFO")
    parts = [when, line.function, f"{level:<7}", str(fields.get("message") or "")]
    for name in STRUCTURED:
        if fields.get(name) is not None:
            parts.append(f"{name}={_text(fields[name])}")
    for name, value in fields.items():
        if name not in HIDDEN and name not in STRUCTURED and value is not None:
            parts.append(f"{name}={_text(value)}")
    return " ".join(parts)


def format_event(when: str, event: dict[str, object]) -> str:
    """time events detail-type source=..., then the detail's fields (counts, key, ...)."""
    detail = event["detail"]
    assert isinstance(detail, dict)
    parts = [when, EVENTS, str(event.get("detail-type") or "?"), f"source={event.get('source')}"]
    ordered = [n for n in EVENT_FIELDS if n in detail]
    ordered += [n for n in detail if n not in EVENT_FIELDS and n not in EVENT_HIDDEN]
    parts += [f"{name}={_text(detail[name])}" for name in ordered if detail[name] is not None]
    return " ".join(parts)


def _text(value: object) -> str:
    if isinstance(value, str):
        return value if value and " " not in value else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


def correlation_of(line: LogLine) -> str:
    """A function line's correlation id, or an event's (in its detail)."""
    detail = line.fields.get("detail")
    if line.function == EVENTS and isinstance(detail, dict):
        return str(detail.get("correlation_id") or "")
    return line.get("correlation_id")


def resolve_functions(wanted: str | None, present: list[str]) -> list[str] | None:
    """All functions (None), or those whose name is `wanted` or contains it (`cleanse`)."""
    if wanted is None:
        return None
    exact = [f for f in present if f == wanted]
    chosen = exact or [f for f in present if wanted in f]
    if not chosen:
        listed = ", ".join(present) or "none"
        raise click.BadParameter(f"no function matches {wanted!r} (functions: {listed})")
    return chosen


@click.command("logs")
@click.argument("function", required=False)
@stage_options
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@since_option("10m", "From this long ago (10m, 2h, 1d) or this time (ISO 8601).")
@click.option("--filter", "text", default=None, help="Only lines containing TEXT.")
@correlation_id_option("Only lines of this correlation id.")
@json_option("Print each line's JSON as written.")
@log_dir_option
def logs_command(
    function: str | None,
    stage: str,
    prefix: str,
    follow: bool,
    since_ms: int,
    text: str | None,
    correlation_id: str | None,
    as_json: bool,
    log_dir: Path | None,
) -> None:
    """Print the functions' log lines (FUNCTION: a name or part of one, e.g. cleanse), with
    stage, request id, correlation id, chunk id, duration and every extra field shown.

    `sluice logs events` prints the pipeline's EventBridge events instead (Object Landed,
    Object Delivered, Records Quarantined, Object Stuck: detail-type, source, correlation
    id, key, counts), from the log group the bus's logging rule writes them to
    (/aws/events/<prefix>-<stage>).

    Locally from `sluice local up`'s log files (events: its emulator's log group), on AWS
    from CloudWatch Logs.
    """
    from sluice import aws
    from sluice_tools.trace.command import event_log, log_source

    handled: tuple[type[Exception], ...] = (ConfigError, LogReadError, *aws.client_errors())
    try:
        names = ResourceNames(stage=stage, prefix=prefix)
        source, _ = log_source(names, log_dir)
        if function == EVENTS:
            source, function = event_log(names), None
        query = LogQuery(
            functions=resolve_functions(function, source.functions()),
            since_ms=since_ms,
            contains=tuple(t for t in (text, correlation_id) if t),
        )
        lines = source.follow(query) if follow else iter(source.read(query))
        for line in lines:
            if line.is_metrics:
                continue
            if correlation_id and correlation_of(line) != correlation_id:
                continue
            click.echo(line.text if as_json else format_line(line))
    except KeyboardInterrupt:
        return
    except handled as exc:
        raise click.ClickException(str(exc)) from exc
