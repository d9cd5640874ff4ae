"""The click options several `sluice` commands share, each declared once.

`stage_options` is the one --stage/--prefix pair of every command that works on a stage
(deploy, doctor, info, ledger, dlq, logs, trace, query, replay, types check): with a
`sluice local up` running, its stage and endpoint by default. `json_option` and
`repo_option` are the --json switch and --repo root the commands word alike;
`listed_elsewhere` what a listing prints for --json or no rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from sluice.config import validate_stage
from sluice.errors import ConfigError
from sluice_tools.localstate import default_stage, local_endpoint_for, use_local_endpoint

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_PREFIX = "sluice"


def _stage(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    if value is None:  # no option, no SLUICE_STAGE, no local up (click takes None as given)
        raise click.MissingParameter(ctx=ctx, param=param)
    try:
        stage = validate_stage(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc
    use_local_endpoint(stage)
    return stage


def _default_prefix() -> str:
    """A live `local up`'s prefix for its stage (when it says), else sluice."""
    ctx = click.get_current_context(silent=True)
    stage = ctx.params.get("stage") if ctx else None
    found = local_endpoint_for(stage) if stage else None
    return (found.prefix if found else None) or DEFAULT_PREFIX


stage_option = click.option(
    "--stage",
    required=True,
    default=default_stage,
    envvar="SLUICE_STAGE",
    show_envvar=True,
    callback=_stage,
    help="Stage name: dev, prod, local, ... (lower-case letters, digits and '-'); default: "
    "the stage of a running `sluice local up`, whose endpoint is then used.",
)
prefix_option = click.option(
    "--prefix",
    default=_default_prefix,
    show_default=DEFAULT_PREFIX,
    envvar="SLUICE_RESOURCE_PREFIX",
    show_envvar=True,
    help="Resource name prefix (S3 bucket names are global; an account may need its own).",
)


def stage_options(func: F) -> F:
    """--stage and --prefix (the command gets `stage` and `prefix`), in that order."""
    return stage_option(prefix_option(func))


def json_option(help: str = "Print JSON instead of text.") -> Callable[[F], F]:
    """--json, given to the command as `as_json`."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def repo_option(
    help: str = "Repository root (default: found above the current directory).",
) -> Callable[[F], F]:
    """--repo DIR, given to the command as `repo` (None: found from the current directory)."""
    return click.option(
        "--repo", type=click.Path(file_okay=False, path_type=Path), default=None, help=help
    )


def only_option(help: str) -> Callable[[F], F]:
    """--only APP (repeatable), given to the command as `only`: a tuple, empty for all."""
    return click.option("--only", multiple=True, metavar="APP", help=help)


def dry_run_option(help: str) -> Callable[[F], F]:
    """--dry-run, given to the command as `dry_run`."""
    return click.option("--dry-run", is_flag=True, help=help)


def correlation_id_option(help: str) -> Callable[[F], F]:
    """--correlation-id ID, given to the command as `correlation_id` (None: every one)."""
    return click.option("--correlation-id", default=None, help=help)


def listed_elsewhere(rows: list[dict[str, Any]], *, as_json: bool, empty: str) -> bool:
    """What a listing command prints before its table: the rows as JSON (`--json`), or
    `empty` when there are none. True if that was all (no table to print)."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return True
    if not rows:
        click.echo(empty)
        return True
    return False
