"""The `sluice new-consumer` command: scaffold a consumer app, its resources and its tests."""

from __future__ import annotations

from pathlib import Path

import click

from sluice_tools.scaffold.contract import unread_attribute_warnings
from sluice_tools.scaffold.errors import ScaffoldError
from sluice_tools.scaffold.generator import find_repo, new_consumer


@click.command("new-consumer")
@click.argument("name")
@click.option(
    "--filter",
    "filter_json",
    required=True,
    help="SNS filter policy (a JSON object) on the router's attributes, "
    'e.g. \'{"priority": ["high"]}\'.',
)
@click.option(
    "--direct",
    is_flag=True,
    help="Subscribe the Lambda to the topic directly (no queue); for light, fast consumers.",
)
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Repository root (default: found above the current directory).",
)
def new_consumer_command(name: str, filter_json: str, direct: bool, repo: Path | None) -> None:
    """Create consumers/NAME (app, resources.yaml, IAM policies) and tests/consumers/NAME.

    The filter policy must use only attributes the router sets (router/chalicelib/routing.json,
    plus record_type and correlation_id) and values it declares. Afterwards it warns about
    each routing attribute no consumer's filter policy reads (it only multiplies messages).
    """
    try:
        root = find_repo(repo, exact=True) if repo is not None else find_repo(Path.cwd())
        written = new_consumer(root, name, filter_json, direct=direct)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from exc
    kind = "direct SNS" if direct else "SQS"
    click.echo(f"Created {kind} consumer {name!r} ({len(written)} files):")
    for path in written:
        click.echo(f"  {path.relative_to(root)}")
    click.echo(
        f"Next: edit consumers/{name}/chalicelib/service.py (handle_record) and the grants "
        f"in consumers/{name}/deploy.yaml, then run: pytest tests/consumers/{name}"
    )
    click.echo(
        f"Next: deploy it: sluice deploy --stage STAGE --only consumers/{name} (locally, "
        f"with `sluice local up` running: sluice deploy --only consumers/{name})"
    )
    for warning in unread_attribute_warnings(root):
        click.echo(f"Warning: {warning}", err=True)
