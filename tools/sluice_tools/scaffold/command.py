"""The `sluice new-consumer` command: scaffold a consumer app, its resources and its tests."""

from __future__ import annotations

from pathlib import Path

import click

from sluice_tools.options import repo_option
from sluice_tools.scaffold.contract import unread_attribute_warnings
from sluice_tools.scaffold.errors import ScaffoldError
from sluice_tools.scaffold.generator import find_repo, new_consumer, new_event_consumer


@click.command("new-consumer")
@click.argument("name")
@click.option(
    "--filter",
    "filter_json",
    default=None,
    help="SNS filter policy (a JSON object) on the router's attributes, "
    'e.g. \'{"priority": ["high"]}\'.',
)
@click.option(
    "--on-event",
    "on_events",
    multiple=True,
    help='A pipeline event to receive instead of records, e.g. "Object Delivered" '
    "(repeat for several): an EventBridge rule on the stage's bus feeds the consumer's queue.",
)
@click.option(
    "--direct",
    is_flag=True,
    help="Subscribe the Lambda to the topic directly (no queue); for light, fast consumers.",
)
@repo_option()
def new_consumer_command(
    name: str, filter_json: str | None, on_events: tuple[str, ...], direct: bool, repo: Path | None
) -> None:
    """Create consumers/NAME (app, resources.yaml, IAM policies) and tests/consumers/NAME.

    Give --filter for a consumer of records: the filter policy must use only attributes the
    router sets (router/chalicelib/routing.json, plus record_type and correlation_id) and
    values it declares. Afterwards it warns about each routing attribute no consumer's
    filter policy reads (it only multiplies messages). Or give --on-event for a consumer of
    the pipeline's events (Object Landed, Object Delivered, Records Quarantined, Object
    Stuck): the "cross-service" consumer another team's job starts from.
    """
    if (filter_json is None) == (not on_events):
        raise click.UsageError("give --filter (records) or --on-event (pipeline events)")
    if on_events and direct:
        raise click.UsageError("--direct is for record consumers; --on-event uses a queue")
    try:
        root = find_repo(repo, exact=True) if repo is not None else find_repo(Path.cwd())
        if on_events:
            written = new_event_consumer(root, name, on_events)
        else:
            assert filter_json is not None
            written = new_consumer(root, name, filter_json, direct=direct)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from exc
    kind = "event" if on_events else "direct SNS" if direct else "SQS"
    click.echo(f"Created {kind} consumer {name!r} ({len(written)} files):")
    for path in written:
        click.echo(f"  {path.relative_to(root)}")
    handler = "handle_pipeline_event" if on_events else "handle_record"
    click.echo(
        f"Next: edit consumers/{name}/chalicelib/service.py ({handler}) and the grants "
        f"in consumers/{name}/deploy.yaml, then run: pytest tests/consumers/{name}"
    )
    click.echo(
        f"Next: deploy it: sluice deploy --stage STAGE --only consumers/{name} (locally, "
        f"with `sluice local up` running: sluice deploy --only consumers/{name})"
    )
    if on_events:
        return  # no filter policy: the routing attributes are not its business
    for warning in unread_attribute_warnings(root):
        click.echo(f"Warning: {warning}", err=True)
