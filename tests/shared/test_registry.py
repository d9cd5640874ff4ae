"""The record-type registry: the repository's types load; a malformed folder is a clear error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sluice import registry
from sluice.errors import ConfigError
from sluice.registry import UnknownRecordType, load_registry

REPO_TYPES = Path(__file__).resolve().parents[2] / "types"
SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["shipment_id"],
    "properties": {"shipment_id": {"type": "string"}, "weight": {"type": "number"}},
}


def write_type(root: Path, name: str, **declared: Any) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    type_json = {"version": 1, "description": "d", "natural_key": "shipment_id", **declared}
    (folder / "type.json").write_text(json.dumps(type_json))
    (folder / "schema.json").write_text(json.dumps(SCHEMA))
    (folder / "rules.json").write_text(json.dumps({"numbers": ["weight"]}))
    return folder


def test_the_repository_registry_is_the_default_and_every_type_is_complete() -> None:
    found = load_registry()
    assert found.root == REPO_TYPES
    assert found.names() == tuple(sorted(p.name for p in REPO_TYPES.iterdir() if p.is_dir()))
    assert found is load_registry()  # read once
    for spec in found:
        assert spec.natural_key in spec.schema["properties"]
        assert spec.name in found
        samples = spec.sample_path.read_text(encoding="utf-8").splitlines()
        assert samples, f"{spec.name}: sample.jsonl is empty"
        assert all(isinstance(json.loads(line), dict) for line in samples)


def test_a_new_folder_is_a_new_type_with_its_declarations(tmp_path: Path) -> None:
    routing = {"priority": {"field": "weight", "cases": [{"gt": 5, "value": "high"}]}}
    write_type(tmp_path, "shipment", version=3, routing=routing)
    write_type(tmp_path, "a_parcel")
    (tmp_path / ".hidden").mkdir()
    found = load_registry(tmp_path)
    assert found.names() == ("a_parcel", "shipment")
    spec = found.get("shipment")
    assert (spec.version, spec.natural_key, spec.path) == (3, "shipment_id", tmp_path / "shipment")
    assert spec.routing == routing
    assert spec.rules == {"numbers": ["weight"]}
    assert found.natural_keys() == {"a_parcel": "shipment_id", "shipment": "shipment_id"}


def test_an_unknown_name_is_a_key_error_listing_the_known_types(tmp_path: Path) -> None:
    write_type(tmp_path, "shipment")
    write_type(tmp_path, "parcel")
    with pytest.raises(KeyError) as caught:
        load_registry(tmp_path).get("shipmnet")
    assert isinstance(caught.value, UnknownRecordType)
    assert str(caught.value) == "unknown record type 'shipmnet' (known types: parcel, shipment)"
    assert "../parcel" not in load_registry(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: (f / "schema.json").unlink(), r"missing schema\.json"),
        (lambda f: (f / "type.json").write_text("{not json"), r"cannot read .*type\.json"),
        (lambda f: (f / "rules.json").write_text("[]"), r"rules\.json: not a JSON object"),
        (
            lambda f: _declare(f, natural_key="id"),
            r"'natural_key' must name a property of schema\.json \(shipment_id, weight\)",
        ),
        (lambda f: _declare(f, version=0), "'version' must be a positive integer, got 0"),
        (lambda f: _declare(f, version="1"), "'version' must be a positive integer"),
        (lambda f: _declare(f, version=None), "'version' must be a positive integer"),
        (lambda f: _declare(f, routing=["x"]), "'routing' must map attribute names to rules"),
        (lambda f: _declare(f, key="x"), r"unknown keys \['key'\]"),
        (lambda f: _declare(f, alert={"amount_field": "cost"}), "'alert'.*'cost'"),
        (lambda f: _declare(f, alert={"colour": "red"}), r"'alert'.*\['colour'\]"),
        (
            lambda f: (f / "rules.json").write_text('{"natural_key": "shipment_id"}'),
            "'natural_key' belongs in type.json",
        ),
    ],
)
def test_a_malformed_type_folder_is_a_config_error_naming_it(
    tmp_path: Path, change: Any, message: str
) -> None:
    change(write_type(tmp_path, "shipment"))
    with pytest.raises(ConfigError, match=message) as caught:
        load_registry(tmp_path)
    assert "shipment" in str(caught.value)


@pytest.mark.parametrize("name", ["Shipment", "9lives", "ship ment", "x" * 65])
def test_a_folder_name_that_is_not_a_type_name_is_a_config_error(tmp_path: Path, name: str) -> None:
    write_type(tmp_path, name)
    with pytest.raises(ConfigError, match="must match"):
        load_registry(tmp_path)


def test_a_deployed_app_reads_the_copy_shipped_beside_the_package(tmp_path: Path) -> None:
    vendor = tmp_path / "vendor"
    shutil.copytree(Path(registry.__file__).parent, vendor / "sluice")
    shutil.copytree(REPO_TYPES, vendor / registry.SHIPPED_DIR)
    code = (
        "import sluice.registry as r; import json\n"
        "found = r.load_registry()\n"
        "print(json.dumps([str(found.root), list(found.names())]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=vendor,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(vendor)},
    )
    root, names = json.loads(done.stdout)
    assert root == str(vendor / registry.SHIPPED_DIR)
    assert tuple(names) == load_registry().names()


def test_without_a_shipped_copy_or_a_checkout_the_error_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_PACKAGE_DIR", tmp_path / "vendor" / "sluice")
    with pytest.raises(ConfigError, match=r"no record-type registry: neither .*sluice_types"):
        registry.default_root()


def _declare(folder: Path, **changes: Any) -> None:
    path = folder / "type.json"
    declared = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            declared.pop(key, None)
        else:
            declared[key] = value
    path.write_text(json.dumps(declared))


def test_the_registered_types_marker_expands_in_filter_policies_and_templates() -> None:
    names = ("customer", "order")
    marker = registry.REGISTERED_TYPES
    policy = {"record_type": [marker], "priority": ["high"]}
    assert registry.expand_registered_types(policy, names) == {
        "record_type": ["customer", "order"],
        "priority": ["high"],
    }
    as_text = json.dumps({"$or": [{"record_type": ["order", marker]}]})
    assert json.loads(registry.expand_registered_types(as_text, names)) == {
        "$or": [{"record_type": ["order", "customer"]}]
    }
    template: dict[str, Any] = {
        "Metadata": {"Sluice": {"FilterPolicy": {"record_type": [marker]}}},
        "Resources": {
            "Sub": {"Type": "AWS::SNS::Subscription", "Properties": {"FilterPolicy": policy}},
            "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"FilterPolicy": policy}},
        },
    }
    rendered = registry.expand_template_policies(template, names)
    assert rendered["Metadata"]["Sluice"]["FilterPolicy"] == {"record_type": list(names)}
    assert rendered["Resources"]["Sub"]["Properties"]["FilterPolicy"]["record_type"] == list(names)
    assert rendered["Resources"]["Queue"] == template["Resources"]["Queue"]  # not a policy
    assert template["Resources"]["Sub"]["Properties"]["FilterPolicy"] is policy  # untouched
    plain = {"Resources": {"Sub": {"Type": "AWS::SNS::Subscription", "Properties": {}}}}
    assert registry.expand_template_policies(plain, names) is plain
