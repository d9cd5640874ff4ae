"""`sluice trace`: what happened to one record, or to every record of one landed object."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from sluice.config import ResourceNames
from sluice.errors import ConfigError
from sluice_tools.options import json_option, stage_options
from sluice_tools.trace.logsource import (
    CloudWatchLogs,
    EventLog,
    LocalLogFiles,
    LogQuery,
    LogReadError,
    LogSource,
    events_log_group,
    parse_since,
)
from sluice_tools.trace.tracer import NotFoundError, RecordTrace, Stores, Tracer

_F = TypeVar("_F", bound=Callable[..., Any])
TRACE_FILE_ENV = "SLUICE_TRACE_FILE"
SPANS_FILE = "spans.jsonl"  # under the local state dir, when SLUICE_TRACE_FILE is not set


log_dir_option = click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Read the local runtime's log files from here (default: .sluice/local/logs).",
)


def _since(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def since_option(default: str, what: str) -> Callable[[_F], _F]:
    """`--since 10m|2h|30d|<ISO time>`, given to the command as epoch milliseconds."""
    return click.option(
        "--since", "since_ms", default=default, show_default=True, callback=_since, help=what
    )


class TraceNotFound(click.ClickException):
    """Nothing matches the id: exit 4, as `sluice ledger --correlation-id` does."""

    exit_code = 4


@dataclass
class Where:
    """Where this run reads: the log source, the stores, the span file (local only)."""

    logs: LogSource
    stores: Stores
    spans: Path | None
    local: bool
    events: LogSource | None = None  # the pipeline's events (`event_log`)


def log_source(names: ResourceNames, log_dir: Path | None = None) -> tuple[LogSource, bool]:
    """The live `local up`'s log files when the stage is its stage (or `log_dir` is given),
    else the stage's CloudWatch Logs; and whether it is local."""
    from sluice import aws
    from sluice_tools.localstate import use_local_endpoint

    if log_dir is not None or use_local_endpoint(names.stage) is not None:
        return LocalLogFiles(log_dir or _local_state() / "logs"), True
    from sluice_tools.deploy.apps import discover_apps
    from sluice_tools.deploy.target import repo_root

    prefixes = [app.function_prefix(names.stage) for app in discover_apps(repo_root())]
    return CloudWatchLogs(aws.client("logs"), prefixes, names.stage), False


def open_where(names: ResourceNames, log_dir: Path | None = None) -> Where:
    """Where to read: the log source (`log_source`), the stage's tables and buckets (the
    emulator's with a live `local up`), and locally the span file."""
    from sluice import aws

    logs, local = log_source(names, log_dir)
    stores = Stores(names, aws.dynamodb(), aws.s3(), natural_keys=repo_natural_keys())
    spans = Path(os.environ.get(TRACE_FILE_ENV) or _local_state() / SPANS_FILE) if local else None
    return Where(logs, stores, spans, local, event_log(names))


def event_log(names: ResourceNames) -> EventLog:
    """The stage's pipeline events in CloudWatch Logs: AWS's, or the emulator's once
    `log_source` (or the environment) points this process at a live `local up`."""
    from sluice import aws

    return EventLog(aws.client("logs"), events_log_group(names.prefix, names.stage))


def object_events(
    events: LogSource | None, correlation_id: str, since_ms: int | None = None
) -> list[dict[str, Any]]:
    """The object's pipeline events, oldest first: time, detail-type, counts, event id."""
    if events is None:
        return []
    found = []
    for line in events.read(LogQuery(since_ms=since_ms, contains=(correlation_id,))):
        detail = line.fields.get("detail")
        if not isinstance(detail, dict) or detail.get("correlation_id") != correlation_id:
            continue
        found.append(
            {
                "time": str(line.fields.get("time") or ""),
                "detail_type": line.get("detail-type"),
                "counts": detail.get("counts") or {},
                "event_id": str(detail.get("event_id") or line.get("id")),
            }
        )
    return found


def _local_state() -> Path:
    from sluice_tools.deploy.target import repo_root

    return repo_root() / ".sluice" / "local"


def repo_natural_keys(start: Path | None = None) -> dict[str, str]:
    """The natural key field per record type (the repository's registry, types/)."""
    from sluice.registry import load_registry
    from sluice_tools.scaffold.generator import find_repo

    try:
        return load_registry(find_repo(start or Path.cwd()) / "types").natural_keys()
    except Exception:
        return {}


