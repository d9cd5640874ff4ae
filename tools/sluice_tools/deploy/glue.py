"""Each registered record type is a table: its columns from the type's JSON Schema, twice.

One mapping (`table_columns`: JSON Schema -> `Column`s), two outputs: the Glue Data Catalog
tables added to the platform stack at deploy (`with_catalog`, so Athena reads the curated
bucket with no crawler), and the DuckDB column types `sluice query` reads the same objects
with locally. What a curated line holds is the warehouse's (consumers/warehouse: the
payload's fields, then `ENVELOPE_COLUMNS`); the key layout is
`type=<type>/dt=YYYY-MM-DD/hour=HH/<id>.jsonl.gz`, so each table sits at `type=<type>/`
and is partitioned by `dt` and `hour`, both found by partition projection.

Glue and Athena names are lower case with underscores: the database is
`<prefix>_<stage>` and a table is the type's name, each with '-' turned into '_'.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # annotations only: templates.stage_stacks uses this module
    from sluice_tools.deploy.templates import Resolver, StackSpec

# The columns the warehouse adds to every line (consumers/warehouse/chalicelib/service.py
# META_COLUMNS; tests/infra/test_glue_catalog.py checks they agree). A payload field of one
# of these names is overwritten by the warehouse, so it is no column of its own.
ENVELOPE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_record_id", "The record's id (deterministic: source object and ordinal)"),
    ("_ingested_at", "When ingest read the record (UTC, ISO 8601); dt and hour come from it"),
    ("_correlation_id", "One per ingested object or pull"),
    ("_type", "The record type"),
)
PARTITION_KEYS = ("dt", "hour")
# Partition projection enumerates dates from here to NOW; no record is ingested before the
# stage exists, so an early start only costs Athena a few empty prefixes to list.
PROJECTION_START = "2026-01-01"
JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"
DATABASE_LOGICAL_ID = "CuratedDatabase"
BUCKET_LOGICAL_ID = "CuratedBucket"
COMMENT_MAX = 255  # Glue's limit on a column comment
MAX_DEPTH = 16  # nesting levels of structs and arrays kept as types; deeper: JSON text
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TableSchemaError(ValueError):
    """A type's schema cannot be a table (a property name Glue cannot hold, a clash)."""


@dataclass(frozen=True)
class FieldType:
    """A column's type: a scalar, a struct of columns, or an array of a type."""

    kind: str  # string | bigint | double | boolean | struct | array
    fields: tuple[Column, ...] = ()
    item: FieldType | None = None

    def hive(self) -> str:
        """The type as Glue and Athena write it: `struct<a:string,b:array<bigint>>`."""
        if self.kind == "struct":
            return "struct<" + ",".join(f"{f.glue_name}:{f.type.hive()}" for f in self.fields) + ">"
        if self.kind == "array":
            assert self.item is not None
            return f"array<{self.item.hive()}>"
        return self.kind

    def duckdb(self) -> str:
        """The same type as DuckDB writes it: `STRUCT("a" VARCHAR, "b" BIGINT[])`."""
        if self.kind == "struct":
            inner = ", ".join(f"{quote(f.name)} {f.type.duckdb()}" for f in self.fields)
            return f"STRUCT({inner})"
        if self.kind == "array":
            assert self.item is not None
            return f"{self.item.duckdb()}[]"
        return _DUCKDB_SCALARS[self.kind]


@dataclass(frozen=True)
class Column:
    """One column: `name` is the JSON key as the warehouse writes it."""

    name: str
    type: FieldType
    comment: str = ""

    @property
    def glue_name(self) -> str:
        """Glue lower-cases names; the JSON SerDe matches keys case-insensitively."""
        return self.name.lower()


_DUCKDB_SCALARS = {
    "string": "VARCHAR",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
}
_JSON_SCALARS = {"string": "string", "integer": "bigint", "number": "double", "boolean": "boolean"}
STRING = FieldType("string")


def quote(name: str) -> str:
    """A SQL identifier in double quotes (DuckDB and Athena DML)."""
    return '"' + name.replace('"', '""') + '"'


def table_name(type_name: str) -> str:
    """The Glue (and DuckDB) table of a record type: `-` becomes `_`."""
    return type_name.replace("-", "_")


def database_name(prefix: str, stage: str) -> str:
    """The stage's Glue database: `<prefix>_<stage>` with `-` as `_`."""
    return f"{prefix}_{stage}".replace("-", "_")


