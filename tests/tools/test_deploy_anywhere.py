"""`sluice deploy` to a stage no file lists (qa7), under prefix acme-data, in eu-west-1.

Everything the functions are named, given and granted is rendered from the apps'
`deploy.yaml` for that place: the roles' policies and the environments read back from
moto carry that prefix and region. `--plan` prints the policies and the changes and
applies nothing. One deploy for the module, in a moto server of its own (~1.5 min).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from click.testing import CliRunner
from support.deployed import Deployed, deployed_into_moto
from support.env import aws_environment

from sluice_tools.cli import main
from sluice_tools.deploy.apps import discover_apps
from sluice_tools.deploy.render import RenderedApp

ROOT = Path(__file__).resolve().parents[2]
STAGE, PREFIX, REGION = "qa7", "acme-data", "eu-west-1"
P = f"{PREFIX}-{STAGE}"
BUILD_DIR = ROOT / ".sluice" / "test-build-anywhere"  # kept: chalice's zip cache

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    env = {"AWS_DEFAULT_REGION": REGION, "SLUICE_RESOURCE_PREFIX": PREFIX}
    with (
        deployed_into_moto(STAGE, BUILD_DIR, env) as stage,
        aws_environment(),
        pytest.MonkeyPatch.context() as mp,
    ):
        for name, value in {**env, "AWS_ENDPOINT_URL": stage.endpoint}.items():
            mp.setenv(name, value)
        yield stage


def rendered_functions(deployed: Deployed) -> dict[str, tuple[RenderedApp, str]]:
    """{function name: (its app as the deploy rendered it, handler)}."""
    return {
        rendered.function_name(handler): (rendered, handler)
        for rendered in deployed.report.rendered
        for handler in rendered.policies
    }


def role_policies(deployed: Deployed, function: str) -> list[dict[str, Any]]:
    """The inline policies of the function's role, as IAM returns them."""
    iam = deployed.client("iam")
    role = deployed.client("lambda").get_function_configuration(FunctionName=function)["Role"]
    role_name = role.rsplit("/", 1)[-1]
    documents = []
    for policy in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        doc = iam.get_role_policy(RoleName=role_name, PolicyName=policy)["PolicyDocument"]
        documents.append(json.loads(unquote(doc)) if isinstance(doc, str) else doc)
    return documents


def test_the_stage_deploys_and_doctor_finds_it_whole(deployed: Deployed) -> None:
    assert deployed.report.ok, "\n".join(deployed.log)
    expected = {
        app.function_name(STAGE, handler)
        for app in discover_apps(ROOT)
        for handler in app.handlers()
    }
    assert set(rendered_functions(deployed)) == expected
    assert deployed.report.build_root == BUILD_DIR


def test_every_function_environment_carries_the_stage_and_prefix(deployed: Deployed) -> None:
    lam = deployed.client("lambda")
    for name, (rendered, handler) in rendered_functions(deployed).items():
        fn = lam.get_function_configuration(FunctionName=name)
        env = fn["Environment"]["Variables"]
        assert (env["SLUICE_STAGE"], env["SLUICE_RESOURCE_PREFIX"]) == (STAGE, PREFIX), name
        assert env == rendered.environment(handler)
        assert fn["FunctionArn"].startswith(f"arn:aws:lambda:{REGION}:")


def test_every_role_policy_grants_the_prefixed_resources_in_the_region(deployed: Deployed) -> None:
    account = deployed.target.account
    for name, (rendered, handler) in rendered_functions(deployed).items():
        [policy] = role_policies(deployed, name)
        assert policy == rendered.policies[handler], name
        arns = [r for s in policy["Statement"] for r in s["Resource"] if r != "*"]
        for arn in arns:
            if ":s3:::" in arn:
                assert arn.startswith(f"arn:aws:s3:::{P}-"), arn
            else:
                assert f":{REGION}:{account}:" in arn, arn
                assert "sluice-" not in arn.replace(name, ""), arn
        assert any(f":{REGION}:{account}:{P}-" in arn for arn in arns), name


def snapshot(deployed: Deployed) -> dict[str, Any]:
    """What a deploy changes: stacks, queues, tables, buckets, functions and their roles."""
    lam, cfn = deployed.client("lambda"), deployed.client("cloudformation")
    functions = {}
    for fn in lam.list_functions()["Functions"]:
        keep = ("CodeSha256", "LastModified", "Environment", "Role", "MemorySize", "Timeout")
        functions[fn["FunctionName"]] = {k: fn.get(k) for k in keep}
        functions[fn["FunctionName"]]["policies"] = role_policies(deployed, fn["FunctionName"])
    stacks = {
        s["StackName"]: (s["StackStatus"], str(s.get("LastUpdatedTime")))
        for s in cfn.describe_stacks()["Stacks"]
    }
    mappings = lam.list_event_source_mappings()["EventSourceMappings"]
    return {
        "functions": functions,
        "stacks": stacks,
        "change_sets": {n: cfn.list_change_sets(StackName=n)["Summaries"] for n in stacks},
        "queues": sorted(deployed.client("sqs").list_queues().get("QueueUrls", [])),
        "tables": sorted(deployed.client("dynamodb").list_tables()["TableNames"]),
        "buckets": sorted(b["Name"] for b in deployed.client("s3").list_buckets()["Buckets"]),
        "mappings": sorted(m["UUID"] for m in mappings),
    }


def plan(*args: str) -> Any:
    return CliRunner().invoke(main, ["deploy", "--plan", *args], catch_exceptions=False)


def test_plan_prints_every_policy_and_the_changes_and_applies_nothing(deployed: Deployed) -> None:
    before = snapshot(deployed)

    result = plan("--stage", STAGE, "--build-dir", str(BUILD_DIR))

    assert result.exit_code == 0, result.output
    assert snapshot(deployed) == before
    for name, (rendered, handler) in rendered_functions(deployed).items():
        assert f"  {name}:" in result.output
        for statement in rendered.policies[handler]["Statement"]:
            for resource in statement["Resource"]:
                assert f'"{resource}"' in result.output
    assert f"{P}-platform: no changes" in result.output
    assert "update_function" in result.output  # what chalice would call, per app


def test_plan_of_a_stage_never_deployed_lists_the_creates_and_leaves_nothing(
    deployed: Deployed, tmp_path: Path
) -> None:
    before = snapshot(deployed)

    result = plan("--stage", "qa8", "--only", "router", "--build-dir", str(tmp_path))

    assert result.exit_code == 0, result.output
    assert f"{PREFIX}-qa8-platform: Add RawQueue (AWS::SQS::Queue)" in result.output
    assert "create_function" in result.output
    account = deployed.target.account
    assert f'"arn:aws:sns:{REGION}:{account}:{PREFIX}-qa8-records"' in result.output
    assert snapshot(deployed) == before
