"""Rendering the apps' `deploy.yaml`: exact ARNs for any prefix, stage, region and account,
and only resources the stage's templates create."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from infra.stack_model import ROOT

from sluice_tools.deploy.apps import AppSpec, discover_apps
from sluice_tools.deploy.declaration import DeclarationError
from sluice_tools.deploy.render import (
    Placement,
    RenderedApp,
    render_app,
    template_inventory,
    write_rendered,
)
from sluice_tools.deploy.templates import stage_stacks

ACME = Placement("acme-data", "qa7", "eu-west-1", "111122223333", "aws")
CHINA = Placement("acme-data", "qa7", "cn-north-1", "111122223333")
ARN_KINDS = {
    "AWS::SQS::Queue": "Arn",
    "AWS::SNS::Topic": "TopicArn",
    "AWS::DynamoDB::Table": "Arn",
    "AWS::S3::Bucket": "Arn",
    "AWS::Events::EventBus": "Arn",
}


def render_all(place: Placement) -> list[RenderedApp]:
    inventory = template_inventory(ROOT, place)
    return [render_app(app, place, inventory) for app in discover_apps(ROOT)]


def policy_resources(rendered: RenderedApp) -> list[tuple[str, list[str], str]]:
    """(function name, actions, resource) of every statement of every function."""
    return [
        (rendered.function_name(fn), list(s["Action"]), resource)
        for fn, policy in rendered.policies.items()
        for s in policy["Statement"]
        for resource in s["Resource"]
    ]


def template_arns(place: Placement) -> set[str]:
    """ARNs of every queue, topic, table and bucket the platform and consumer stacks create."""
    arns = set()
    for spec in stage_stacks(ROOT, place.stage, place.prefix):
        resolver = place.resolver(spec)
        for type_, attribute in ARN_KINDS.items():
            arns |= {resolver.get_att(logical, attribute) for logical in spec.resources(type_)}
        for logical in spec.resources("AWS::DynamoDB::Table"):  # and the tables' indexes
            table = resolver.get_att(logical, "Arn")
            indexes = resolver.properties(logical).get("GlobalSecondaryIndexes") or []
            arns |= {f"{table}/index/{index['IndexName']}" for index in indexes}
    return arns


def test_every_arn_carries_the_prefix_region_account_and_partition_it_was_rendered_for() -> None:
    checked = 0
    for rendered in render_all(ACME):
        for function, actions, resource in policy_resources(rendered):
            if resource == "*":
                assert all(a.startswith("xray:") for a in actions), (function, actions)
                continue
            arn, partition, service, region, account, rest = resource.split(":", 5)
            assert (arn, partition) == ("arn", "aws"), resource
            if service == "s3":
                assert (region, account) == ("", ""), resource
                assert rest.startswith("acme-data-qa7-"), resource
            else:
                assert (region, account) == ("eu-west-1", "111122223333"), resource
            assert "sluice-" not in rest.replace(function, ""), resource
            checked += 1
    assert checked > 60


def test_a_china_region_renders_the_aws_cn_partition() -> None:
    resources = [r for rendered in render_all(CHINA) for _, _, r in policy_resources(rendered)]

    assert all(r == "*" or r.startswith("arn:aws-cn:") for r in resources)
    assert any(":cn-north-1:111122223333:" in r for r in resources)


@pytest.mark.parametrize("place", [ACME, Placement("sluice", "prod", "us-east-1", "123456789012")])
def test_every_resource_a_policy_names_is_one_the_templates_create(place: Placement) -> None:
    created = template_arns(place)
    logs = f"arn:{place.partition}:logs:{place.region}:{place.account}:log-group:/aws/lambda/"
    ssm = f"arn:{place.partition}:ssm:{place.region}:{place.account}:parameter/"
    problems = []
    for rendered in render_all(place):
        for function, _actions, resource in policy_resources(rendered):
            if resource == "*":
                continue
            if resource.startswith(logs):
                if resource.removeprefix(logs) not in (function, f"{function}:*"):
                    problems.append(f"{function}: log group of another function: {resource}")
            elif resource.startswith(ssm):
                if not resource.startswith(f"{ssm}{place.prefix}/{place.stage}/"):
                    problems.append(f"{function}: parameter outside the stage: {resource}")
            elif (resource.split("/", 1)[0] if ":s3:::" in resource else resource) not in created:
                problems.append(f"{function}: {resource} is not created by any template")
    assert not problems, "\n".join(problems)


def test_every_function_gets_its_stage_prefix_and_settings_in_a_stage_never_listed() -> None:
    for rendered in render_all(ACME):
        stage = rendered.config["stages"]["qa7"]
        assert rendered.config["autogen_policy"] is False
        assert stage["autogen_policy"] is False
        for function, settings in stage["lambda_functions"].items():
            env = rendered.environment(function)
            assert env["SLUICE_STAGE"] == "qa7"
            assert env["SLUICE_RESOURCE_PREFIX"] == "acme-data"
            assert settings["iam_policy_file"] == f"policy-qa7-{function}.json"
            assert settings["xray"] is True
            assert settings["lambda_timeout"] > 0


def test_stage_overrides_apply_and_the_emulator_runs_without_xray() -> None:
    cleanse = next(a for a in discover_apps(ROOT) if a.key == "cleanse")
    ingest = next(a for a in discover_apps(ROOT) if a.key == "ingest")
    base = Placement("sluice", "dev", "us-east-1", "123456789012")

    def fn(app: AppSpec, place: Placement, name: str) -> dict[str, object]:
        rendered = render_app(app, place)
        return dict(rendered.config["stages"][place.stage]["lambda_functions"][name])

    assert fn(cleanse, base, "cleanse")["lambda_memory_size"] == 512
    prod = Placement("sluice", "prod", "us-east-1", "123456789012")
    assert fn(cleanse, prod, "cleanse")["lambda_memory_size"] == 1024
    assert fn(ingest, base, "pull_sources")["lambda_timeout"] == 120
    local = Placement("sluice", "local", "us-east-1", "123456789012", emulator=True)
    assert fn(cleanse, local, "cleanse")["xray"] is False
    test_env = render_app(ingest, Placement("sluice", "test", "us-east-1", "1", emulator=True))
    assert test_env.environment("on_continue")["SLUICE_INGEST_SAFETY_MARGIN_MS"] == "500"
    assert "SLUICE_CHUNK_MAX_BYTES" not in test_env.environment("on_continue")


def copy_of(app: str, tmp_path: Path) -> AppSpec:
    """A copy of the repo's templates and one app, to break its declaration safely."""
    shutil.copytree(ROOT / "infra", tmp_path / "infra")
    shutil.copytree(ROOT / app, tmp_path / app, ignore=shutil.ignore_patterns("vendor"))
    [found] = discover_apps(tmp_path)
    return found