def table_columns(type_name: str, schema: Mapping[str, Any]) -> list[Column]:
    """A curated line's columns: the schema's properties in order, then `ENVELOPE_COLUMNS`.

    Properties named like an envelope column are left out (the warehouse overwrites
    them); a property named like a partition key, or two differing only in case, or a
    name Glue cannot hold, is a `TableSchemaError`.
    """
    where = f"record type {type_name!r}"
    envelope = {name for name, _ in ENVELOPE_COLUMNS}
    payload = [c for c in _struct_fields(schema, schema, where) if c.name.lower() not in envelope]
    for column in payload:
        if column.glue_name in PARTITION_KEYS:
            raise TableSchemaError(
                f"{where}: property {column.name!r} has the name of a partition key "
                f"({', '.join(PARTITION_KEYS)}): rename it (a normalisation rule can)"
            )
    return payload + [Column(name, STRING, comment) for name, comment in ENVELOPE_COLUMNS]


def field_type(
    node: Mapping[str, Any], root: Mapping[str, Any], where: str, depth: int = 0
) -> FieldType:
    """The column type of one JSON Schema node.

    string/integer/number/boolean map to string/bigint/double/boolean; an object with
    properties to a struct of them; an array to an array of its items' type. `null` in a
    type list only makes the column nullable (every column is). A node that can be more
    than one thing (several types, anyOf/oneOf, no type, a free-form object) is a string
    column holding the value's JSON text, and so is whatever nests deeper than `MAX_DEPTH`
    (a recursive `$ref`).
    """
    node = _resolve(node, root, where)
    if depth > MAX_DEPTH:
        return STRING
    types = node.get("type")
    if types is None and "properties" in node:
        types = "object"
    if types is None and isinstance(node.get("items"), Mapping):
        types = "array"
    if types is None and ("enum" in node or "const" in node):
        values = node.get("enum", [node.get("const")])
        types = sorted({_json_type_of(v) for v in values} - {"null"})
    names = [types] if isinstance(types, str) else list(types or [])
    names = [t for t in names if t != "null"]
    if set(names) == {"integer", "number"}:
        names = ["number"]
    if len(names) != 1:
        return STRING
    (kind,) = names
    if kind in _JSON_SCALARS:
        return FieldType(_JSON_SCALARS[kind])
    if kind == "object":
        fields = _struct_fields(node, root, where, depth + 1)
        return FieldType("struct", tuple(fields)) if fields else STRING
    if kind == "array":
        items = node.get("items")
        item = STRING
        if isinstance(items, Mapping):
            item = field_type(items, root, where, depth + 1)
        return FieldType("array", item=item)
    return STRING


def _struct_fields(
    node: Mapping[str, Any], root: Mapping[str, Any], where: str, depth: int = 0
) -> list[Column]:
    properties = node.get("properties") or {}
    columns: list[Column] = []
    seen: dict[str, str] = {}
    for name, child in properties.items():
        if not _IDENTIFIER.fullmatch(name):
            raise TableSchemaError(
                f"{where}: property {name!r} cannot be a Glue column (letters, digits and '_', "
                "not starting with a digit): rename it (a normalisation rule can)"
            )
        if name.lower() in seen:
            raise TableSchemaError(
                f"{where}: properties {seen[name.lower()]!r} and {name!r} differ only in "
                "case: Glue and Athena names are case-insensitive"
            )
        seen[name.lower()] = name
        child = child if isinstance(child, Mapping) else {}
        comment = str(_resolve(child, root, where).get("description") or "")[:COMMENT_MAX]
        column_type = field_type(child, root, f"{where}.{name}", depth)
        columns.append(Column(name, column_type, comment))
    return columns


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """`node`, or what its local `$ref` (`#`, `#/definitions/x`, `#/$defs/x`) points to."""
    seen: set[str] = set()
    while isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if not (ref == "#" or ref.startswith("#/")) or ref in seen:
            raise TableSchemaError(f"{where}: $ref {ref!r} is not a local, acyclic reference")
        seen.add(ref)
        target: Any = root
        for part in filter(None, ref[2:].split("/")):
            target = target.get(part) if isinstance(target, Mapping) else None
        if not isinstance(target, Mapping):
            raise TableSchemaError(f"{where}: $ref {ref!r} points to nothing")
        node = target
    return node


