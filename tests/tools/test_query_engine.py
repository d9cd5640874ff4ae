"""The query engine's tables: a column that may hold several kinds of value holds the JSON
text, as the Glue table's string column does; only the tables the SQL names are loaded."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from sluice_tools.deploy.glue import TableSpec, table_columns
from sluice_tools.query.engine import QueryError, execute, load, named_tables

SCHEMA = {
    "properties": {
        "id": {"type": "string"},
        "value": {"type": ["string", "integer", "boolean", "null"]},
        "extra": {},
        "tags": {"type": "array", "items": {"type": "string"}},
    }
}


def table(name: str = "thing") -> TableSpec:
    return TableSpec(name, 1, "", tuple(table_columns(name, SCHEMA)))


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows)))
    return path


def test_mixed_values_are_json_text_and_partitions_come_from_the_path(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"id": "a", "value": 3, "extra": {"k": [1]}, "tags": ["x"], "_type": "thing"},
        {"id": "b", "value": "three", "extra": [1, 2]},
        {"id": "c", "value": True, "unknown": "ignored"},
    ]
    files = [write(tmp_path / "thing" / "dt=2026-12-04" / "hour=07" / "o.jsonl.gz", rows)]
    con = load([table()], {"thing": files})

    result = execute(con, "select id, value, extra, tags, _type, dt, hour from thing", [table()])

    assert result.rows == [
        ("a", "3", '{"k":[1]}', ["x"], "thing", "2026-12-04", "07"),
        ("b", "three", "[1,2]", None, None, "2026-12-04", "07"),
        ("c", "true", None, None, None, "2026-12-04", "07"),
    ]


def test_the_loaded_database_reads_no_files(tmp_path: Path) -> None:
    write(tmp_path / "x.jsonl.gz", [{"id": "a"}])
    con = load([table()], {})

    with pytest.raises(QueryError, match="Permission Error: Cannot access file"):
        execute(con, f"select * from read_json('{tmp_path / 'x.jsonl.gz'}')", [table()])


def test_only_the_tables_the_sql_names_are_loaded() -> None:
    tables = [table("order"), table("customer"), table("order_line")]

    named = named_tables('select * from "order" o join Customer c on true', tables)

    assert [t.name for t in named] == ["order", "customer"]
