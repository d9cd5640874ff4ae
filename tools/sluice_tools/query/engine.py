"""`sluice query`'s engine: a stage's curated objects as DuckDB tables, one per record type.

Each registered type is a table named like its Glue table (`deploy.glue.table_name`), with
the same columns in the same order, built from the same mapping (`deploy.glue.
table_columns`), then the partition columns `dt` and `hour`: a query that runs here runs
on Athena. The objects are downloaded from the curated bucket (the emulator's, or S3 on
AWS: fine for small data; Athena is for the rest) into a temporary folder laid out as the
keys are, and read with DuckDB's built-in JSON reader (its httpfs extension would be a
download). Only the types the SQL names are downloaded; the others are empty tables.
Once loaded, the database is closed to files (`enable_external_access`): the SQL reads
the tables and nothing else.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice_tools.deploy.glue import PARTITION_KEYS, TableSpec, quote

if TYPE_CHECKING:
    import duckdb

CURATED_SUFFIX = ".jsonl.gz"  # consumers/warehouse/chalicelib/curated.py SUFFIX
DOWNLOAD_THREADS = 8


class QueryError(Exception):
    """DuckDB refused or failed the SQL; the message is DuckDB's."""


class CuratedReadError(Exception):
    """The curated objects could not be listed or read."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    loaded: dict[str, int]  # table -> objects read


def named_tables(sql: str, tables: Iterable[TableSpec]) -> list[TableSpec]:
    """The tables whose name appears as a word in `sql` (quoted or not): what to load.

    A word that only looks like a table (`order` in ORDER BY) loads it for nothing: harmless.
    """
    found = []
    for table in tables:
        word = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(table.name)}(?![A-Za-z0-9_])", re.I)
        if word.search(sql):
            found.append(table)
    return found


def type_prefix(table: TableSpec) -> str:
    return f"type={table.type_name}/"


def download_curated(
    s3: Any, bucket: str, tables: Sequence[TableSpec], dest: Path
) -> dict[str, list[Path]]:
    """Each table's curated objects under `dest/<table>/dt=…/hour=…/` ({table: files})."""
    jobs: list[tuple[str, Path]] = []
    files: dict[str, list[Path]] = {t.name: [] for t in tables}
    try:
        for table in tables:
            prefix = type_prefix(table)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents") or []:
                    key = str(item["Key"])
                    if not key.endswith(CURATED_SUFFIX):
                        continue
                    path = dest / table.name / key[len(prefix) :]
                    jobs.append((key, path))
                    files[table.name].append(path)
    except Exception as exc:
        raise CuratedReadError(f"cannot list s3://{bucket}/: {exc}") from exc

    def fetch(job: tuple[str, Path]) -> None:
        key, path = job
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise CuratedReadError(f"cannot read s3://{bucket}/{key}: {exc}") from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)

    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        list(pool.map(fetch, jobs))
    return files


def create_table(con: duckdb.DuckDBPyConnection, table: TableSpec, files: Sequence[Path]) -> None:
    """`table` in `con`: the rows of `files`, or empty with the same columns."""
    columns = [(c.name, c.type.duckdb()) for c in table.columns]
    if not files:
        declared = [f"{quote(name)} {type_}" for name, type_ in columns]
        declared += [f"{quote(key)} VARCHAR" for key in PARTITION_KEYS]
        con.execute(f"CREATE TABLE {quote(table.name)} ({', '.join(declared)})")
        return
    # DuckDB's relation API: no SQL text is built from the paths or the column names.
    rows = con.read_json(
        [str(p) for p in sorted(files)],
        format="newline_delimited",
        compression="gzip",
        columns=dict(columns),
        hive_partitioning=True,
        hive_types=dict.fromkeys(PARTITION_KEYS, "VARCHAR"),
    )
    rows.create(table.name)


def load(tables: Sequence[TableSpec], files: dict[str, list[Path]]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with every table, closed to files afterwards."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        for table in tables:
            create_table(con, table, files.get(table.name, []))
    except duckdb.Error as exc:
        con.close()
        raise CuratedReadError(f"cannot load the curated objects: {exc}") from exc
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def execute(con: duckdb.DuckDBPyConnection, sql: str, tables: Sequence[TableSpec]) -> QueryResult:
    import duckdb

    try:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchall() if cursor.description else []
    except duckdb.CatalogException as exc:
        message = str(exc)
        if "Table with name" in message:
            known = ", ".join(t.name for t in tables) or "none"
            message += f"\nThe tables are the registered record types: {known}"
        raise QueryError(message) from None
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    return QueryResult(columns, rows, {})


def run_query(
    sql: str,
    tables: Sequence[TableSpec],
    *,
    s3: Any,
    bucket: str,
    workdir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> QueryResult:
    """Run `sql` over the curated objects of `bucket` (see the module's docstring)."""
    wanted = named_tables(sql, tables)
    with tempfile.TemporaryDirectory(prefix="sluice-query-", dir=workdir) as tmp:
        files = download_curated(s3, bucket, wanted, Path(tmp))
        if log:
            for table in wanted:
                found = len(files[table.name])
                log(f"{table.name}: {found} object(s) in s3://{bucket}/{type_prefix(table)}")
        con = load(tables, files)
    try:
        result = execute(con, sql, tables)
    finally:
        con.close()
    return QueryResult(result.columns, result.rows, {n: len(f) for n, f in files.items()})
