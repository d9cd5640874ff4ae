"""`sluice new-type` and `sluice types`: a type drafted from samples, written, listed.

That a drafted type's schema accepts its own samples after cleanse's normalisation is
tested with cleanse's own code in tests/cleanse/test_type_samples.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.registry_repo import registry_repo, unregistered_name

from sluice.registry import load_registry
from sluice_tools.cli import main
from sluice_tools.types.infer import (
    CANONICAL_TIMESTAMP,
    SampleError,
    draft_type,
    key_candidates,
    read_samples,
)

SHIPMENTS = [
    {
        "shipment_id": "s-1",
        "order_id": "o-1",
        "carrier": "DHL",
        "shipped_at": "2026-11-27T08:15:00Z",
        "weight_kg": 1.5,
        "parcels": [{"parcel_id": "p-1", "weight_kg": 1.5, "scanned_at": "2026-11-27T08:00:00Z"}],
    },
    {
        "shipment_id": "s-2",
        "order_id": "o-1",  # not unique: not a key candidate
        "carrier": "UPS",
        "shipped_at": "2026-11-27 09:30:00+02:00",
        "weight_kg": 3,
        "contact": "ops@example.com",
        "parcels": [
            {"parcel_id": "p-2", "weight_kg": 1, "scanned_at": "2026-11-27T07:00:00+01:00"},
            {"parcel_id": "p-3", "weight_kg": 2, "fragile": True},
        ],
    },
    {
        "shipment_id": "s-3",
        "order_id": "o-2",
        "carrier": "DHL",
        "shipped_at": "2026-11-28T11:45:10.250",
        "weight_kg": 0.7,
        "parcels": [],
        "note": None,
    },
]


# The type the commands add: not in the registry, whatever the registry holds.
NEW = unregistered_name("shipment")
REGISTERED = load_registry(Path(__file__).resolve().parents[2] / "types").names()


def write_lines(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return registry_repo(tmp_path / "repo")


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# --- inference ---------------------------------------------------------------------------


def test_fields_in_every_sample_are_required_others_optional_and_nothing_else_allowed() -> None:
    schema = draft_type("shipment", SHIPMENTS).schema
    assert schema["type"] == "object"
    assert sorted(schema["required"]) == sorted(
        ["shipment_id", "order_id", "carrier", "shipped_at", "weight_kg", "parcels"]
    )
    assert {"contact", "note"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["properties"]["weight_kg"]["type"] == "number"  # ints and floats seen
    assert schema["properties"]["note"]["type"] == "null"


def test_arrays_of_objects_get_an_item_schema_with_its_own_required_fields() -> None:
    parcels = draft_type("shipment", SHIPMENTS).schema["properties"]["parcels"]
    assert parcels["type"] == "array"
    item = parcels["items"]
    assert item["type"] == "object"
    assert sorted(item["required"]) == ["parcel_id", "weight_kg"]  # fragile and scanned_at not
    assert item["additionalProperties"] is False
    assert item["properties"]["fragile"]["type"] == "boolean"


def test_timestamps_become_a_rule_and_the_canonical_pattern_nested_ones_too() -> None:
    draft = draft_type("shipment", SHIPMENTS)
    assert draft.rules["timestamps"] == ["shipped_at", "parcels[].scanned_at"]
    props = draft.schema["properties"]
    assert props["shipped_at"]["pattern"] == CANONICAL_TIMESTAMP
    assert props["parcels"]["items"]["properties"]["scanned_at"]["pattern"] == CANONICAL_TIMESTAMP
    assert props["contact"]["format"] == "email"
    assert "pattern" not in props["carrier"]
    assert "format" not in props["carrier"]


def test_a_pattern_only_when_every_sample_value_fits_it() -> None:
    records = [
        {"id": "a", "at": "2026-11-27T08:15:00Z", "day": "2026-11-27", "mail": "x@example.com"},
        {"id": "b", "at": "yesterday", "day": "2026-11-28", "mail": "not an address"},
    ]
    draft = draft_type("thing", records)
    props = draft.schema["properties"]
    assert "pattern" not in props["at"]
    assert "at" not in draft.rules.get("timestamps", [])
    assert props["day"]["pattern"] == r"^\d{4}-\d{2}-\d{2}$"
    assert "format" not in props["mail"]


def test_numbers_some_samples_send_as_text_become_a_numbers_rule() -> None:
    records: list[dict[str, Any]] = [
        {"id": "a", "amount": 12.5, "qty": 2, "zip": "01234", "lines": [{"n": "3"}]},
        {"id": "b", "amount": "7.25", "qty": "4", "zip": "99999", "lines": [{"n": 1}]},
        {"id": "c", "amount": None, "qty": 1, "zip": "10115", "lines": []},
    ]
    draft = draft_type("invoice", records)
    props = draft.schema["properties"]
    assert draft.rules["numbers"] == ["amount", "qty", "lines[].n"]
    assert props["amount"]["type"] == ["number", "null"]
    assert props["qty"]["type"] == "integer"
    assert props["lines"]["items"]["properties"]["n"]["type"] == "integer"
    assert props["zip"]["type"] == "string"  # text in every sample: a code, not a number
    mixed = draft_type("x", [{"id": "a", "v": 1}, {"id": "b", "v": "one"}])
    assert "numbers" not in mixed.rules
    assert sorted(mixed.schema["properties"]["v"]["type"]) == ["integer", "string"]


def test_a_timestamp_no_rule_can_reach_stays_a_plain_string() -> None:
    records = [
        {"id": "a", "legs": [["2026-11-27T08:15:00Z"]], "a.b": "2026-11-27T08:15:00Z"},
        {"id": "b", "legs": [["2026-11-27T09:15:00+01:00"]], "a.b": "2026-11-27T09:15:00Z"},
    ]
    draft = draft_type("trip", records)
    props = draft.schema["properties"]
    assert "timestamps" not in draft.rules
    assert props["legs"]["items"]["items"] == {"type": "string"}
    assert props["a.b"] == {"type": "string"}


def test_the_drafted_rules_are_safe_defaults_cleanse_accepts() -> None:
    rules = draft_type("shipment", SHIPMENTS).rules
    assert rules["trim"] is True
    assert rules["unknown_fields"] == "keep"  # the schema refuses them, with the field named
    assert "natural_key" not in rules  # it lives in type.json
    assert set(rules) <= {
        "description",
        "trim",
        "blank_is_missing",
        "numbers",
        "timestamps",
        "unknown_fields",
    }


def test_natural_key_prefers_name_id_then_id_then_other_id_fields() -> None:
    records = [
        {"ref": "r1", "id": "1", "owner_id": "u1", "widget_id": "w1"},
        {"ref": "r2", "id": "2", "owner_id": "u2", "widget_id": "w2"},
    ]
    assert key_candidates("widget", records) == ["widget_id", "id", "owner_id", "ref"]
    assert key_candidates("gadget", records) == ["id", "owner_id", "widget_id", "ref"]
    assert draft_type("line-item", [{"line_item_id": "a"}, {"line_item_id": "b"}]).natural_key == (
        "line_item_id"
    )


def test_natural_key_must_be_a_non_empty_unique_string_in_every_record() -> None:
    records = [
        {"shipment_id": "s-1", "n": 1, "blank": "", "sometimes": "x", "at": "2026-11-27T08:00:00Z"},
        {"shipment_id": "s-1", "n": 2, "blank": "a", "at": "2026-11-27T09:00:00Z"},
        {"shipment_id": "s-2", "n": 3, "blank": "b", "sometimes": "y", "at": "2026-11-28T08:00Z"},
    ]
    assert key_candidates("shipment", records) == []
    with pytest.raises(SampleError, match="--natural-key"):
        draft_type("shipment", records)


def test_natural_key_override_is_used_and_required_as_a_non_empty_string() -> None:
    draft = draft_type("shipment", SHIPMENTS, natural_key="carrier")
    assert draft.natural_key == "carrier"
    assert draft.schema["properties"]["carrier"] == {"type": "string", "minLength": 1}
    assert "carrier" in draft.schema["required"]
    with pytest.raises(SampleError, match=r"--natural-key weight_kg: not a string .* 1, 2, 3"):
        draft_type("shipment", SHIPMENTS, natural_key="weight_kg")
    with pytest.raises(SampleError, match="record\\(s\\) 1, 3"):
        draft_type("shipment", SHIPMENTS, natural_key="contact")


# --- reading samples ---------------------------------------------------------------------


def test_samples_are_read_from_json_lines_or_a_json_array(tmp_path: Path) -> None:
    lines = write_lines(tmp_path / "s.jsonl", SHIPMENTS)
    lines.write_text(lines.read_text() + "\n\n", encoding="utf-8")  # blank lines are fine
    array = tmp_path / "s.json"
    array.write_text(json.dumps(SHIPMENTS, indent=2), encoding="utf-8")
    assert read_samples(lines) == SHIPMENTS
    assert read_samples(array) == SHIPMENTS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty, no sample records"),
        ("[]", "no sample records"),
        ('{"a": 1}\n{"a": 2,\n', "line 2: not JSON"),
        ('{"a": 1}\n[1, 2]\n', "line 2: a JSON list, not an object"),
        ('[{"a": 1}, null]', "item 2: a JSON null, not an object"),
        ("[{", "not a JSON array"),
    ],
)
def test_bad_sample_files_get_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SampleError, match=message) as caught:
        read_samples(path)
    assert str(path) in str(caught.value)


# --- sluice new-type ---------------------------------------------------------------------


def test_new_type_writes_a_folder_the_registry_loads_and_prints_next_steps(
    repo: Path, tmp_path: Path
) -> None:
    sample = write_lines(tmp_path / "shipments.jsonl", SHIPMENTS)
    result = run("new-type", NEW, "--sample", str(sample), "--repo", str(repo))
    assert result.exit_code == 0, result.output
    spec = load_registry(repo / "types").get(NEW)
    assert spec.version == 1
    assert spec.natural_key == "shipment_id"
    assert spec.routing == {}
    drafted = f"{NEW.capitalize()} records (drafted by sluice new-type from shipments.jsonl)"
    assert spec.description == drafted
    assert spec.schema == draft_type(NEW, SHIPMENTS).schema
    assert spec.rules["timestamps"] == ["shipped_at", "parcels[].scanned_at"]
    assert [json.loads(line) for line in spec.sample_path.read_text().splitlines()] == SHIPMENTS
    out = result.output
    assert "Natural key: shipment_id" in out
    assert "sluice deploy --stage" in out
    assert f"incoming/{NEW}/" in out
    assert f"sluice local run FILE --type {NEW}" in out
    assert sorted(p.name for p in (repo / "types").iterdir()) == sorted([*REGISTERED, NEW])


def test_new_type_takes_the_natural_key_and_description_given(repo: Path, tmp_path: Path) -> None:
    sample = tmp_path / "s.json"
    sample.write_text(json.dumps(SHIPMENTS), encoding="utf-8")
    result = run(
        "new-type", NEW, "--sample", str(sample), "--repo", str(repo),
        "--natural-key", "carrier", "--description", "Parcels on their way",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    spec = load_registry(repo / "types").get(NEW)
    assert (spec.natural_key, spec.description) == ("carrier", "Parcels on their way")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (REGISTERED[0], f"type {REGISTERED[0]!r} exists"),
        ("Shipment", "bad type name"),
        ("9x", "bad type name"),
    ],
)
def test_new_type_refuses_an_existing_type_or_a_bad_name(
    repo: Path, tmp_path: Path, name: str, message: str
) -> None:
    schema = repo / "types" / REGISTERED[0] / "schema.json"
    before = schema.read_bytes()
    sample = write_lines(tmp_path / "s.jsonl", SHIPMENTS)
    result = run("new-type", name, "--sample", str(sample), "--repo", str(repo))
    assert result.exit_code == 1
    assert message in result.output
    assert sorted(p.name for p in (repo / "types").iterdir()) == sorted(REGISTERED)
    assert schema.read_bytes() == before


def test_new_type_without_a_natural_key_writes_nothing_and_asks_for_one(
    repo: Path, tmp_path: Path
) -> None:
    sample = write_lines(tmp_path / "s.jsonl", [{"n": 1}, {"n": 2}])
    result = run("new-type", NEW, "--sample", str(sample), "--repo", str(repo))
    assert result.exit_code == 1
    assert "--natural-key FIELD" in result.output
    assert not (repo / "types" / NEW).exists()
    assert not list((repo / "types").glob(".*"))  # no staging folder left behind


# --- sluice types ------------------------------------------------------------------------


def test_types_lists_every_registered_type_with_version_key_and_routing(repo: Path) -> None:
    registry = load_registry(repo / "types")
    result = run("types", "--repo", str(repo))
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[:4] == ["TYPE", "VERSION", "NATURAL", "KEY"]
    assert [row.split()[0] for row in rows] == list(registry.names())
    for row, spec in zip(rows, registry, strict=True):
        assert row.split()[1:3] == [str(spec.version), spec.natural_key]
        for attribute in spec.routing:
            assert attribute in row
        assert row.endswith(spec.description)

    listed = json.loads(run("types", "--json", "--repo", str(repo)).output)
    assert listed == [
        {
            "name": spec.name,
            "version": spec.version,
            "natural_key": spec.natural_key,
            "routing": sorted(spec.routing),
            "description": spec.description,
            "path": f"types/{spec.name}",
        }
        for spec in registry
    ]


def test_types_lists_a_type_new_type_just_added(repo: Path, tmp_path: Path) -> None:
    sample = write_lines(tmp_path / "s.jsonl", SHIPMENTS)
    run("new-type", NEW, "--sample", str(sample), "--repo", str(repo))
    listed = json.loads(run("types", "--json", "--repo", str(repo)).output)
    (added,) = [t for t in listed if t["name"] == NEW]
    assert (added["version"], added["natural_key"], added["routing"]) == (
        1,
        "shipment_id",
        [],
    )
