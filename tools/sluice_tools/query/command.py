"""`sluice query "SQL"`: the SQL Athena runs on the Glue tables, run locally with DuckDB."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import click

from sluice.errors import ConfigError
from sluice_tools.options import stage_options


class QueryFailed(click.ClickException):
    """DuckDB refused or failed the SQL (exit 1)."""

    exit_code = 1


class CuratedUnreadable(click.ClickException):
    """The registry or the curated bucket could not be read: no result (exit 5)."""

    exit_code = 5


def cell(value: Any) -> str:
    """A value as text: NULL, JSON for structs and lists, else str()."""
    if value is None:
        return "NULL"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns with a header rule and a row count, as psql prints them."""
    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in text)]) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("-+-".join("-" * w for w in widths))
    for row in text:
        lines.append(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(lines)


def format_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """One JSON array of objects, column names as keys."""
    return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2, default=str)


def format_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV with a header; NULL is an empty field, structs and lists are JSON."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow("" if v is None else cell(v) for v in row)
    return out.getvalue().rstrip("\n")


FORMATS = {"table": format_table, "json": format_json, "csv": format_csv}


@click.command("query")
@click.argument("sql")
@stage_options
@click.option("--json", "output", flag_value="json", help="Print a JSON array of row objects.")
@click.option("--csv", "output", flag_value="csv", help="Print CSV with a header line.")
@click.option("--verbose", "-v", is_flag=True, help="Say how many objects each table read.")
def query_command(sql: str, stage: str, prefix: str, output: str | None, verbose: bool) -> None:
    """Run SQL over a stage's curated data with DuckDB: each record type is a table.

    The tables are the Glue tables `sluice deploy` makes for Athena (one per registered
    type, named after it: `select count(*) from "order"`), with the same columns: the
    type's schema, then _record_id, _ingested_at, _correlation_id, _type, then the
    partitions dt and hour. The objects of the types the SQL names are downloaded from the
    curated bucket first: meant for a local stage, or small data on AWS (use Athena there).

    \b
    Exit status: 0 the result is printed, 1 the SQL failed (DuckDB's message), 5 the
    registry or the curated bucket could not be read.
    """
    from sluice_tools.deploy.glue import TableSchemaError, registered_tables
    from sluice_tools.deploy.target import Target
    from sluice_tools.query.engine import CuratedReadError, QueryError, run_query

    target = Target.from_env(stage, prefix)
    try:
        tables = registered_tables(target.root)
        result = run_query(
            sql,
            tables,
            s3=target.client("s3"),
            bucket=target.names.curated_bucket,
            log=(lambda line: click.echo(line, err=True)) if verbose else None,
        )
    except QueryError as exc:
        raise QueryFailed(str(exc)) from None
    except (ConfigError, TableSchemaError, CuratedReadError) as exc:
        raise CuratedUnreadable(str(exc)) from None
    click.echo(FORMATS[output or "table"](result.columns, result.rows))
