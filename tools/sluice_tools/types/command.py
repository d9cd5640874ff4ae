"""`sluice new-type`, `sluice types` and `sluice types check` (thin: options → modules)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sluice_tools.options import json_option, listed_elsewhere, repo_option, stage_options


def _root(repo: Path | None) -> Path:
    from sluice_tools.scaffold.errors import ScaffoldError
    from sluice_tools.scaffold.generator import find_repo

    try:
        return find_repo(repo, exact=True) if repo is not None else find_repo(Path.cwd())
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("new-type")
@click.argument("name")
@click.option(
    "--sample",
    "sample",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sample records: JSON Lines (one object a line) or a JSON array of objects.",
)
@click.option(
    "--natural-key",
    default=None,
    metavar="FIELD",
    help="The field that identifies a record (default: proposed from the samples).",
)
@click.option("--description", default=None, help="What the type is (type.json).")
@repo_option()
def new_type_command(
    name: str,
    sample: Path,
    natural_key: str | None,
    description: str | None,
    repo: Path | None,
) -> None:
    """Create record type NAME (types/NAME/) with a JSON Schema inferred from sample records.

    The schema requires the fields present in every sample, allows no others, and adds a
    pattern only where every sample value fits (ISO timestamps, dates, e-mail addresses).
    The natural key is a string field present and unique in every sample (NAME_id or id
    preferred). Ingest, cleanse, the index and the tests take the type from the registry.
    """
    from sluice_tools.types.newtype import NewTypeError, new_type

    root = _root(repo)
    try:
        created = new_type(root, name, sample, natural_key=natural_key, description=description)
    except NewTypeError as exc:
        raise click.ClickException(str(exc)) from exc
    draft = created.draft
    required = draft.schema.get("required") or []
    fields = draft.schema.get("properties") or {}
    click.echo(
        f"Created record type {name!r} (version 1) from {created.records} sample records "
        f"in {sample}:"
    )
    for path in created.files:
        click.echo(f"  {path.relative_to(root)}")
    click.echo(f"Fields: {len(fields)} ({len(required)} required: {', '.join(required)})")
    others = [c for c in draft.key_candidates if c != draft.natural_key]
    also = f" (other candidates: {', '.join(others)})" if others else ""
    click.echo(f"Natural key: {draft.natural_key}{also}")
    if draft.rules.get("timestamps"):
        click.echo(f"Timestamps (made UTC by cleanse): {', '.join(draft.rules['timestamps'])}")
    click.echo("Next:")
    click.echo(f"  review: types/{name}/ schema.json, rules.json, type.json (routing: none yet)")
    click.echo(f"  test:   nox -s tests -- tests/cleanse   (runs types/{name}/sample.jsonl)")
    click.echo("  deploy: sluice deploy --stage STAGE   (or locally: sluice local up)")
    click.echo(f"  upload: files to the landing bucket as incoming/{name}/<file name>")
    click.echo(f"  local:  sluice local run FILE --type {name}")


@click.group("types", invoke_without_command=True)
@json_option("Print JSON instead of a table.")
@repo_option()
@click.pass_context
def types_group(ctx: click.Context, as_json: bool, repo: Path | None) -> None:
    """List the record types of the registry (types/): version, natural key, routing."""
    if ctx.invoked_subcommand is not None:
        return
    from sluice.errors import ConfigError
    from sluice.registry import load_registry

    root = _root(repo)
    try:
        registry = load_registry(root / "types")
        specs = [registry.get(name) for name in registry.names()]
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = [
        {
            "name": spec.name,
            "version": spec.version,
            "natural_key": spec.natural_key,
            "routing": sorted(spec.routing),
            "description": spec.description,
            "path": str(spec.path.relative_to(root)),
        }
        for spec in specs
    ]
    empty = f"No record types in {root / 'types'}: add one with sluice new-type."
    if listed_elsewhere(rows, as_json=as_json, empty=empty):
        return
    _table(rows)


def _table(rows: list[dict[str, Any]]) -> None:
    headers = ("TYPE", "VERSION", "NATURAL KEY", "ROUTING", "DESCRIPTION")
    cells = [
        (
            r["name"],
            str(r["version"]),
            r["natural_key"],
            ", ".join(r["routing"]) or "-",
            r["description"],
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers[:-1])]
    for line in [headers, *cells]:
        lead = "  ".join(f"{v:<{w}}" for v, w in zip(line[:-1], widths, strict=True))
        click.echo(f"{lead}  {line[-1]}".rstrip())


@types_group.command("check")
@click.argument("name")
@stage_options
@click.option(
    "--sample",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many of the newest curated records to check.",
)
@json_option("Print a JSON object instead of text.")
@repo_option()
def check_command(
    name: str, stage: str, prefix: str, sample: int, as_json: bool, repo: Path | None
) -> None:
    """Check type NAME's schema, as edited here, against the records the warehouse holds.

    Reads up to --sample of the newest rows of the stage's curated bucket for NAME and
    validates each as cleanse would; exit 1 if any would be rejected (2: could not check).
    Warns when the schema differs from git HEAD's while type.json's version does not.
    """
    from sluice_tools.deploy.target import Target
    from sluice_tools.types.check import CheckError, check_type

    root = _root(repo)
    target = Target.from_env(stage, prefix, root=root)
    if target.emulator and not target.endpoint_url:
        raise click.ClickException(
            f"stage {stage!r} runs on the local emulator, and no `sluice local up` of it is "
            "running: start it (its state is kept between ups), then check again"
        )
    try:
        report = check_type(
            root, name, s3=target.client("s3"), bucket=target.names.curated_bucket, sample=sample
        )
    except CheckError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(2) from exc
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(report.render())
    for warning in report.warnings if as_json else ():
        click.echo(f"Warning: {warning}", err=True)
    if not report.ok:
        raise SystemExit(1)
