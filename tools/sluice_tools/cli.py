"""The `sluice` command line: one click group, one subcommand per operator task.

`sluice --help` lists each command once, from the commands themselves (their docstrings'
first sentences), so the list cannot fall behind what exists.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version

import click

from sluice.config import ResourceNames
from sluice.errors import ConfigError
from sluice_tools.deploy.command import deploy_command, doctor_command
from sluice_tools.dlq.command import dlq_group
from sluice_tools.ledger.command import ledger_command
from sluice_tools.local.commands import local_group
from sluice_tools.logs.command import logs_command
from sluice_tools.options import json_option, stage_options
from sluice_tools.query.command import query_command
from sluice_tools.replay import replay_group
from sluice_tools.scaffold.command import new_consumer_command
from sluice_tools.trace.command import trace_command
from sluice_tools.types.command import new_type_command, types_group

DISTRIBUTION = "sluice-tools"


def _version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(_version(), "-V", "--version", prog_name="sluice")
def main() -> None:
    """Operate Sluice, the serverless data pipeline: one command per task, by stage.

    With a `sluice local up` running (and no AWS_ENDPOINT_URL set), --stage defaults to its
    stage and the commands use its endpoint.
    """


@main.command()
@stage_options
@json_option("Print a JSON object instead of a table.")
def info(stage: str, prefix: str, as_json: bool) -> None:
    """Print the names of a stage's platform resources (buckets, queues, topics, tables)."""
    try:
        names = ResourceNames(stage=stage, prefix=prefix)
    except ConfigError as exc:  # the stage is valid by now (callback): the prefix is not
        raise click.BadParameter(str(exc), param_hint="'--prefix'") from exc
    resources = names.as_dict()
    if as_json:
        click.echo(json.dumps(resources, indent=2))
        return
    click.echo(f"Resources of stage {stage!r} (prefix {prefix!r}):")
    width = max(len(role) for role in resources)
    for role, name in resources.items():
        click.echo(f"  {role:<{width}}  {name}")


main.add_command(new_consumer_command)
main.add_command(ledger_command)
main.add_command(dlq_group)
main.add_command(deploy_command)
main.add_command(doctor_command)
main.add_command(local_group)
main.add_command(trace_command)
main.add_command(logs_command)
main.add_command(query_command)
main.add_command(replay_group)
main.add_command(new_type_command)
main.add_command(types_group)
