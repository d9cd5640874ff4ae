"""Ingest accepts exactly the registry's record types: a type added to `types/` is ingested
with no other change, and a type not registered is refused naming the registered ones."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from ingest_support import Platform

from chalicelib.service import Ingestor
from chalicelib.settings import IngestSettings
from sluice.registry import load_registry

SHIPMENT_SCHEMA = {
    "type": "object",
    "required": ["shipment_id"],
    "properties": {"shipment_id": {"type": "string"}},
}


def new_type_name() -> str:
    """A type name the registry does not hold yet (`shipment`, unless it does)."""
    names = load_registry().names()
    return next(n for n in ("shipment", *(f"shipment{i}" for i in range(2, 99))) if n not in names)


def registry_with(tmp_path: Path, name: str) -> Path:
    root = tmp_path / "types"
    shutil.copytree(load_registry().root, root)
    folder = root / name
    folder.mkdir()
    (folder / "type.json").write_text(json.dumps({"version": 1, "natural_key": "shipment_id"}))
    (folder / "schema.json").write_text(json.dumps(SHIPMENT_SCHEMA))
    (folder / "rules.json").write_text("{}")
    return root


def test_ingest_accepts_the_registered_types_and_no_others() -> None:
    assert IngestSettings.from_env({}).types == frozenset(load_registry().names())


def test_a_type_added_to_the_registry_is_ingested_with_no_setting_changed(
    platform: Platform, make_ingestor: Callable[..., Ingestor], tmp_path: Path
) -> None:
    name = new_type_name()
    key = f"incoming/{name}/2026-12-04.jsonl"
    body = b'{"shipment_id": "s-1"}\n{"shipment_id": "s-2"}\n'

    make_ingestor().handle_s3_event(platform.put(key, body))  # the shipped registry
    assert platform.raw_chunks() == []
    [doc] = platform.quarantined()
    known = ", ".join(load_registry().names())
    assert f"unknown record type {name!r} (known: {known})" in doc["reason"]

    registry = load_registry(registry_with(tmp_path, name))
    ingest = IngestSettings.from_env({}, registry=registry)
    assert ingest.types == frozenset(load_registry().names()) | {name}
    make_ingestor(types=ingest.types).handle_s3_event(platform.put(key, body + b"\n"))
    [chunk] = platform.raw_chunks()
    assert chunk.type == name
    assert [r.payload for r in chunk.records] == [{"shipment_id": "s-1"}, {"shipment_id": "s-2"}]
