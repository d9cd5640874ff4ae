"""`sluice replay quarantine`: send quarantined records back through cleanse after a fix."""

from __future__ import annotations

import json
from datetime import datetime

import click

from sluice.config import ResourceNames
from sluice.errors import ConfigError
from sluice_tools.options import dry_run_option, json_option, stage_options
from sluice_tools.replay.quarantine import (
    QuarantineReplay,
    ReplayError,
    Result,
    Selection,
    parse_since,
)


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _names(stage: str, prefix: str) -> ResourceNames:
    try:
        return ResourceNames(stage=stage, prefix=prefix)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'--prefix'") from exc


@click.group("replay")
def replay_group() -> None:
    """Send rejected records through the pipeline again after a fix, once each."""


def _echo_items(result: Result) -> None:
    for item in result.items:
        click.echo(
            f"{item.action:<17.17}  {item.key}  {item.correlation_id}  reason: {item.reason[:80]}"
        )


@replay_group.command("quarantine")
@stage_options
@click.option(
    "--from-stage",
    "from_stage",
    default=None,
    metavar="STAGE",
    help="Only documents quarantined by this pipeline stage (cleanse, ingest, router, ...). "
    "Only cleanse's are replayable; the others are listed with what to do instead.",
)
@click.option("--type", "record_type", default=None, help="Only records of this type.")
@click.option(
    "--reason-contains",
    default=None,
    metavar="TEXT",
    help="Only documents whose reason contains TEXT (case-insensitive).",
)
@click.option(
    "--since",
    default=None,
    callback=_since,
    metavar="ISO|DURATION",
    help="Only documents quarantined at or after this time: 2026-12-04T10:00:00Z, or back "
    "from now: 90m, 2h, 3d, 1w.",
)
@dry_run_option("List what would be replayed; send nothing.")
@json_option("Print the result as JSON.")
def quarantine_command(
    stage: str,
    prefix: str,
    from_stage: str | None,
    record_type: str | None,
    reason_contains: str | None,
    since: datetime | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Send quarantined records back through cleanse (after a schema or rule fix).

    Each record cleanse refused becomes a chunk of its own on the raw queue, under its
    object's correlation id, with a chunk id derived from its quarantine document: replaying
    the same selection twice delivers each record once. A record refused again lands in
    quarantine again with the new reason and can be replayed again. Each replayed chunk has a
    `replay` entry in the ledger (`sluice ledger` shows the replay hop).

    \b
    Exit status: 0 done (or nothing matched), 1 a chunk could not be sent.
    """
    from sluice import aws

    names = _names(stage, prefix)
    selection = Selection(from_stage, record_type, reason_contains, since)
    replay = QuarantineReplay(
        s3=aws.s3(),
        sqs=aws.sqs(),
        dynamodb=aws.dynamodb(),
        quarantine_bucket=names.quarantine_bucket,
        raw_queue=names.raw_queue,
        ledger_table=names.ledger_table,
        payload_bucket=names.payload_bucket,
        progress=lambda line: click.echo(line, err=True),
    )
    handled: tuple[type[Exception], ...] = (ReplayError, *aws.client_errors())
    try:
        result = replay.run(selection, dry_run=dry_run)
    except handled as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    if dry_run:
        _echo_items(result)
    click.echo(result.summary())
    if not dry_run and result.sent_records:
        click.echo("Next: sluice ledger (the replay hop, and where the records went)")


@replay_group.command("landing")
@stage_options
@click.option(
    "--key-prefix",
    "--from",
    "key_prefix",
    required=True,
    metavar="P",
    help="Landed objects whose key starts with P (incoming/<type>/...).",
)
@click.option(
    "--since",
    default=None,
    callback=_since,
    metavar="ISO|DURATION",
    help="Only objects landed at or after this time (as for `replay quarantine`).",
)
@click.option(
    "--generation",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="The replay's generation: the same one again is a no-op; a later deliberate "
    "re-ingest of the same objects takes the next.",
)
@click.option(
    "--type",
    "record_type",
    default=None,
    help="Re-key into incoming/<type>/ (an object landed under the wrong type folder).",
)
@click.option(
    "--include-delivered",
    is_flag=True,
    help="Also objects ingest already sent records of (those records are delivered again).",
)
@dry_run_option("List what would be re-ingested; copy nothing.")
@json_option("Print the result as JSON.")
def landing_command(
    stage: str,
    prefix: str,
    key_prefix: str,
    since: datetime | None,
    generation: int,
    record_type: str | None,
    include_delivered: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Re-ingest landed objects (after a parser fix, or a type registered since).

    Each object is copied to incoming/<type>/_replay/g<N>/<rest of its key>, which ingest
    reads as a new object (its claim, correlation id and record ids come from bucket, key
    and ETag); the copy names the original in its metadata, and the original's ledger flow
    gets a `replay` note naming the copy. Replaying the same generation twice copies once.
    Objects whose records ingest already sent on are skipped unless --include-delivered.
    """
    from sluice import aws
    from sluice_tools.replay.landing import LandingReplay

    names = _names(stage, prefix)
    replay = LandingReplay(
        s3=aws.s3(),
        dynamodb=aws.dynamodb(),
        landing_bucket=names.landing_bucket,
        ledger_table=names.ledger_table,
        progress=lambda line: click.echo(line, err=True),
    )
    handled: tuple[type[Exception], ...] = (ValueError, *aws.client_errors())
    try:
        result = replay.run(
            key_prefix,
            generation=generation,
            record_type=record_type,
            since=since,
            include_delivered=include_delivered,
            dry_run=dry_run,
        )
    except handled as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    for item in result.items:
        click.echo(f"{item.action}: {item.key} -> {item.target}")
    click.echo(result.summary())
