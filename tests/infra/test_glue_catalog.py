"""Each registered record type is a Glue table: columns from its schema (one mapping, also
`sluice query`'s), partitions as the warehouse writes keys, found by partition projection."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from infra.stack_model import ROOT

from sluice.registry import load_registry
from sluice_tools.deploy.glue import (
    ENVELOPE_COLUMNS,
    MAX_DEPTH,
    Column,
    FieldType,
    TableSchemaError,
    field_type,
    logical_id,
    table_columns,
)
from sluice_tools.deploy.templates import StackSpec, stage_stacks

ENVELOPE = [name for name, _ in ENVELOPE_COLUMNS]


def hive(node: dict[str, Any]) -> str:
    return field_type(node, node, "t").hive()


def duck(node: dict[str, Any]) -> str:
    return field_type(node, node, "t").duckdb()


def test_scalars_nullable_types_and_enums_map_to_one_column_type() -> None:
    assert hive({"type": "string", "format": "date-time"}) == "string"
    assert hive({"type": "integer"}) == "bigint"
    assert hive({"type": "number"}) == "double"
    assert hive({"type": "boolean"}) == "boolean"
    assert hive({"type": ["integer", "null"]}) == "bigint"  # null: only nullable
    assert hive({"type": ["integer", "number"]}) == "double"
    assert hive({"enum": ["a", "b", None]}) == "string"
    assert hive({"const": 3}) == "bigint"
    # More than one kind of value, or any value: the value's JSON text.
    assert hive({"type": ["string", "integer"]}) == "string"
    assert hive({"anyOf": [{"type": "string"}, {"type": "integer"}]}) == "string"
    assert hive({}) == "string"
    assert duck({"type": ["boolean", "null"]}) == "BOOLEAN"


def test_objects_become_structs_and_arrays_arrays_nested_in_both_dialects() -> None:
    node = {
        "type": "object",
        "properties": {
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "SKU": {"type": "string"},
                        "qty": {"type": ["integer", "null"]},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
            "meta": {"type": "object", "additionalProperties": {"type": "string"}},
            "any": {"type": "array"},
            "ref": {"$ref": "#/definitions/money"},
        },
        "definitions": {"money": {"type": "object", "properties": {"amount": {"type": "number"}}}},
    }

    assert hive(node) == (
        "struct<lines:array<struct<sku:string,qty:bigint,tags:array<string>>>,meta:string,"
        "any:array<string>,ref:struct<amount:double>>"
    )
    assert duck(node) == (
        'STRUCT("lines" STRUCT("SKU" VARCHAR, "qty" BIGINT, "tags" VARCHAR[])[], '
        '"meta" VARCHAR, "any" VARCHAR[], "ref" STRUCT("amount" DOUBLE))'
    )


def test_table_columns_are_the_properties_then_the_envelope_columns() -> None:
    schema = {
        "properties": {
            "id": {"type": "string", "description": "The id"},
            "_type": {"type": "integer"},  # the warehouse overwrites it: the envelope's
            "n": {"type": "integer"},
        }
    }

    columns = table_columns("thing", schema)

    assert [c.name for c in columns] == ["id", "n", *ENVELOPE]
    assert columns[0] == Column("id", FieldType("string"), "The id")
    assert columns[-1].type == FieldType("string")


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"dt": {"type": "string"}}, "partition key"),
        ({"Hour": {"type": "string"}}, "partition key"),
        ({"a": {}, "A": {}}, "differ only in case"),
        ({"first name": {"type": "string"}}, "cannot be a Glue column"),
        ({"x": {"$ref": "#/definitions/nope"}}, "points to nothing"),
    ],
)
def test_a_schema_that_cannot_be_a_table_is_refused_with_the_reason(
    properties: dict[str, Any], message: str
) -> None:
    with pytest.raises(TableSchemaError, match=message):
        table_columns("thing", {"properties": properties})


def glue_tables(spec: StackSpec) -> dict[str, dict[str, Any]]:
    """{table name: TableInput} of the template."""
    return {
        r["Properties"]["TableInput"]["Name"]: r["Properties"]["TableInput"]
        for r in spec.resources("AWS::Glue::Table").values()
    }


def test_the_platform_stack_has_one_table_per_registered_type_with_its_columns() -> None:
    registry = load_registry(ROOT / "types")
    platform = stage_stacks(ROOT, "dev", "acme-data")[0]

    tables = glue_tables(platform)

    assert sorted(tables) == sorted(name.replace("-", "_") for name in registry.names())
    (database,) = platform.resources("AWS::Glue::Database").values()
    assert database["Properties"]["DatabaseInput"]["Name"] == "acme_data_dev"
    for spec in registry:
        table = tables[spec.name.replace("-", "_")]
        storage = table["StorageDescriptor"]
        assert [c["Name"] for c in storage["Columns"]] == [
            c.glue_name for c in table_columns(spec.name, spec.schema)
        ]
        assert storage["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
        assert storage["Location"] == {"Fn::Sub": f"s3://${{CuratedBucket}}/type={spec.name}/"}
        assert [k["Name"] for k in table["PartitionKeys"]] == ["dt", "hour"]
        parameters = table["Parameters"]
        assert parameters["projection.enabled"] == "true"
        assert parameters["projection.hour.range"] == "0,23"
        assert parameters["sluice.schema_version"] == str(spec.version)
    # What is deployed is the rendered text, not the file.
    assert platform.rendered is not None
    assert "AWS::Glue::Table" in platform.text
    assert "AWS::Glue::Table" not in platform.path.read_text(encoding="utf-8")


def test_a_type_added_to_the_registry_gets_its_table_with_no_other_edit(tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    shutil.copy(ROOT / "infra" / "platform.yaml", tmp_path / "infra" / "platform.yaml")
    shutil.copytree(ROOT / "types", tmp_path / "types")
    shutil.copytree(ROOT / "types" / "order", tmp_path / "types" / "shipment-event")

    platform = stage_stacks(tmp_path, "dev")[0]

    assert "shipment_event" in glue_tables(platform)
    assert logical_id("shipment-event") in platform.resources()
    template = glue_tables(platform)["shipment_event"]["Parameters"]["storage.location.template"]
    assert "type=shipment-event/dt=${Dt}/hour=${Hour}" in template["Fn::Sub"][0]


def test_a_recursive_reference_ends_as_json_text_below_the_depth_limit() -> None:
    node = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "child": {"$ref": "#"}},
    }

    found = hive(node)

    assert found.startswith("struct<name:string,child:struct<name:string,child:struct<")
    assert found.count("struct<") == MAX_DEPTH + 1
    assert "child:string" in found
