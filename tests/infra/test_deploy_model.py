"""The deploy tool's pure parts: intrinsics, app discovery, stack reports, doctor's matching."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from infra.stack_model import ROOT, resolver

from sluice_tools.deploy.apps import discover_apps, select_apps
from sluice_tools.deploy.doctor import DoctorReport, resource_name_in
from sluice_tools.deploy.stacks import failure_report
from sluice_tools.deploy.templates import StackSpec
from sluice_tools.motocompat.cfn import lifecycle_rule
from sluice_tools.stages import PIPELINE_STAGES


def spec(resources: dict[str, Any]) -> StackSpec:
    body = {"Parameters": {"Stage": {"Type": "String"}}, "Resources": resources}
    return StackSpec(name="sluice-test-x", role="platform", path=Path("x.yaml"), body=body)


def test_resolver_evaluates_sub_ref_and_getatt_of_a_queue() -> None:
    s = spec(
        {"Q": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": {"Fn::Sub": "p-${Stage}-q"}}}}
    )
    r = resolver(s)

    assert r.resolve({"Ref": "Q"}) == "https://sqs.us-east-1.amazonaws.com/123456789012/p-test-q"
    assert r.resolve({"Fn::GetAtt": ["Q", "Arn"]}) == "arn:aws:sqs:us-east-1:123456789012:p-test-q"
    assert r.resolve({"Fn::GetAtt": "Q.QueueName"}) == "p-test-q"
    assert r.sub("arn:${AWS::Partition}:x:${AWS::Region}:${AWS::AccountId}:${Q.QueueName}") == (
        "arn:aws:x:us-east-1:123456789012:p-test-q"
    )


def test_resolver_refuses_an_intrinsic_it_does_not_know() -> None:
    r = resolver(spec({}))

    with pytest.raises(ValueError, match="Fn::If"):
        r.resolve({"Fn::If": ["c", 1, 2]})


def test_apps_are_discovered_in_pipeline_order_with_consumers_by_name() -> None:
    apps = discover_apps(ROOT)
    keys = [a.key for a in apps]

    assert keys[: len(PIPELINE_STAGES)] == list(PIPELINE_STAGES)
    assert keys[3:] == sorted(keys[3:])
    assert all(k.startswith("consumer-") for k in keys[3:])


def test_only_accepts_a_dir_a_key_or_a_name_and_rejects_unknown_apps() -> None:
    apps = discover_apps(ROOT)
    consumer = next(a for a in apps if a.key.startswith("consumer-"))

    assert [a.key for a in select_apps(apps, ["ingest", consumer.rel])] == ["ingest", consumer.key]
    assert select_apps(apps, [consumer.path.name]) == [consumer]
    with pytest.raises(ValueError, match="unknown app"):
        select_apps(apps, ["nope"])


def test_function_names_follow_chalice_and_settings_fall_back_to_the_declared_defaults() -> None:
    ingest = discover_apps(ROOT)[0]

    assert ingest.function_name("dev", "on_continue") == "sluice-ingest-dev-on_continue"
    assert ingest.handlers() == [
        "check_objects",
        "on_continue",
        "on_object_created",
        "pull_sources",
    ]
    assert ingest.timeout("test", "on_continue") == 900
    assert ingest.timeout("qa7", "pull_sources") == 120  # any stage: the declared defaults


def test_the_committed_chalice_config_names_the_app_and_nothing_the_deploy_renders() -> None:
    for app in discover_apps(ROOT):
        assert set(app.config) <= {"version", "app_name", "autogen_policy"}, app.rel
        assert not list((app.path / ".chalice").glob("policy-*.json")), app.rel


def test_a_deploy_renders_apps_into_copies_and_leaves_the_checkout_alone(tmp_path: Path) -> None:
    from sluice_tools.deploy.build import build_copy
    from sluice_tools.deploy.render import Placement, template_inventory

    router = next(a for a in discover_apps(ROOT) if a.key == "router")
    place = Placement("acme-data", "qa7", "eu-west-1", "111122223333")
    committed = (router.path / ".chalice" / "config.json").read_text()
    stale = tmp_path / "router" / "chalicelib" / "deleted_module.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("")
    state = tmp_path / "router" / ".chalice" / "deployed" / "qa7.json"
    state.parent.mkdir(parents=True)
    state.write_text("{}")

    app_dir, rendered = build_copy(router, place, tmp_path, template_inventory(ROOT, place))

    assert app_dir == tmp_path / "router"
    assert not stale.exists()  # a module deleted from the app never ships
    assert state.read_text() == "{}"  # Chalice's state of the stage is kept
    assert (app_dir / "app.py").read_text() == (router.path / "app.py").read_text()
    written = json.loads((app_dir / ".chalice" / "config.json").read_text())
    assert written == rendered.config
    policy = json.loads((app_dir / ".chalice" / "policy-qa7-route.json").read_text())
    assert policy == rendered.policies["route"]
    assert (router.path / ".chalice" / "config.json").read_text() == committed


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("sluice-test-raw", "sluice-test-raw"),
        ("arn:aws:sqs:us-east-1:123456789012:sluice-test-raw", "sluice-test-raw"),
        ("arn:aws:dynamodb:us-east-1:123456789012:table/sluice-test-ledger", "sluice-test-ledger"),
        ("https://sqs.us-east-1.amazonaws.com/123456789012/sluice-test-clean", "sluice-test-clean"),
        ("order,customer", None),
        ("test", None),
        ("30000", None),
    ],
)
def test_doctor_recognises_resource_names_in_environment_values(
    value: str, name: str | None
) -> None:
    assert resource_name_in(value, "sluice", "test") == name


def test_doctor_report_lists_problems_and_counts() -> None:
    report = DoctorReport(stage="test")
    report.count("queues", 3)
    assert report.render() == "doctor: stage test OK (3 queues)"

    report.add("queue sluice-test-raw has no DLQ (no RedrivePolicy)")

    assert not report.ok
    assert "  - queue sluice-test-raw has no DLQ" in report.render()


def test_cloudformation_lifecycle_rules_become_s3_api_rules() -> None:
    rule = {
        "Id": "x",
        "Status": "Enabled",
        "ExpirationInDays": 30,
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    }

    assert lifecycle_rule(rule) == {
        "ID": "x",
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "Expiration": {"Days": 30},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    }
    with pytest.raises(NotImplementedError):
        lifecycle_rule({"Status": "Enabled", "Transitions": []})


class FakeEvents:
    """describe_stack_events pages of a stack whose update failed on one resource."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def get_paginator(self, _name: str) -> FakeEvents:
        return self

    def paginate(self, **_: Any) -> list[dict[str, Any]]:
        return [{"StackEvents": self.events}]


