"""`sluice new-consumer` scaffolds a working consumer, and refuses clearly what it cannot make."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from support.registry_repo import unused_consumer_name

from sluice.registry import REGISTERED_TYPES, load_registry
from sluice_tools.cli import main
from sluice_tools.deploy.render import render_for
from sluice_tools.scaffold import ConsumerSpec, ScaffoldError, chalice_config, render_app
from sluice_tools.scaffold.contract import (
    attributes_read,
    check_filter_policy,
    declared_attributes,
    unread_attributes,
)
from sluice_tools.scaffold.generator import declaration

REPO = Path(__file__).resolve().parents[2]
# What a scaffolded consumer needs of the repository to be generated and tested.
NEEDED = (
    "shared",
    "router/chalicelib/routing.json",
    "types",  # the record types the router can publish (testkit)
    "consumers",
    "tools",
    "tests/support",
    "tests/consumers/testkit.py",
    "tests/consumers/eventkit.py",  # event consumers' (--on-event)
    "tests/consumers/fixtures.py",  # the fixtures every consumer's conftest imports
    "pyproject.toml",
    "noxfile.py",
    "infra/platform.yaml",
)


def shipped_consumers() -> dict[str, tuple[dict[str, object], bool, int, int]]:
    """Each consumer in the tree as the scaffold would be asked for it: (filter policy as its
    resources.yaml writes it, direct, timeout, memory from its deploy.yaml)."""
    found = {}
    for path in sorted((REPO / "consumers").glob("*/resources.yaml")):
        template = yaml.safe_load(path.read_text(encoding="utf-8"))
        meta = (template.get("Metadata") or {}).get("Sluice") or {}
        subs = [
            r["Properties"]
            for r in template["Resources"].values()
            if r["Type"] == "AWS::SNS::Subscription"
        ]
        policy = meta.get("FilterPolicy") or (subs[0]["FilterPolicy"] if subs else None)
        if policy is None:
            continue  # not a consumer of records (no filter policy)
        defaults = yaml.safe_load((path.parent / "deploy.yaml").read_text())["defaults"]
        direct = bool(meta.get("Direct"))
        found[path.parent.name] = (policy, direct, defaults["timeout"], defaults["memory"])
    return found


SHIPPED = shipped_consumers()
REGISTERED = ", ".join(load_registry(REPO / "types").names())


def copy_repo(target: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", ".venv", "*.egg-info", ".chalice/deployments")
    for relative in NEEDED:
        source = REPO / relative
        if source.is_dir():
            shutil.copytree(source, target / relative, ignore=ignore)
        else:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    return target


def sluice(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = "from sluice_tools.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def run_generated_tests(repo: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", f"tests/consumers/{name}", "-q", "-p", "no:cacheprovider"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "policy", "flags"),
    [
        (
            unused_consumer_name("audit"),
            '{"priority": ["high"], "record_type": [{"anything-but": ["customer"]}]}',
            (),
        ),
        (
            unused_consumer_name("pager"),
            '{"$or": [{"priority": ["high"]}, {"record_type": [{"prefix": "cust"}]}]}',
            ("--direct",),
        ),
    ],
)
def test_generated_consumer_passes_its_own_tests(
    repo_copy: Path, name: str, policy: str, flags: tuple[str, ...]
) -> None:
    made = sluice("new-consumer", name, "--filter", policy, *flags, cwd=repo_copy / "consumers")

    assert made.returncode == 0, made.stderr
    assert (repo_copy / "consumers" / name / "app.py").is_file()
    tested = run_generated_tests(repo_copy, name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert " passed" in tested.stdout
    assert "failed" not in tested.stdout


def test_generated_resources_carry_the_filter_policy_in_one_place(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path)
    policy = {"priority": ["high"]}

    CliRunner().invoke(
        main, ["new-consumer", "q", "--filter", json.dumps(policy), "--repo", str(repo)]
    )
    CliRunner().invoke(
        main,
        ["new-consumer", "d", "--filter", json.dumps(policy), "--direct", "--repo", str(repo)],
    )

    queued = yaml.safe_load((repo / "consumers/q/resources.yaml").read_text())
    subscription = queued["Resources"]["ConsumerSubscription"]["Properties"]
    assert subscription["FilterPolicy"] == policy
    assert subscription["RawMessageDelivery"] is True
    assert "Metadata" not in queued
    direct = yaml.safe_load((repo / "consumers/d/resources.yaml").read_text())
    assert direct["Metadata"]["Sluice"] == {
        "Direct": True,
        "FilterPolicyScope": "MessageAttributes",
        "FilterPolicy": policy,
    }
    assert "ConsumerSubscription" not in direct["Resources"]
    assert "@app.on_sns_message" in (repo / "consumers/d/app.py").read_text()


@pytest.mark.parametrize(("name", "spec"), SHIPPED.items())
def test_shipped_consumers_have_the_scaffold_layout_resources_and_config(
    name: str, spec: tuple[dict[str, object], bool, int, int]
) -> None:
    policy, direct, timeout, memory = spec
    scaffold = ConsumerSpec(name, policy, direct=direct, timeout_s=timeout, memory_mb=memory)
    files = render_app(scaffold)

    missing = [p for p in files if not (REPO / p).is_file()]
    assert missing == []
    resources = f"consumers/{name}/resources.yaml"
    assert yaml.safe_load((REPO / resources).read_text()) == yaml.safe_load(files[resources])
    config = json.loads((REPO / f"consumers/{name}/.chalice/config.json").read_text())
    assert config == chalice_config(scaffold)
    shipped = yaml.safe_load((REPO / f"consumers/{name}/deploy.yaml").read_text())
    assert shipped["defaults"] == declaration(scaffold)["defaults"]


def test_a_new_consumer_writes_a_declaration_that_renders_and_no_policy_file(
    tmp_path: Path,
) -> None:
    repo = copy_repo(tmp_path / "repo")
    result = CliRunner().invoke(
        main, ["new-consumer", "q", "--filter", '{"priority": ["high"]}', "--repo", str(repo)]
    )
    assert result.exit_code == 0, result.output

    app_dir = repo / "consumers" / "q"
    assert not list((app_dir / ".chalice").glob("policy-*.json"))
    rendered = render_for(app_dir, "qa7", prefix="acme-data", region="eu-west-1")
    [policy] = rendered.policies.values()
    resources = {r for s in policy["Statement"] for r in s["Resource"]}
    assert "arn:aws:sqs:eu-west-1:123456789012:acme-data-qa7-consumer-q" in resources
    assert "arn:aws:sqs:eu-west-1:123456789012:acme-data-qa7-consumer-q-dlq" in resources


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["warehouse", "--filter", '{"priority": ["high"]}'],
            "consumer 'warehouse' exists already",
        ),
        (["Bad_Name", "--filter", '{"priority": ["high"]}'], "invalid consumer name 'Bad_Name'"),
        (["a" * 21, "--filter", '{"priority": ["high"]}'], "invalid consumer name"),
        (["ends-", "--filter", '{"priority": ["high"]}'], "invalid consumer name 'ends-'"),
        (["9lives", "--filter", '{"priority": ["high"]}'], "invalid consumer name '9lives'"),
        (["ok", "--filter", "{priority: high}"], "--filter is not valid JSON"),
        (["ok", "--filter", '["high"]'], "--filter must be a non-empty JSON object"),
        (
            ["ok", "--filter", '{"colour": ["red"]}'],
            "filter policy uses attribute 'colour', which the router never sets",
        ),
        (
            ["ok", "--filter", '{"priority": ["urgent"]}'],
            "the router never sets priority='urgent' (allowed: high, normal)",
        ),
        (
            ["ok", "--filter", '{"priority": [{"numeric": [">", 1]}]}'],
            "operator 'numeric' on 'priority' cannot match",
        ),
        (
            ["ok", "--filter", '{"priority": [{"prefix": "xx"}]}'],
            "prefix 'xx' matches no value the router sets for 'priority'",
        ),
        (
            ["ok", "--filter", '{"record_type": ["ordr"]}'],
            f"'ordr' is not a registered record type (registered: {REGISTERED}; ",
        ),
        (
            ["ok", "--filter", '{"region": ["eu"]}'],
            "filter policy uses attribute 'region', which the router never sets",
        ),
    ],
)
def test_refusals_exit_non_zero_with_a_one_line_reason(
    tmp_path: Path, args: list[str], message: str
) -> None:
    repo = copy_repo(tmp_path)
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))

    result = CliRunner().invoke(main, ["new-consumer", *args, "--repo", str(repo)])

    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before


def test_outside_a_repository_it_refuses_to_guess(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["new-consumer", "ok", "--filter", "{}", "--repo", str(tmp_path)]
    )

    assert result.exit_code == 1
    assert "no Sluice repository (noxfile.py and router/)" in result.output


def test_filter_policy_may_use_base_attributes_and_declared_values() -> None:
    declared = declared_attributes(REPO)

    for record_type in [*load_registry(REPO / "types").names(), REGISTERED_TYPES]:
        check_filter_policy(
            {"record_type": [record_type], "correlation_id": [{"exists": True}]}, declared
        )
    check_filter_policy({"priority": ["high"]}, declared)
    with pytest.raises(ScaffoldError, match="'chunk_id', which the router never sets"):
        check_filter_policy({"chunk_id": ["c-1"]}, declared)


def declare_region(repo: Path) -> None:
    """Make the copy's routing.json declare `region` (which no shipped policy reads) and a
    registered type set it (its type.json)."""
    path = repo / "router/chalicelib/routing.json"
    routing = json.loads(path.read_text(encoding="utf-8"))
    routing["attributes"]["region"] = {"values": ["eu", "other"]}
    path.write_text(json.dumps(routing), encoding="utf-8")
    spec = next(s for s in load_registry(repo / "types") if "currency" in s.schema["properties"])
    declared = json.loads((spec.path / "type.json").read_text(encoding="utf-8"))
    declared.setdefault("routing", {})["region"] = {
        "field": "currency",
        "cases": [{"in": ["EUR", "GBP"], "value": "eu"}],
        "default": "other",
    }
    (spec.path / "type.json").write_text(json.dumps(declared), encoding="utf-8")


def test_every_routing_attribute_the_shipped_repo_declares_is_read_by_a_consumer() -> None:
    assert unread_attributes(REPO) == []


def test_a_declared_attribute_no_consumer_reads_is_named_in_a_warning(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path)
    declare_region(repo)
    assert unread_attributes(repo) == ["region"]

    result = CliRunner().invoke(
        main, ["new-consumer", "q", "--filter", '{"priority": ["high"]}', "--repo", str(repo)]
    )

    assert result.exit_code == 0, result.output  # a warning, not a failure
    assert (repo / "consumers/q/app.py").is_file()
    [warning] = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert "routing attribute 'region'" in warning
    assert "priority" not in warning


def test_a_consumer_filtering_on_the_attribute_silences_the_warning(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path)
    declare_region(repo)

    result = CliRunner().invoke(
        main,
        ["new-consumer", "eu", "--filter", '{"region": ["eu"]}', "--direct", "--repo", str(repo)],
    )

    assert result.exit_code == 0, result.output
    assert "Warning:" not in result.output
    assert unread_attributes(repo) == []


def test_shipped_consumers_run_new_consumer_without_a_warning(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path)
    first = load_registry(repo / "types").names()[0]
    policy = json.dumps({"record_type": [first]})
    args = ["new-consumer", "q", "--filter", policy, "--repo", str(repo)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Warning:" not in result.output
    assert "Next: deploy it: sluice deploy --stage STAGE --only consumers/q" in result.output


def test_attributes_read_include_those_of_or_branches() -> None:
    policy = {"record_type": ["order"], "$or": [{"priority": ["high"]}, {"region": ["eu"]}]}
    assert attributes_read(policy) == {"record_type", "priority", "region"}


def _actions_on(grants: list[dict[str, Any]], resources: set[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {r: set() for r in resources}
    for grant in grants:
        for resource in set(grant["resources"]) & resources:
            found[resource] |= set(grant["actions"])
    return found


def test_a_new_record_consumer_may_write_what_every_shipped_consumer_writes_to_the_ledger() -> None:
    # Every stage's ledger entry also updates the object's progress, and the last writer
    # emits its pipeline event: a consumer made today must be allowed the same as the
    # shipped ones, or its chunks go to its DLQ under enforced IAM.
    shared = {"table:ledger", "bus:events"}
    made = _actions_on(
        declaration(ConsumerSpec("q", {"priority": ["high"]}))["functions"]["consume"]["grants"],
        shared,
    )
    for name in SHIPPED:
        declared = yaml.safe_load((REPO / f"consumers/{name}/deploy.yaml").read_text())
        grants = declared["functions"]["consume"]["grants"]
        for resource, actions in _actions_on(grants, shared).items():
            assert actions <= made[resource], (name, resource, actions - made[resource])
