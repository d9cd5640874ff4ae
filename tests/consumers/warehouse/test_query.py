"""`sluice query` reads what the warehouse writes: the app writes chunks into a moto bucket,
the query's tables (the Glue tables' columns) count and show them."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from chalice.test import Client
from click.testing import CliRunner
from support.events import sqs_event

from consumers import testkit
from sluice import aws
from sluice_tools.cli import main
from sluice_tools.deploy.glue import ENVELOPE_COLUMNS, registered_tables
from sluice_tools.query import QueryError, run_query

ORDERS = [
    {
        "order_id": "o-1",
        "customer_id": "c-1",
        "email": "a@example.com",
        "amount": 12.5,
        "currency": "EUR",
        "created_at": "2026-11-27T06:00:00.000Z",
        "items": [{"sku": "s-1", "quantity": 2, "unit_price": 6.25}],
    },
    {
        "order_id": "o-2",
        "customer_id": "c-2",
        "email": "b@example.com",
        "amount": 1250,
        "currency": "USD",
        "created_at": "2026-11-27T06:01:00.000Z",
    },
]
CUSTOMERS = [
    {
        "customer_id": "c-1",
        "email": "a@example.com",
        "name": "Ada",
        "country": "GB",
        "created_at": "2026-11-01T00:00:00.000Z",
        "loyalty": "gold",  # the schema allows other fields: no column, not lost in S3
    }
]
LATER = "2026-11-27T09:30:00.000Z"


def write(app_module: ModuleType, app_dir: Path, *chunks: Any) -> None:
    """The warehouse app consumes `chunks` as from its queue (its own writer, real keys)."""
    with Client(app_module.app, stage_name="test", project_dir=str(app_dir)) as client:
        response = client.lambda_.invoke("consume", sqs_event(*chunks)).payload
    assert response == {"batchItemFailures": []}


@pytest.fixture
def written(account: testkit.Account, app_module: ModuleType, app_dir: Path) -> str:
    """Three orders in two hours and one customer in the curated bucket; its name."""
    write(
        app_module,
        app_dir,
        testkit.make_chunk("order", ORDERS, chunk_id="c-o-0"),
        testkit.make_chunk("customer", CUSTOMERS, chunk_id="c-c-0"),
    )
    later = testkit.make_chunk("order", ORDERS[:1], chunk_id="c-o-1", ingested_at=LATER)
    write(app_module, app_dir, later)
    return account.names.curated_bucket


def query(sql: str, bucket: str) -> Any:
    return run_query(sql, registered_tables(testkit.REPO), s3=aws.s3(), bucket=bucket)


def test_the_warehouse_adds_exactly_the_envelope_columns_the_tables_declare() -> None:
    from chalicelib.service import META_COLUMNS

    assert tuple(name for name, _ in ENVELOPE_COLUMNS) == META_COLUMNS


def test_a_query_counts_and_shows_the_rows_the_warehouse_wrote(written: str) -> None:
    counts = query('select hour, count(*) as n from "order" group by hour order by hour', written)
    assert counts.columns == ["hour", "n"]
    assert counts.rows == [("06", 2), ("09", 1)]

    everything = query('select * from "order" order by _record_id', written)
    (order,) = [t for t in registered_tables(testkit.REPO) if t.name == "order"]
    assert everything.columns == [c.name for c in order.columns] + ["dt", "hour"]
    first = dict(zip(everything.columns, everything.rows[0], strict=True))
    assert first["items"] == [{"sku": "s-1", "quantity": 2, "unit_price": 6.25}]
    assert first["_correlation_id"] == "corr-test"
    assert first["dt"] == "2026-11-27"
    assert everything.loaded == {"order": 2}  # only the table the SQL names is read

    nested = query(
        'select o.order_id, i.sku, i.quantity * i.unit_price as total from "order" o, '
        "unnest(o.items) as t(i) where o.hour = '06'",
        written,
    )
    assert nested.rows == [("o-1", "s-1", 12.5)]
    joined = query(
        'select c.name, count(*) from "order" o join customer c using (customer_id) '
        "group by c.name",
        written,
    )
    assert joined.rows == [("Ada", 2)]


def test_a_type_with_no_objects_is_an_empty_table_with_its_columns(
    account: testkit.Account,
) -> None:
    result = query('select * from "order"', account.names.curated_bucket)

    (order,) = [t for t in registered_tables(testkit.REPO) if t.name == "order"]
    assert result.columns == [c.name for c in order.columns] + ["dt", "hour"]
    assert result.rows == []


def test_an_unknown_table_lists_the_types_and_bad_sql_says_what_duckdb_said(
    written: str,
) -> None:
    with pytest.raises(QueryError, match=r"(?s)orders.*registered record types: customer, order"):
        query("select count(*) from orders", written)
    with pytest.raises(QueryError, match='syntax error at or near "selec"'):
        query('selec count(*) from "order"', written)


def printed(output: str) -> list[str]:
    """The command's lines, without the JSON log lines of the app's logging (same stdout)."""
    return [line for line in output.splitlines() if not line.startswith('{"')]


def test_the_command_prints_a_table_json_or_csv_and_exits_1_on_bad_sql(written: str) -> None:
    sql = "select order_id, amount from \"order\" where hour = '06' order by order_id"
    runner = CliRunner()

    table = runner.invoke(main, ["query", sql, "--stage", "test"])
    as_json = runner.invoke(main, ["query", sql, "--stage", "test", "--json"])
    as_csv = runner.invoke(main, ["query", sql, "--stage", "test", "--csv"])
    bad = runner.invoke(main, ["query", "select * from nope", "--stage", "test"])

    assert table.exit_code == 0, table.output
    assert printed(table.output) == [
        "order_id | amount",
        "---------+-------",
        "o-1      | 12.5",
        "o-2      | 1250.0",
        "(2 rows)",
    ]
    assert as_json.exit_code == 0, as_json.output
    assert '"order_id": "o-2"' in as_json.output
    assert printed(as_csv.output) == ["order_id,amount", "o-1,12.5", "o-2,1250.0"]
    assert bad.exit_code == 1
    assert "nope does not exist" in bad.output
    assert "customer, order" in bad.output