def object_summary(
    where: Where,
    correlation_id: str,
    *,
    sqs: Any = None,
    landed_key: str | None = None,
    since_ms: int | None = None,
) -> dict[str, Any]:
    """A landed object: the ledger's flow (the same counts as `sluice ledger`), and per
    record what the logs say: quarantined with its reason, or delivered to which sinks."""
    from sluice_tools.ledger.command import ledger_report, repo_sinks

    report = ledger_report(
        where.stores.names,
        correlation_id=correlation_id,
        sinks=repo_sinks(),
        dynamodb=where.stores.dynamodb,
        sqs=sqs,
        s3=where.stores.s3,
    )
    flows = [f for f in report.flows if f.correlation_id == correlation_id]
    if not flows or (not flows[0].hops and not flows[0].landed_at):
        raise NotFoundError(f"not found: nothing landed or recorded for {correlation_id!r}")
    flow = flows[0]
    # The sinks that delivered each consumer chunk (the ledger's word, as `sluice ledger`).
    delivered_by: dict[str, set[str]] = {}
    for entry in where.stores.ledger(correlation_id):
        if entry.is_sink and entry.delivered:
            delivered_by.setdefault(entry.chunk_id, set()).add(entry.name)
    records: dict[str, dict[str, Any]] = {}
    for line in where.logs.read(LogQuery(since_ms=since_ms, contains=(correlation_id,))):
        message = line.get("message")
        if message == "quarantined":
            rid = line.get("quarantine_key").rsplit("/", 1)[-1].removesuffix(".json")
            records.setdefault(rid, {"sinks": []}).update(
                quarantined=line.get("service"), reason=line.get("reason")
            )
        elif message == "record refused":
            records.setdefault(line.get("record_id"), {"sinks": []})["key"] = line.get(
                "natural_key"
            )
        elif line.fields.get("record_ids") and line.get("chunk_id"):
            sinks = delivered_by.get(line.get("chunk_id"), set())
            keys = line.fields.get("natural_keys") or []
            for i, rid in enumerate(line.fields["record_ids"]):
                record = records.setdefault(str(rid), {"sinks": []})
                record["sinks"].extend(sorted(sinks - set(record["sinks"])))
                if i < len(keys):
                    record["key"] = keys[i]
    return {
        "correlation_id": correlation_id,
        "landed_key": landed_key or flow.source,
        "flow": {
            "status": flow.status,
            "read": flow.read,
            "hops": [
                {
                    "name": h.name,
                    "in": h.received,
                    "out": h.out,
                    "quarantined": h.quarantined,
                    "failed": h.failed,
                    "delivered": h.delivered,
                    "dead": h.dead,
                }
                for h in flow.hops
            ],
        },
        "records": records,
        "events": object_events(where.events, correlation_id, since_ms),
    }


def correlation_of_object(where: Where, key: str) -> tuple[str, str]:
    """(correlation id, key) of a landed object: `s3://bucket/key` or a landing bucket key."""
    from sluice.envelope import object_correlation_id

    bucket = where.stores.names.landing_bucket
    if key.startswith("s3://"):
        bucket, _, key = key.removeprefix("s3://").partition("/")
    try:
        head = where.stores.s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise NotFoundError(f"not found: no object s3://{bucket}/{key} ({exc})") from exc
    return object_correlation_id(bucket, key, str(head["ETag"]).strip('"')), key


def format_record(trace: RecordTrace) -> str:
    lines = [f"record {trace.record_id}"]
    about = [
        ("type", trace.type),
        ("key", trace.natural_key),
        ("correlation id", trace.correlation_id),
        ("source", trace.source),
    ]
    lines += [f"  {label}: {value}" for label, value in about if value]
    lines.append("  hops:")
    for hop in trace.hops:
        took = f" {hop.duration_ms:.1f} ms" if hop.duration_ms is not None else ""
        lines.append(
            f"    {hop.at or '?':<24} {hop.stage:<18} {hop.function or '-'}"
            f"  request {hop.request_id or '-'}  chunk {hop.chunk_id}{took}"
        )
        lines.append(f"      chunk: {hop.outcome}")
    if not trace.hops:
        lines.append("    (no ledger entries: the ledger may have expired)")
    lines.append("  ended:")
    for ending in trace.endings:
        lines.append(f"    {ending.kind}: {ending.where}")
        for name, value in ending.detail.items():
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            lines.append(f"      {name}: {shown}")
    return "\n".join(lines)


