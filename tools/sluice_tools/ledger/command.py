"""`sluice ledger`: read the ledger table and the DLQs of a stage, reconcile, print, exit."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sluice.config import ResourceNames
from sluice.errors import ConfigError
from sluice_tools.ledger.filters import FilterPolicyError, SinkPolicy, consumer_policies
from sluice_tools.ledger.reconcile import (
    DEFAULT_GRACE,
    DEFAULT_RETENTION,
    Exit,
    Report,
    reconcile,
)
from sluice_tools.ledger.store import landed_objects, read_claims, read_ledger
from sluice_tools.options import correlation_id_option, json_option, repo_option, stage_options

if TYPE_CHECKING:
    from datetime import datetime


class LedgerReadError(click.ClickException):
    """The ledger, landing, claims or queues could not be read: no verdict (exit 5)."""

    exit_code = 5


COLUMNS = (
    ("hop", "name", 22),
    ("expected", "expected", 8),
    ("in", "received", 6),
    ("out", "out", 6),
    ("quar", "quarantined", 5),
    ("dup", "duplicate", 5),
    ("failed", "failed", 6),
    ("deliv", "delivered", 6),
    ("dlq", "dead", 5),
    ("missing", "missing", 7),
    ("status", "status", 0),
)


def ledger_report(
    names: ResourceNames,
    *,
    correlation_id: str | None = None,
    sinks: dict[str, SinkPolicy] | None = None,
    dynamodb: Any = None,
    sqs: Any = None,
    s3: Any = None,
    now: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
    retention: timedelta | None = DEFAULT_RETENTION,
) -> Report:
    """Read the stage's landing bucket, ledger, claims, DLQs and queue depths (AWS or the
    endpoint in AWS_ENDPOINT_URL) and reconcile them. `sinks` defaults to the repo's
    consumers; `now` (the clock), `grace` and `retention` as in `reconcile`."""
    from sluice import aws
    from sluice_tools.dlq.queues import (
        in_flight,
        is_dead_letter,
        landing_event_queues,
        queue_name,
        stage_queue_urls,
        waiting,
    )
    from sluice_tools.ledger.deadletters import dlq_records

    dynamodb = dynamodb or aws.dynamodb()
    sqs = sqs or aws.sqs()
    s3 = s3 or aws.s3()
    if sinks is None:
        sinks = repo_sinks()
    landed = landed_objects(s3, names.landing_bucket)
    events = landing_event_queues(s3, sqs, names.landing_bucket)
    claims = read_claims(dynamodb, names.idempotency_table)
    entries = read_ledger(dynamodb, names.ledger_table, correlation_id)
    urls = stage_queue_urls(sqs, names)
    dead = dlq_records(sqs, [u for u in urls if is_dead_letter(queue_name(u))], names=names)
    return reconcile(
        entries,
        dead,
        in_flight(sqs, urls, names),
        sinks=sinks,
        landed=landed,
        claims=claims,
        ingest_events=None if events is None else waiting(sqs, events),
        now=now,
        grace=grace,
        retention=retention,
        correlation_id=correlation_id,
    )


def repo_sinks(start: Path | None = None) -> dict[str, SinkPolicy]:
    """The consumers' filter policies from `consumers/*/resources.yaml` of the repository."""
    from sluice_tools.scaffold.generator import find_repo

    return consumer_policies(find_repo(start or Path.cwd()) / "consumers")


