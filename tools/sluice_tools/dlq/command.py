"""`sluice dlq list|show|redrive`: a stage's dead-letter and failures queues."""

from __future__ import annotations

import json
from typing import Any

import click

from sluice.config import ResourceNames
from sluice.errors import ConfigError
from sluice_tools.dlq.queues import (
    QueueNotFoundError,
    decode,
    depth,
    is_dead_letter,
    peek,
    queue_name,
    receiving_stage,
    resolve_queue,
    source_queues,
    stage_queue_urls,
)
from sluice_tools.dlq.redrive import RedriveRefusedError, redrive
from sluice_tools.options import json_option, listed_elsewhere, stage_options


def _sqs() -> Any:
    from sluice import aws

    return aws.sqs()


def _names(stage: str, prefix: str) -> ResourceNames:
    try:
        return ResourceNames(stage=stage, prefix=prefix)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'--prefix'") from exc


def _resolve(sqs: Any, queue: str, names: ResourceNames) -> str:
    try:
        return resolve_queue(sqs, queue, names)
    except QueueNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("dlq")
def dlq_group() -> None:
    """Inspect and redrive a stage's dead-letter (-dlq) and Lambda failures (-failures) queues.

    QUEUE is a queue URL, a full name, or a role resolved with the stage prefix
    (raw-dlq, clean-dlq, consumer-index-dlq, consumer-alerts-failures).
    """


@dlq_group.command("list")
@stage_options
@json_option("Print JSON.")
def list_command(stage: str, prefix: str, as_json: bool) -> None:
    """Every DLQ and failures queue of the stage, with its depth, the pipeline stage whose
    failures it holds (what `failed_stage` of its failed records names) and source queue(s)."""
    sqs, names = _sqs(), _names(stage, prefix)
    urls = stage_queue_urls(sqs, names)
    rows: list[dict[str, Any]] = []
    for url in urls:
        name = queue_name(url)
        if not is_dead_letter(name):
            continue
        sources = [queue_name(u) for u in source_queues(sqs, url, urls) if u != url]
        stage_of = receiving_stage(name, names)
        rows.append(
            {"queue": name, "url": url, **depth(sqs, url), "stage": stage_of, "sources": sources}
        )
    empty = f"no dead-letter or failures queue named {names.name('')}*"
    if listed_elsewhere(rows, as_json=as_json, empty=empty):
        return
    width = max(len(r["queue"]) for r in rows)
    stages = max(len("stage"), *(len(r["stage"]) for r in rows))
    click.echo(f"{'queue':<{width}}  {'visible':>7}  {'in flight':>9}  {'stage':<{stages}}  source")
    for r in rows:
        click.echo(
            f"{r['queue']:<{width}}  {r['visible']:>7}  {r['in_flight']:>9}  "
            f"{r['stage']:<{stages}}  {', '.join(r['sources']) or '-'}"
        )


@dlq_group.command("show")
@click.argument("queue")
@stage_options
@click.option(
    "--limit",
    default=10,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="At most this many messages.",
)
@json_option("Print JSON.")
def show_command(queue: str, stage: str, prefix: str, limit: int, as_json: bool) -> None:
    """Decode the messages of QUEUE: chunk id, type, correlation id, records, receive count,
    and why each is there: error type, message, stage and attempt (from the attributes of a
    chunk of records that failed in a consumer, `failed_from` naming the chunk they failed
    in; or from a Lambda on-failure record's responsePayload and requestContext).

    Messages are peeked, not consumed: received with a short visibility timeout, never
    deleted, made visible again at once (their receive count does go up).
    """
    sqs, names = _sqs(), _names(stage, prefix)
    url = _resolve(sqs, queue, names)
    shown: list[dict[str, Any]] = []
    for message in peek(sqs, url, limit):
        d = decode(message)
        shown.append(
            {
                "message_id": d.message_id,
                "kind": d.kind,
                "receive_count": d.receive_count,
                "reason": d.reason,
                "failure": d.failure.to_dict() if d.failure else None,
                "chunks": [
                    {
                        "chunk_id": c.chunk_id,
                        "type": c.type,
                        "correlation_id": c.correlation_id,
                        "records": len(c.records),
                    }
                    for c in d.chunks
                ],
                "objects": d.objects,
                "correlation_ids": sorted(set(d.correlation_ids)),
            }
        )
    if as_json:
        click.echo(json.dumps({"queue": queue_name(url), "messages": shown}, indent=2))
        return
    click.echo(f"{queue_name(url)}: {len(shown)} message(s) shown")
    for m in shown:
        click.echo(f"- message {m['message_id']} ({m['kind']}, received {m['receive_count']}x)")
        if m["reason"]:
            click.echo(f"    reason: {m['reason']}")
        if m["failure"] and m["failure"]["failed_from"]:
            click.echo(
                f"    failed records of chunk {m['failure']['failed_from']}: counted as failed "
                "in its ledger entry; a redrive processes them again"
            )
        for c in m["chunks"]:
            click.echo(
                f"    chunk {c['chunk_id']} type {c['type']} correlation {c['correlation_id']} "
                f"records {c['records']}"
            )
        for o in m["objects"]:
            click.echo(f"    object {o}")
        if not m["chunks"] and m["correlation_ids"]:
            click.echo(f"    correlation {', '.join(m['correlation_ids'])}")


@dlq_group.command("redrive")
@click.argument("queue")
@click.option(
    "--to",
    "target",
    default=None,
    help="Target queue (default: the queue whose RedrivePolicy names QUEUE).",
)
@stage_options
def redrive_command(queue: str, target: str | None, stage: str, prefix: str) -> None:
    """Move every message of QUEUE back to its source queue (or --to).

    Uses SQS StartMessageMoveTask; where the endpoint lacks it (moto), moves the messages
    itself: each is sent (body and message attributes unchanged) before it is deleted, and
    one that cannot be sent stays. Stages claim chunks by id, so a redriven chunk that was
    processed before is not processed twice. Failures queues (Lambda on-failure records) are
    refused: re-invoke the function with the record's requestPayload instead.
    """
    sqs, names = _sqs(), _names(stage, prefix)
    url = _resolve(sqs, queue, names)
    name = queue_name(url)
    try:
        if name.endswith("-failures"):
            raise RedriveRefusedError(
                f"{name} holds Lambda on-failure records, not messages for a queue: re-invoke "
                "the function with each record's requestPayload (`sluice dlq show` prints "
                "them), e.g. `aws lambda invoke --function-name FN --payload "
                "file://request.json out.json`, then delete the message"
            )
        if target is not None:
            target_url = _resolve(sqs, target, names)
        else:
            sources = source_queues(sqs, url, stage_queue_urls(sqs, names))
            if len(sources) != 1:
                found = ", ".join(queue_name(u) for u in sources) or "none"
                raise RedriveRefusedError(
                    f"cannot tell where {name} redrives to (source queues: {found}); use --to"
                )
            target_url = sources[0]
    except RedriveRefusedError as exc:
        raise click.ClickException(str(exc)) from exc
    result = redrive(sqs, url, target_url)
    if result.method == "move-task":
        click.echo(
            f"started a message move task from {name} to {queue_name(target_url)} "
            f"(task {result.task_handle}); `sluice dlq list` shows the DLQ draining"
        )
        return
    click.echo(
        f"moved {result.moved} message(s) from {name} to {queue_name(target_url)} "
        "(StartMessageMoveTask unavailable at this endpoint)"
    )
    if result.failed:
        raise click.ClickException(
            f"{len(result.failed)} message(s) could not be sent and stay in {name}: "
            + ", ".join(result.failed)
        )