def test_a_reference_to_a_resource_no_template_creates_fails_the_render(tmp_path: Path) -> None:
    app = copy_of("router", tmp_path)
    declaration = app.path / "deploy.yaml"
    declaration.write_text(declaration.read_text().replace("topic:records", "topic:record"))

    with pytest.raises(DeclarationError, match="no topic acme-data-qa7-record"):
        render_app(app, ACME)


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        ("topic:records", "arn:aws:sns:*:*:sluice-dev-records", "not a reference"),
        ("resources: [queue:clean]", 'resources: ["*"]', "X-Ray only"),
        ("sns:Publish]", "sns:*]", "not one action"),
        ("SLUICE_CHUNK_MAX_RECORDS:", "SLUICE_STAGE:", "the deploy sets those"),
    ],
)
def test_a_declaration_that_names_an_arn_a_wildcard_or_a_reserved_variable_is_refused(
    tmp_path: Path, before: str, after: str, message: str
) -> None:
    app = copy_of("router", tmp_path)
    declaration = app.path / "deploy.yaml"
    assert before in declaration.read_text()
    declaration.write_text(declaration.read_text().replace(before, after, 1))

    with pytest.raises(DeclarationError, match=message):
        render_app(app, ACME)


def test_writing_a_render_replaces_the_policies_of_another_stage(tmp_path: Path) -> None:
    router = next(a for a in discover_apps(ROOT) if a.key == "router")
    write_rendered(render_app(router, Placement("sluice", "dev", "us-east-1", "1")), tmp_path)
    write_rendered(render_app(router, ACME), tmp_path)

    files = sorted(p.name for p in (tmp_path / ".chalice").iterdir())
    assert files == ["config.json", "policy-qa7-route.json"]
    config = json.loads((tmp_path / ".chalice" / "config.json").read_text())
    assert list(config["stages"]) == ["qa7"]