def format_report(report: Report) -> str:
    """The report as text: one table per correlation id, then what is not accounted for."""
    lines: list[str] = []
    for flow in report.flows:
        label, colon, detail = flow.status.partition(": ")
        lines.append(f"{flow.correlation_id}  {label.upper()}{colon}{detail}")
        lines.append(f"  source {flow.source or '?'}  type {flow.type or '?'}  read {flow.read}")
        if flow.landed_at:
            versions = ", ".join(flow.versions)
            lines.append(f"  landed {flow.landed_at}  version(s) {versions}")
        lines.append(
            "  "
            + "  ".join(
                f"{h:>{w}}" if w and i else f"{h:<{w}}" for i, (h, _, w) in enumerate(COLUMNS)
            ).rstrip()
        )
        for hop in flow.hops:
            cells = []
            for i, (_, attr, width) in enumerate(COLUMNS):
                value = getattr(hop, attr)
                text = "-" if value is None else str(value)
                cells.append(f"{text:<{width}}" if i == 0 or not width else f"{text:>{width}}")
            lines.append("  " + "  ".join(cells).rstrip())
        for problem in flow.problems:
            lines.append(f"  {problem.kind}: {problem.where}: {problem.message}")
        lines.append("")
    for problem in report.problems:
        lines.append(f"{problem.kind}: {problem.where}: {problem.message}")
    if report.dead_letters:
        listed = ", ".join(f"{q} {n}" for q, n in sorted(report.dead_letters.items()))
        lines.append(f"dead-letter messages: {listed}")
    if report.in_flight:
        listed = ", ".join(f"{s} {n}" for s, n in sorted(report.in_flight.items()))
        lines.append(f"messages in flight (by receiving stage): {listed}")
    lines.append(
        f"{len(report.flows)} correlation id(s): {report.status} (exit {report.exit_code})"
    )
    if report.exit_code == Exit.NOT_SETTLED:
        lines.append("in flight: wait and run again")
    return "\n".join(lines)


@click.command("ledger")
@stage_options
@correlation_id_option("Only this landed object (an id nothing carries: exit 4, not found).")
@click.option(
    "--grace",
    type=click.IntRange(min=0),
    default=int(DEFAULT_GRACE.total_seconds()),
    show_default=True,
    metavar="SECONDS",
    help="On AWS, an object landed less than this long ago that ingest has not recorded is "
    "in flight, older it is unaccounted (Lambda's async retries, ~3 min, + ingest's 900 s "
    "timeout). The local runtime's S3 event queues are looked at instead.",
)
@click.option(
    "--retention-days",
    type=click.IntRange(min=1),
    default=int(DEFAULT_RETENTION.total_seconds()) // 86400,
    show_default=True,
    help="Objects landed longer ago are not expected: the ledger's entries expire (TTL).",
)
@json_option("Print the report as JSON.")
@repo_option(
    "Repository root whose consumers/*/resources.yaml hold the filter policies "
    "(default: found above the current directory)."
)
def ledger_command(
    stage: str,
    prefix: str,
    correlation_id: str | None,
    grace: int,
    retention_days: int,
    as_json: bool,
    repo: Path | None,
) -> None:
    """Reconcile the ledger, anchored at the landing: every object version landed in
    incoming/ of the landing bucket (scheduled pulls land there too) is expected, and every
    record of it must be in each sink its routes lead to, or in quarantine.

    Reads the landing bucket's object versions, the ledger and idempotency tables, the
    stage's queue depths, and peeks into every DLQ and failures queue (AWS, or the endpoint
    in AWS_ENDPOINT_URL). Peeking receives messages with a short visibility timeout and
    never deletes them (they are made visible again at once), but it does raise their
    receive count.

    \b
    Exit status (the worst flow's; 1 before 3 before 2):
      0  balanced: every record reached its sinks or quarantine (objects ingest skipped
         on purpose show as "skipped: <reason>")
      1  unaccounted: records (or a landed object) nothing accounts for, or an
         inconsistent ledger
      2  in flight: not settled, work is pending (a queue, a claim, an object younger
         than --grace): wait and run again
      3  dead letters: records wait in a DLQ or failures queue (`sluice dlq show`)
      4  not found: --correlation-id names nothing landed, recorded or dead-lettered
    5  could not read what it reconciles (configuration, a missing resource, AWS error)
    """
    from sluice import aws
    from sluice_tools.scaffold.errors import ScaffoldError

    handled: tuple[type[Exception], ...] = (
        ConfigError,
        FilterPolicyError,
        ScaffoldError,
        *aws.client_errors(),
    )
    try:
        names = ResourceNames(stage=stage, prefix=prefix)
        sinks = repo_sinks(repo)
        report = ledger_report(
            names,
            correlation_id=correlation_id,
            sinks=sinks,
            grace=timedelta(seconds=grace),
            retention=timedelta(days=retention_days),
        )
    except handled as exc:
        raise LedgerReadError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(format_report(report))
    click.get_current_context().exit(report.exit_code)
