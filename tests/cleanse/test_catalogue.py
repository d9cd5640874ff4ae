"""Record types: loaded lazily from types/<type>/, checked against their rules, validated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib.catalogue import Catalogue
from sluice.errors import ConfigError, PermanentError
from sluice.registry import load_registry

APP_DIR = Path(__file__).resolve().parents[2] / "cleanse"


def write_type(
    root: Path, name: str, schema: dict[str, Any], rules: dict[str, Any], key: str = "id"
) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    declared = {"version": 1, "natural_key": key}
    (folder / "type.json").write_text(json.dumps(declared), encoding="utf-8")
    (folder / "schema.json").write_text(json.dumps(schema), encoding="utf-8")
    (folder / "rules.json").write_text(json.dumps(rules), encoding="utf-8")


def test_every_registered_type_loads_with_a_required_natural_key() -> None:
    catalogue = Catalogue()
    assert catalogue.names() == list(load_registry().names())
    assert catalogue.names(), "the repository registers no record type"
    for name in catalogue.names():
        found = catalogue.get(name)
        assert found is not None
        assert found.rules.natural_key in found.schema["required"]
        found.validator  # noqa: B018 - compiling proves the schema is valid


def test_a_type_is_loaded_once_and_its_validator_compiled_on_first_record() -> None:
    catalogue = Catalogue()
    order = catalogue.get("order")
    assert order is not None
    assert order._validator is None
    with pytest.raises(PermanentError):
        order.cleanse({})
    compiled = order._validator
    assert compiled is not None
    assert catalogue.get("order") is order
    order.cleanse(
        {
            "order_id": "o",
            "customer_id": "c",
            "email": "a@b.cd",
            "amount": 1,
            "currency": "EUR",
            "created_at": "2026-11-27T00:00:00Z",
        }
    )
    assert order._validator is compiled


def test_importing_the_app_neither_imports_fastjsonschema_nor_reads_a_type() -> None:
    code = (
        "import sys, app\n"
        "assert 'fastjsonschema' not in sys.modules, 'compiled at import'\n"
        "assert app.service.cleanser.cache_info().currsize == 0, 'cleanser built at import'\n"
        "catalogue = app.service.cleanser().catalogue\n"
        "assert catalogue._types == {}, 'types read before the first chunk'\n"
        "assert catalogue._registry is None, 'registry read before the first chunk'\n"
    )
    env = {**os.environ, "SLUICE_STAGE": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=APP_DIR, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", ["invoice", "../order", "order/../order", "Order", ""])
def test_names_that_are_not_a_shipped_type_folder_are_unknown(name: str) -> None:
    assert Catalogue().get(name) is None


def test_invalid_records_get_the_schema_message_as_reason() -> None:
    order = Catalogue().get("order")
    assert order is not None
    with pytest.raises(PermanentError) as caught:
        order.cleanse(
            {
                "order_id": "o",
                "customer_id": "c",
                "email": "a@b.cd",
                "amount": -1,
                "currency": "EUR",
                "created_at": "2026-11-27T00:00:00Z",
            }
        )
    assert caught.value.reason == "invalid order: data.amount must be bigger than or equal to 0"


def test_rules_naming_a_field_the_schema_lacks_are_a_config_error(tmp_path: Path) -> None:
    schema = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
    write_type(tmp_path, "thing", schema, {"lowercase": ["email"]})
    with pytest.raises(ConfigError, match=r"fields not in schema: \['email'\]"):
        Catalogue(tmp_path).get("thing")


def test_a_natural_key_the_schema_does_not_require_is_a_config_error(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "string"}}}
    write_type(tmp_path, "thing", schema, {})
    with pytest.raises(ConfigError, match="natural_key 'id' must be required"):
        Catalogue(tmp_path).get("thing")


def test_an_invalid_json_schema_is_a_config_error_on_first_use(tmp_path: Path) -> None:
    schema = {"type": "object", "required": ["id"], "properties": {"id": {"type": "no-such-type"}}}
    write_type(tmp_path, "thing", schema, {})
    thing = Catalogue(tmp_path).get("thing")
    assert thing is not None
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        thing.cleanse({"id": "1"})


@pytest.mark.parametrize("name", load_registry().names())
def test_every_record_of_a_types_sample_file_cleanses(name: str) -> None:
    spec = load_registry().get(name)
    found = Catalogue().get(name)
    assert found is not None
    lines = spec.sample_path.read_text(encoding="utf-8").splitlines()
    assert lines, f"{spec.sample_path} is empty"
    for line in lines:
        cleaned = found.cleanse(json.loads(line))
        assert cleaned[spec.natural_key]
