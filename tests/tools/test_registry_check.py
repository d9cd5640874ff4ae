"""`sluice doctor` says when a deployed function ships another record-type registry than
the checkout's types/ (the deploy tags each function with the registry it vendored)."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sluice_tools.deploy.doctor import DoctorReport, _check_registry
from sluice_tools.deploy.registry_check import TAG, registry_findings, registry_tag
from sluice_tools.deploy.render import render_for

ROOT = Path(__file__).resolve().parents[2]


def repo_copy(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "types", repo / "types")
    return repo


def test_the_tag_follows_any_change_of_the_registry(tmp_path: Path) -> None:
    repo = repo_copy(tmp_path)
    first = registry_tag(repo)
    names = sorted(p.name for p in (repo / "types").iterdir())
    assert first.split(" ")[1:] == [f"{n}@1" for n in names]
    schema = next((repo / "types").glob("*/schema.json"))
    schema.write_text(schema.read_text() + "\n")  # contents only: the versions stay
    second = registry_tag(repo)
    assert second != first
    assert second.split(" ")[1:] == first.split(" ")[1:]


def test_every_deployed_function_is_tagged_with_the_checkouts_registry() -> None:
    rendered = render_for(ROOT / "ingest", "dev")
    assert rendered.config["stages"]["dev"]["tags"][TAG] == registry_tag(ROOT)


def test_findings_name_the_functions_whose_registry_differs() -> None:
    expected = "aaaa customer@1 order@2"
    tags = {"fn-ok": expected, "fn-old": "bbbb customer@1 order@1", "fn-none": None}

    found = dict(registry_findings(tags, expected))

    assert sorted(found) == ["fn-none", "fn-old"]
    assert found["fn-old"] == (
        "function fn-old ships another record-type registry than types/ "
        "(customer@1 order@1; types/ has customer@1 order@2)"
    )
    assert f"has no {TAG} tag" in found["fn-none"]
    edited = dict(registry_findings({"fn": "cccc customer@1 order@2"}, expected))
    assert "with other contents" in edited["fn"]


@pytest.fixture
def lambda_client(aws_env: None) -> Any:
    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        role = iam.create_role(RoleName="r", AssumeRolePolicyDocument=json.dumps({}))["Role"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("app.py", "def handler(event, context):\n    return None\n")
        client = boto3.client("lambda", region_name="us-east-1")
        yield SimpleNamespace(client=client, role_arn=role["Arn"], code=code.getvalue())


def test_doctor_reports_a_function_deployed_with_an_older_registry(
    tmp_path: Path, lambda_client: Any
) -> None:
    repo = repo_copy(tmp_path)
    functions = []
    for name, tag in (
        ("sluice-ingest-dev-fresh", registry_tag(repo)),
        ("sluice-ingest-dev-old", None),
    ):
        made = lambda_client.client.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=lambda_client.role_arn,
            Handler="app.handler",
            Code={"ZipFile": lambda_client.code},
            Tags={TAG: tag} if tag else {},
        )
        functions.append(
            SimpleNamespace(name=name, arn=made["FunctionArn"], app=SimpleNamespace(rel="ingest"))
        )
    target = SimpleNamespace(
        root=repo, stage="dev", prefix="sluice", client=lambda service: lambda_client.client
    )
    report = DoctorReport(stage="dev")

    _check_registry(target, functions, report)  # type: ignore[arg-type]

    assert report.checked["registry copies"] == 2
    [finding] = report.findings
    assert finding.text.startswith("function sluice-ingest-dev-old has no sluice:registry tag")
    assert finding.repair == "sluice deploy --stage dev --only ingest"
