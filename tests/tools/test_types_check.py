"""`sluice types check`: an edited schema against curated objects in the warehouse's layout.

The objects are written to a moto bucket with the warehouse's own key, encoding and manifest
functions (consumers/warehouse/chalicelib/curated.py, loaded by path: it imports only the
shared package); the rows carry the metadata columns of the warehouse's `to_line`.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from moto import mock_aws

from sluice.config import ResourceNames
from sluice_tools.cli import main
from sluice_tools.types.check import METADATA_COLUMNS, check_type

ROOT = Path(__file__).resolve().parents[2]
WAREHOUSE = ROOT / "consumers" / "warehouse" / "chalicelib"
STAGE = "dev"  # not an emulator stage: the command goes where boto3 goes (moto here)
BUCKET = ResourceNames(stage=STAGE, prefix="sluice").curated_bucket


def load_curated() -> ModuleType:
    spec = importlib.util.spec_from_file_location("warehouse_curated", WAREHOUSE / "curated.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


curated = load_curated()


# The test's own registry (not the checkout's, so an edit there cannot break these tests).
ORDER_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["order_id", "customer_id", "email", "amount", "currency", "created_at"],
    "properties": {
        "order_id": {"type": "string", "minLength": 1},
        "customer_id": {"type": "string", "minLength": 1},
        "email": {"type": "string", "format": "email"},
        "amount": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "created_at": {"type": "string"},
    },
    "additionalProperties": False,
}
CUSTOMER_SCHEMA = {
    "type": "object",
    "required": ["customer_id"],
    "properties": {"customer_id": {"type": "string"}},
}


def write_type(types: Path, name: str, key: str, schema: dict[str, Any]) -> None:
    folder = types / name
    folder.mkdir(parents=True)
    declared = {"version": 1, "description": name, "natural_key": key, "routing": {}}
    (folder / "type.json").write_text(json.dumps(declared), encoding="utf-8")
    (folder / "schema.json").write_text(json.dumps(schema), encoding="utf-8")
    (folder / "rules.json").write_text("{}", encoding="utf-8")


def order(order_id: str, amount: float, **extra: Any) -> dict[str, Any]:
    """An order as the warehouse holds it: normalised, valid under ORDER_SCHEMA."""
    return {
        "order_id": order_id,
        "customer_id": "c-001",
        "email": "ada@example.com",
        "amount": amount,
        "currency": "EUR",
        "created_at": "2026-11-27T08:15:00.000Z",
        **extra,
    }


def put_chunk(s3: Any, chunk_id: str, ingested_at: str, payloads: list[dict[str, Any]]) -> str:
    """One curated object holding one chunk, as the warehouse writes it; returns its key."""
    rows = [
        {
            **payload,
            "_record_id": f"r-{payload['order_id']}",
            "_ingested_at": ingested_at,
            "_correlation_id": f"corr-{chunk_id}",
            "_type": "order",
        }
        for payload in payloads
    ]
    key = curated.object_key(curated.partition("order", ingested_at), chunk_id)
    s3.put_object(
        Bucket=BUCKET,
        Key=key,
        Body=curated.encode_lines(rows),
        ContentType=curated.CONTENT_TYPE,
        Metadata=curated.manifest_metadata([(chunk_id, len(rows))]),
    )
    return str(key)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository root (as the commands find one) whose registry holds order and customer."""
    root = tmp_path / "repo"
    (root / "router").mkdir(parents=True)
    (root / "noxfile.py").write_text("", encoding="utf-8")
    write_type(root / "types", "order", "order_id", ORDER_SCHEMA)
    write_type(root / "types", "customer", "customer_id", CUSTOMER_SCHEMA)
    return root


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    """A moto bucket holding orders of two hours: the older 08:00 hour, the newer 09:00."""
    import boto3

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        put_chunk(
            client,
            "c-older",
            "2026-11-27T08:10:00.000Z",
            [order("o-1", 10), order("o-2", 2000), order("o-3", 30)],
        )
        put_chunk(client, "c-newer", "2026-11-27T09:05:00.000Z", [order("o-4", 5000)])
        put_chunk(client, "c-newest", "2026-11-27T09:50:00.000Z", [order("o-5", 40)])
        yield client


def edit_schema(repo: Path, name: str, **properties: dict[str, Any]) -> None:
    path = repo / "types" / name / "schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    for field, changes in properties.items():
        schema["properties"][field].update(changes)
    path.write_text(json.dumps(schema, indent=2), encoding="utf-8")


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_the_deployed_schema_accepts_the_records_the_warehouse_holds(repo: Path, s3: Any) -> None:
    report = check_type(repo, "order", s3=s3, bucket=BUCKET)
    assert (report.records, report.objects, report.rejected) == (5, 3, 0)
    assert report.ok


