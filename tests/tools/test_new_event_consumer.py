"""`sluice new-consumer --on-event` scaffolds a consumer of the pipeline's events (issue 22).

One scaffold into a copy of the repository runs its own generated tests (the rule's pattern
against every pipeline event and other sources, through moto's EventBridge); the rest are
cheap checks of what is written and what is refused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from tools.test_new_consumer import copy_repo

from sluice.events import DETAIL_TYPES
from sluice_tools.cli import main
from sluice_tools.deploy.lint import cfn_lint_command
from sluice_tools.ledger.filters import consumer_policies
from sluice_tools.scaffold import ConsumerSpec, render_app
from sluice_tools.scaffold.generator import declaration, event_pattern


def new_consumer(repo: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["new-consumer", *args, "--repo", str(repo)])


@pytest.mark.slow
def test_a_generated_event_consumer_passes_its_own_tests_and_lint(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path)
    made = subprocess.run(
        [
            *(sys.executable, "-c", "from sluice_tools.cli import main; main()", "new-consumer"),
            *("loader", "--on-event", "Object Delivered", "--on-event", "Records Quarantined"),
        ],
        cwd=repo / "consumers",
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert "Created event consumer 'loader'" in made.stdout

    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/consumers/loader", "-q", "-p", "no:cacheprovider"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "6 passed" in tested.stdout

    cfn = subprocess.run(
        [*cfn_lint_command(), str(repo / "consumers/loader/resources.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cfn.returncode == 0, cfn.stdout + cfn.stderr
    # ruff and mypy (and the boto3 stubs mypy needs) are in the dev and lint environments,
    # not in the tests session's: there this test stops at the generated tests and cfn-lint.
    if importlib.util.find_spec("ruff") is None or importlib.util.find_spec("mypy") is None:
        return
    written = [str(repo / "consumers/loader"), str(repo / "tests/consumers/loader")]
    ruff = [sys.executable, "-m", "ruff"]
    for command in ([*ruff, "check", *written], [*ruff, "format", "--check", *written]):
        linted = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
        assert linted.returncode == 0, linted.stdout + linted.stderr
    # mypy as the lint session runs it on an app: strict on its code, relaxed on its tests.
    mypy = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy")]
    app, tests = repo / "consumers/loader", repo / "tests/consumers/loader"
    for paths, flags, path in (
        ([app / "app.py", app / "chalicelib"], (), [app]),
        ([tests], ("--allow-untyped-defs", "--allow-incomplete-defs"), [app, tests]),
    ):
        env = {**os.environ, "MYPYPATH": os.pathsep.join(map(str, path))}
        typed = subprocess.run(
            [*mypy, *flags, *map(str, paths)],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert typed.returncode == 0, typed.stdout + typed.stderr


def test_the_rule_holds_the_pattern_and_only_the_rule_may_send_to_the_queue() -> None:
    events = ("Object Delivered", "Object Stuck")
    files = render_app(ConsumerSpec("loader", {}, events=events))
    resources = yaml.safe_load(files["consumers/loader/resources.yaml"])["Resources"]

    rule = resources["ConsumerRule"]["Properties"]
    assert rule["EventPattern"] == event_pattern(events)
    assert rule["EventPattern"] == {
        "source": [{"prefix": "sluice."}],
        "detail-type": ["Object Delivered", "Object Stuck"],
    }
    assert rule["EventBusName"] == {"Fn::Sub": "${ResourcePrefix}-${Stage}-events"}
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["ConsumerQueue", "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["ConsumerDeadLetterQueue", "Arn"]}
    allow, deny = resources["ConsumerQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    rule_arn = (
        "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/"
        "${ResourcePrefix}-${Stage}-events/" + rule["Name"]["Fn::Sub"]
    )
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::Sub": rule_arn}}}
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert not any(r["Type"] == "AWS::SNS::Subscription" for r in resources.values())
    # It reads its queue and claims event ids; nothing else of the pipeline's.
    grants = declaration(ConsumerSpec("loader", {}, events=events))["functions"]["consume"]
    assert [g["sid"] for g in grants["grants"]] == ["Logs", "Tracing", "Idempotency", "Trigger"]


def test_the_handler_lists_the_events_it_receives() -> None:
    files = render_app(ConsumerSpec("loader", {}, events=("Object Landed",)))
    assert 'EVENTS = ("Object Landed",)' in files["consumers/loader/chalicelib/service.py"]
    assert 'WANTED = ("Object Landed",)' in files["tests/consumers/loader/test_loader.py"]


def test_an_unknown_event_is_refused_naming_the_pipelines_events(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path)
    result = new_consumer(repo, "loader", "--on-event", "Object Deleted")
    assert result.exit_code == 1
    assert "unknown event 'Object Deleted'" in result.output
    for known in DETAIL_TYPES:
        assert repr(known) in result.output
    assert not (repo / "consumers/loader").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("loader",),  # neither
        ("loader", "--on-event", "Object Delivered", "--filter", '{"priority": ["high"]}'),
        ("loader", "--on-event", "Object Delivered", "--direct"),
    ],
)
def test_records_or_events_but_not_both_nor_neither(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = new_consumer(tmp_path, *args)
    assert result.exit_code == 2
    assert "--on-event" in result.output
    assert not (tmp_path / "consumers").exists()


def test_an_event_consumer_names_each_event_once(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path)
    result = new_consumer(
        repo, "loader", "--on-event", "Object Stuck", "--on-event", "Object Stuck"
    )
    assert result.exit_code == 0, result.output
    resources = yaml.safe_load((repo / "consumers/loader/resources.yaml").read_text())
    assert resources["Resources"]["ConsumerRule"]["Properties"]["EventPattern"]["detail-type"] == [
        "Object Stuck"
    ]
    assert (
        json.loads((repo / "consumers/loader/.chalice/config.json").read_text())["app_name"]
        == "sluice-consumer-loader"
    )


def test_an_event_consumer_is_no_sink_of_records_for_the_ledger(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path)
    assert new_consumer(repo, "loader", "--on-event", "Object Delivered").exit_code == 0
    sinks = consumer_policies(repo / "consumers")
    assert "loader" not in sinks
    assert {"warehouse", "index", "alerts"} <= set(sinks)