def format_object(summary: dict[str, Any]) -> str:
    flow = summary["flow"]
    lines = [
        f"object {summary['landed_key']}",
        f"  correlation id: {summary['correlation_id']}",
        f"  ledger: {flow['status']}, {flow['read']} read",
    ]
    for hop in flow["hops"]:
        delivered = f", delivered {hop['delivered']}" if hop["delivered"] is not None else ""
        lines.append(
            f"    {hop['name']:<22} in {hop['in']}, out {hop['out']}, quarantined "
            f"{hop['quarantined']}, failed {hop['failed']}{delivered}, dead {hop['dead']}"
        )
    events = summary.get("events") or []
    lines.append(f"  events ({len(events)}):")
    for event in events:
        counts = json.dumps(event["counts"], separators=(", ", ": ")) if event["counts"] else ""
        lines.append(f"    {event['time']:<21} {event['detail_type']:<20} {counts}".rstrip())
    records = summary["records"]
    lines.append(f"  records ({len(records)}):")
    for rid, what in sorted(records.items(), key=lambda kv: (kv[1].get("key") or "~", kv[0])):
        name = f"{rid}  {what.get('key') or '-':<8}"
        if what.get("quarantined"):
            lines.append(f"    {name}  quarantined by {what['quarantined']}: {what['reason']}")
        else:
            lines.append(f"    {name}  delivered to {', '.join(sorted(what['sinks']))}")
    return "\n".join(lines)


@click.command("trace")
@click.argument("target", required=False)
@click.option("--type", "record_type", default=None, help="Record type of --key (e.g. order).")
@click.option("--key", default=None, help="Natural key of the record (e.g. o-123).")
@stage_options
@json_option("Print JSON instead of text.")
@since_option(
    "30d",
    "How far back to search the logs (the ledger keeps 30 days): on AWS, Logs Insights "
    "bills the bytes it scans in this window.",
)
@log_dir_option
def trace_command(
    target: str | None,
    record_type: str | None,
    key: str | None,
    stage: str,
    prefix: str,
    as_json: bool,
    since_ms: int,
    log_dir: Path | None,
) -> None:
    """Follow a record through the stages: TARGET is a record id (r-...), a correlation id
    (ingest-... or pull-...) or the key of a landed object (incoming/... or s3://...); or
    give --type and --key for the record's natural key.

    For a record: every hop (time, function, request id, chunk id, outcome) and where it
    ended (curated object and line, index item, alert, quarantine with reason and raw
    input, dead letter with its error). For an object: its ledger counts, its pipeline
    events (time, detail-type, counts; `sluice logs events` shows them all) and each
    record's outcome. Locally from `sluice local up`'s log files and emulator, on AWS from
    CloudWatch Logs (Logs Insights), the ledger and the sinks. Exit 4 with "not found" if
    nothing matches.
    """
    from sluice import aws

    handled: tuple[type[Exception], ...] = (ConfigError, LogReadError, *aws.client_errors())
    if (record_type is None) != (key is None):
        raise click.UsageError("--type and --key go together")
    if (target is None) == (key is None):
        raise click.UsageError("give TARGET, or --type and --key")
    try:
        names = ResourceNames(stage=stage, prefix=prefix)
        where = open_where(names, log_dir)
        tracer = Tracer(where.logs, where.stores, where.spans, since_ms)
        docs: list[dict[str, Any]] = []
        texts: list[str] = []
        if key is not None and record_type is not None:
            for rid in tracer.record_ids_for_key(record_type, key):
                trace = tracer.trace_record(rid)
                trace.natural_key = trace.natural_key or key
                docs.append(trace.to_dict())
                texts.append(format_record(trace))
        elif target is not None and target.startswith("r-"):
            trace = tracer.trace_record(target)
            docs.append(trace.to_dict())
            texts.append(format_record(trace))
        else:
            assert target is not None
            cid, landed = (
                (target, None)
                if target.startswith(("ingest-", "pull-"))
                else correlation_of_object(where, target)
            )
            summary = object_summary(
                where, cid, sqs=aws.sqs(), landed_key=landed, since_ms=since_ms
            )
            docs.append(summary)
            texts.append(format_object(summary))
    except NotFoundError as exc:
        raise TraceNotFound(str(exc)) from exc
    except handled as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2, default=str))
    else:
        click.echo("\n\n".join(texts))