def test_a_tightened_schema_reports_how_many_records_it_would_reject_and_why(
    repo: Path, s3: Any
) -> None:
    edit_schema(repo, "order", amount={"maximum": 1000})
    report = check_type(repo, "order", s3=s3, bucket=BUCKET)
    assert (report.records, report.rejected) == (5, 2)
    assert not report.ok
    reason = "invalid order: data.amount must be smaller than or equal to 1000"
    assert dict(report.reasons) == {reason: 2}
    assert {(r.record_id, r.natural_key) for r in report.rejections} == {
        ("r-o-2", "o-2"),
        ("r-o-4", "o-4"),
    }
    assert f"e.g. order o-4 (record r-o-4): {reason}" in report.render()
    (older,) = [r for r in report.rejections if r.record_id == "r-o-2"]
    assert "type=order/dt=2026-11-27/hour=08/c-older-" in older.key
    assert older.line == 2


def test_the_sample_is_the_newest_records_first(repo: Path, s3: Any) -> None:
    edit_schema(repo, "order", amount={"maximum": 1000})
    newest_two = check_type(repo, "order", s3=s3, bucket=BUCKET, sample=2)
    assert (newest_two.records, newest_two.objects, newest_two.rejected) == (2, 2, 1)
    assert [r.record_id for r in newest_two.rejections] == ["r-o-4"]
    cut = check_type(repo, "order", s3=s3, bucket=BUCKET, sample=3)  # one row of the older
    assert (cut.records, cut.objects, cut.rejected) == (3, 3, 1)


def test_metadata_columns_are_not_payload_but_a_payload_field_is(repo: Path, s3: Any) -> None:
    put_chunk(s3, "c-extra", "2026-11-27T10:00:00.000Z", [order("o-6", 1, coupon="X")])
    report = check_type(repo, "order", s3=s3, bucket=BUCKET)
    assert (report.records, report.rejected) == (6, 1)  # additionalProperties: false
    assert "coupon" in report.rejections[0].reason


def test_a_type_without_curated_records_has_nothing_to_compare(repo: Path, s3: Any) -> None:
    report = check_type(repo, "customer", s3=s3, bucket=BUCKET)
    assert (report.records, report.rejected, report.ok) == (0, 0, True)
    assert "nothing to compare" in report.render()


def test_the_command_exits_1_with_the_count_when_records_would_be_rejected(
    repo: Path, s3: Any
) -> None:
    ok = run("types", "check", "order", "--stage", STAGE, "--repo", str(repo))
    assert ok.exit_code == 0, ok.output + ok.stderr
    assert "5 records checked (3 objects): 0 would be rejected" in ok.output

    edit_schema(repo, "order", currency={"enum": ["USD"]})
    bad = run("types", "check", "order", "--stage", STAGE, "--repo", str(repo))
    assert bad.exit_code == 1
    assert "5 records checked (3 objects): 5 would be rejected" in bad.output
    assert "5 x invalid order: data.currency must be one of ['USD']" in bad.output

    as_json = run("types", "check", "order", "--stage", STAGE, "--repo", str(repo), "--json")
    assert as_json.exit_code == 1
    doc = json.loads(as_json.stdout)
    assert (doc["records"], doc["rejected"], doc["ok"], doc["bucket"]) == (5, 5, False, BUCKET)
    assert len(doc["rejections"]) == 5


def test_an_unknown_type_is_an_error_naming_the_known_ones(repo: Path, s3: Any) -> None:
    result = run("types", "check", "ordr", "--stage", STAGE, "--repo", str(repo))
    assert result.exit_code == 2
    assert "unknown record type 'ordr' (known types: customer, order)" in result.stderr


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def test_a_schema_changed_without_a_new_version_is_a_warning(repo: Path, s3: Any) -> None:
    git(repo, "init", "-q")
    git(repo, "add", "types")
    git(repo, "commit", "-q", "-m", "registry")
    assert check_type(repo, "order", s3=s3, bucket=BUCKET).warnings == []

    edit_schema(repo, "order", amount={"maximum": 100000})
    (warning,) = check_type(repo, "order", s3=s3, bucket=BUCKET).warnings
    assert "types/order/schema.json differs from git HEAD's" in warning
    assert "raise it to 2" in warning

    type_file = repo / "types" / "order" / "type.json"
    declared = json.loads(type_file.read_text(encoding="utf-8"))
    type_file.write_text(json.dumps({**declared, "version": 2}), encoding="utf-8")
    assert check_type(repo, "order", s3=s3, bucket=BUCKET).warnings == []


def test_the_metadata_columns_are_those_the_warehouse_adds() -> None:
    """check.METADATA_COLUMNS must follow the warehouse's to_line (read from its source)."""
    tree = ast.parse((WAREHOUSE / "service.py").read_text(encoding="utf-8"))
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    (to_line,) = [n for n in functions if n.name == "to_line"]
    updates = [
        n
        for n in ast.walk(to_line)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "update"
    ]
    added = {kw.arg for call in updates for kw in call.keywords}
    assert added == set(METADATA_COLUMNS)


def test_an_emulator_stage_without_a_running_local_up_is_refused(
    repo: Path, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sluice_tools.localstate.local_endpoint", lambda root=None: None)
    result = run("types", "check", "order", "--stage", "local", "--repo", str(repo))
    assert result.exit_code == 1
    assert "no `sluice local up` of it is running" in result.output
