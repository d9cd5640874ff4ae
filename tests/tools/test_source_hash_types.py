"""`sluice local run` deploys again when the record-type registry changes: a type's folder
is deployed (vendored into the apps, rendered into the platform's Glue tables)."""

from __future__ import annotations

from pathlib import Path

from sluice_tools.local.persist import source_hash


def test_the_source_hash_changes_when_a_type_is_added_or_its_schema_edited(
    tmp_path: Path,
) -> None:
    schema = tmp_path / "types" / "order" / "schema.json"
    schema.parent.mkdir(parents=True)
    schema.write_text('{"properties": {"order_id": {"type": "string"}}}', encoding="utf-8")
    first = source_hash(tmp_path)

    schema.write_text('{"properties": {"order_id": {"type": "integer"}}}', encoding="utf-8")
    edited = source_hash(tmp_path)
    added = tmp_path / "types" / "shipment" / "type.json"
    added.parent.mkdir()
    added.write_text('{"version": 1}', encoding="utf-8")

    assert len({first, edited, source_hash(tmp_path)}) == 3