def _json_type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string" if isinstance(value, str) else "object"


# ---------------------------------------------------------------------------- the catalog


@dataclass(frozen=True)
class TableSpec:
    """What the catalog needs of one registered type."""

    type_name: str
    version: int
    description: str
    columns: tuple[Column, ...]

    @property
    def name(self) -> str:
        return table_name(self.type_name)


def registered_tables(root: Path) -> list[TableSpec]:
    """One `TableSpec` per type of the repository's registry (`root/types`), by name."""
    from sluice.registry import load_registry

    tables = [
        TableSpec(
            spec.name,
            spec.version,
            spec.description,
            tuple(table_columns(spec.name, spec.schema)),
        )
        for spec in load_registry(root / "types")
    ]
    names: dict[str, str] = {}
    for table in tables:
        if table.name in names:
            raise TableSchemaError(
                f"record types {names[table.name]!r} and {table.type_name!r} would both be "
                f"table {table.name!r}"
            )
        names[table.name] = table.type_name
    return tables


def logical_id(type_name: str) -> str:
    """The table's logical id: `CuratedTable` + the type's name in CamelCase."""
    words = re.split(r"[-_]", type_name)
    return "CuratedTable" + "".join(w[:1].upper() + w[1:] for w in words)


def catalog_resources(tables: Sequence[TableSpec], database: str) -> dict[str, Any]:
    """The Glue database and one table per type, as template resources (long-form
    intrinsics, like the hand-written templates)."""
    resources: dict[str, Any] = {
        DATABASE_LOGICAL_ID: {
            "Type": "AWS::Glue::Database",
            "Properties": {
                "CatalogId": {"Ref": "AWS::AccountId"},
                "DatabaseInput": {
                    "Name": database,
                    "Description": "Sluice curated data: one table per registered record "
                    "type (generated from types/ at deploy)",
                },
            },
        }
    }
    for table in tables:
        logical = logical_id(table.type_name)
        if logical in resources:
            raise TableSchemaError(f"two record types would both be resource {logical}")
        resources[logical] = glue_table(table, database)
    return resources


def glue_table(table: TableSpec, database: str) -> dict[str, Any]:
    """One type's `AWS::Glue::Table` over `s3://<curated>/type=<type>/`.

    The database is named, not `Ref`'d (a Glue database has no name property the deploy's
    `Resolver` reads), so `DependsOn` orders it first.
    """
    location = {"Fn::Sub": f"s3://${{{BUCKET_LOGICAL_ID}}}/type={table.type_name}/"}
    # ${dt} and ${hour} are Athena's, not CloudFormation's: passed in as Fn::Sub variables
    # whose values are not substituted again.
    template = {
        "Fn::Sub": [
            f"s3://${{{BUCKET_LOGICAL_ID}}}/type={table.type_name}/dt=${{Dt}}/hour=${{Hour}}",
            {"Dt": "${dt}", "Hour": "${hour}"},
        ]
    }
    description = table.description or f"Record type {table.type_name}"
    return {
        "Type": "AWS::Glue::Table",
        "DependsOn": DATABASE_LOGICAL_ID,
        "Properties": {
            "CatalogId": {"Ref": "AWS::AccountId"},
            "DatabaseName": database,
            "TableInput": {
                "Name": table.name,
                "Description": f"{description} (schema version {table.version})"[:2048],
                "TableType": "EXTERNAL_TABLE",
                "Parameters": {
                    "classification": "json",
                    "compressionType": "gzip",
                    "sluice.record_type": table.type_name,
                    "sluice.schema_version": str(table.version),
                    "projection.enabled": "true",
                    "projection.dt.type": "date",
                    "projection.dt.format": "yyyy-MM-dd",
                    "projection.dt.range": f"{PROJECTION_START},NOW",
                    "projection.dt.interval": "1",
                    "projection.dt.interval.unit": "DAYS",
                    "projection.hour.type": "integer",
                    "projection.hour.range": "0,23",
                    "projection.hour.digits": "2",
                    "storage.location.template": template,
                },
                "PartitionKeys": [
                    {"Name": "dt", "Type": "string", "Comment": "UTC date of _ingested_at"},
                    {"Name": "hour", "Type": "string", "Comment": "UTC hour of _ingested_at"},
                ],
                "StorageDescriptor": {
                    "Location": location,
                    "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
                    "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
                    "Compressed": True,
                    "SerdeInfo": {
                        "SerializationLibrary": JSON_SERDE,
                        "Parameters": {
                            "case.insensitive": "true",
                            "ignore.malformed.json": "false",
                        },
                    },
                    "Columns": [glue_column(c) for c in table.columns],
                },
            },
        },
    }


