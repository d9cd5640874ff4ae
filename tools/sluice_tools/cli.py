"""The `sluice` command line: one click group, one subcommand per operator task.

Commands arrive with the work that implements them; the group's help lists the plan so
`sluice --help` says what exists today and what is coming, and nothing pretends to work.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version

import click

from sluice.config import ResourceNames, validate_stage
from sluice.errors import ConfigError
from sluice_tools.deploy.command import deploy_command, doctor_command
from sluice_tools.dlq.command import dlq_group
from sluice_tools.ledger.command import ledger_command
from sluice_tools.local.commands import local_group
from sluice_tools.scaffold.command import new_consumer_command

DISTRIBUTION = "sluice-tools"


def _version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _validate_stage(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return validate_stage(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(_version(), "-V", "--version", prog_name="sluice")
def main() -> None:
    """Operate Sluice, the serverless data pipeline: one command per task, by stage.

    Available now:

    \b
      info           the AWS resource names of a stage
      new-consumer   scaffold a consumer app with its resources and tests
      ledger         reconcile the ledger: every record in a sink, quarantine or a DLQ
      dlq            inspect and redrive dead-letter queues
      deploy         deploy a stage: platform stack, consumer stacks, every Chalice
                     app in order, post-deploy settings, then doctor
      doctor         check a deployed stage: DLQs, partial batch responses,
                     on-failure destinations, filter policies, alarms
      local          run the whole pipeline on this machine on moto's server
                     (up, run, down, fire)
    """


@main.command()
@click.option(
    "--stage",
    required=True,
    envvar="SLUICE_STAGE",
    show_envvar=True,
    callback=_validate_stage,
    help="Stage name, e.g. dev or prod: lower-case letters, digits and '-'.",
)
@click.option(
    "--prefix",
    default="sluice",
    show_default=True,
    envvar="SLUICE_RESOURCE_PREFIX",
    show_envvar=True,
    help="Resource name prefix (S3 bucket names are global; an account may need its own).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of a table.")
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