def test_a_failed_stack_reports_its_failed_resources_with_reasons() -> None:
    now = datetime.now(tz=UTC)
    events = [
        {
            "LogicalResourceId": "RawQueue",
            "ResourceType": "AWS::SQS::Queue",
            "ResourceStatus": "UPDATE_FAILED",
            "ResourceStatusReason": "bad visibility",
            "Timestamp": now,
        },
        {
            "LogicalResourceId": "Other",
            "ResourceType": "AWS::SQS::Queue",
            "ResourceStatus": "UPDATE_COMPLETE",
            "Timestamp": now,
        },
        {
            "LogicalResourceId": "Old",
            "ResourceType": "AWS::SQS::Queue",
            "ResourceStatus": "CREATE_FAILED",
            "ResourceStatusReason": "last week",
            "Timestamp": datetime(2020, 1, 1, tzinfo=UTC),
        },
    ]

    text = failure_report(
        FakeEvents(events),
        "sluice-test-platform",
        "UPDATE_ROLLBACK_COMPLETE",
        since=now.timestamp(),
    )

    assert "sluice-test-platform ended in UPDATE_ROLLBACK_COMPLETE" in text
    assert "RawQueue (AWS::SQS::Queue): UPDATE_FAILED - bad visibility" in text
    assert "Other" not in text
    assert "last week" not in text


def test_a_build_root_is_held_by_one_process_at_a_time_and_reentrant_within_it(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    from sluice_tools.deploy.build import build_lock

    probe = (
        "import fcntl, sys\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    try:\n"
        "        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "    except BlockingIOError:\n"
        "        print('held')\n"
        "    else:\n"
        "        print('free')\n"
    )

    def other_process_sees() -> str:
        done = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path / ".lock")],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    with build_lock(tmp_path):
        with build_lock(tmp_path):  # a deploy inside a fixture that holds it
            assert other_process_sees() == "held"
        assert other_process_sees() == "held"
    assert other_process_sees() == "free"