def glue_column(column: Column) -> dict[str, str]:
    found = {"Name": column.glue_name, "Type": column.type.hive()}
    if column.comment:
        found["Comment"] = column.comment
    return found


def with_catalog(spec: StackSpec, root: Path, stage: str, prefix: str) -> StackSpec:
    """The platform stack `spec` plus the stage's Glue database and a table per registered
    type, with its rendered text (what is deployed and linted). Without a registry
    (`root/types` absent) `spec` is returned as it is."""
    if not (root / "types").is_dir():
        return spec
    tables = registered_tables(root)
    body = dict(spec.body)
    resources = dict(body.get("Resources") or {})
    added = catalog_resources(tables, database_name(prefix, stage))
    clash = sorted(set(added) & set(resources))
    if clash:
        raise TableSchemaError(f"{spec.path}: already has resources named {clash}")
    resources.update(added)
    body["Resources"] = resources
    outputs = dict(body.get("Outputs") or {})
    outputs["CuratedDatabaseName"] = {"Value": {"Ref": DATABASE_LOGICAL_ID}}
    body["Outputs"] = outputs
    header = (
        f"# Rendered by sluice_tools.deploy.glue from {spec.path.name} and the registry's "
        f"{len(tables)} type(s): {', '.join(t.type_name for t in tables) or 'none'}.\n"
    )
    text = header + yaml.safe_dump(body, sort_keys=False, width=100)
    return dataclasses.replace(spec, body=body, rendered=text)


# ------------------------------------------------------------------------------ doctor


def catalog_problems(glue: Any, platform: StackSpec, resolver: Resolver) -> list[str]:
    """How the deployed catalog differs from the platform template's tables (`sluice
    doctor`): a table missing, its columns, location or schema version not the registry's,
    or a table left from a type no longer registered. Empty: as deployed."""
    wanted = {
        str(props["TableInput"]["Name"]): props
        for props in map(resolver.properties, platform.resources("AWS::Glue::Table"))
    }
    if not wanted:
        return []
    database = str(next(iter(wanted.values()))["DatabaseName"])
    try:
        deployed = {
            str(t["Name"]): t
            for page in glue.get_paginator("get_tables").paginate(DatabaseName=database)
            for t in page["TableList"]
        }
    except glue.exceptions.EntityNotFoundException:
        return [f"Glue database {database} is missing (so are its {len(wanted)} tables)"]
    problems = []
    for name, props in wanted.items():
        table = props["TableInput"]
        found = deployed.get(name)
        where = f"Glue table {database}.{name}"
        if found is None:
            problems.append(f"{where} is missing (record type {_record_type(table)})")
            continue
        storage, have = table["StorageDescriptor"], found.get("StorageDescriptor") or {}
        columns = [(c["Name"], c["Type"]) for c in storage["Columns"]]
        present = [(c["Name"], c["Type"]) for c in have.get("Columns") or []]
        if present != columns:
            changed = sorted(set(columns) ^ set(present))
            problems.append(
                f"{where}: columns differ from the registry's schema "
                f"({', '.join(f'{n} {t}' for n, t in changed) or 'order'})"
            )
        if have.get("Location") != storage["Location"]:
            problems.append(f"{where}: location {have.get('Location')}, not {storage['Location']}")
        version = (found.get("Parameters") or {}).get("sluice.schema_version")
        if version != table["Parameters"]["sluice.schema_version"]:
            problems.append(
                f"{where}: schema version {version}, registry has "
                f"{table['Parameters']['sluice.schema_version']}"
            )
    for name, table in sorted(deployed.items()):
        if name not in wanted and "sluice.record_type" in (table.get("Parameters") or {}):
            problems.append(
                f"Glue table {database}.{name} is left from record type "
                f"{_record_type(table)}, which is no longer registered"
            )
    return problems


def _record_type(table: Mapping[str, Any]) -> str:
    return str((table.get("Parameters") or {}).get("sluice.record_type", table.get("Name")))
