"""Each function's rendered IAM policy allows what its code calls, and nothing outside its stage.

The calls are recorded, not guessed: every handler runs on a realistic event (the pipeline's
own messages, stage by stage) against moto's server, with botocore calls recorded per
function (`iam_driver.py`, one process per app). Policies are then matched with a small
IAM evaluator (`iam_model.py`). The policies are those `sluice deploy` renders from each
app's `deploy.yaml` (prefix sluice, region us-east-1, account 123456789012).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infra.iam_model import allows, grants, required
from infra.stack_model import ACCOUNT, ROOT, STAGES
from support.env import aws_environment

from sluice_tools.deploy.apps import AppSpec
from sluice_tools.deploy.render import RenderedApp, render_for, write_project_dir
from sluice_tools.deploy.stacks import deploy_stack
from sluice_tools.deploy.state import resolver_for
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import stage_stacks
from sluice_tools.motocompat.cfn import fill_gaps

DRIVER = Path(__file__).with_name("iam_driver.py")
SAMPLE = ROOT / "samples" / "incoming" / "order" / "orders-2026-11-27.jsonl"
LANDING_KEY = "incoming/order/orders-2026-11-27.jsonl"


def type_samples() -> dict[str, bytes]:
    """Every registered type's sample records, under the landing key ingest reads the type
    from: so each consumer's filter policy meets records of every type (derived from the
    registry: a new type or a consumer of one gets work here with no edit)."""
    from sluice.registry import load_registry

    return {
        f"incoming/{spec.name}/registry-sample.jsonl": (spec.path / "sample.jsonl").read_bytes()
        for spec in load_registry(ROOT / "types")
    }


RECORDS_TOPIC = "arn:aws:sns:us-east-1:123456789012:sluice-test-records"
ASYNC_KINDS = {"S3EventConfig", "SNSEventConfig", "ScheduledEventConfig"}


def plan_for(app: AppSpec, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """The events to run each handler of `app` on, in pipeline order."""
    if app.key == "ingest":
        return {
            # Small chunks and a large safety margin: the first object hands off to a
            # continuation, so on_continue has a real message to run on.
            "env": {"SLUICE_INGEST_SAFETY_MARGIN_MS": "5000", "SLUICE_CHUNK_MAX_RECORDS": "2"},
            "steps": [
                {
                    "handler": "on_object_created",
                    "kind": "s3",
                    "bucket": "sluice-test-landing",
                    "key": LANDING_KEY,
                },
                {
                    "handler": "on_continue",
                    "kind": "sqs",
                    "queue": "sluice-test-ingest-continue",
                    "limit": 1,
                },
                *(
                    {
                        "handler": "on_object_created",
                        "kind": "s3",
                        "bucket": "sluice-test-landing",
                        "key": key,
                    }
                    for key in type_samples()
                ),
                {"handler": "pull_sources", "kind": "schedule"},
                {"handler": "check_objects", "kind": "schedule"},
            ],
        }
    steps = []
    for source in sources:
        if source["kind"] == "SQSEventConfig":
            steps.append({"handler": source["handler"], "kind": "sqs", "queue": source["queue"]})
        elif source["kind"] == "SNSEventConfig":
            # A direct subscriber gets the records topic's messages: take them from the
            # warehouse's queue, which keeps every record type (raw delivery).
            steps.append(
                {
                    "handler": source["handler"],
                    "kind": "sns",
                    "topic": RECORDS_TOPIC,
                    "queue": "sluice-test-consumer-warehouse",
                    "limit": 3,
                }
            )
    return {"env": {}, "steps": steps}


def _is_event_consumer(app: AppSpec) -> bool:
    resources = app.path / "resources.yaml"
    return resources.is_file() and "AWS::Events::Rule" in resources.read_text(encoding="utf-8")


def _put_pipeline_events(target: Target) -> None:
    from sluice.events import DETAIL_TYPES

    entries = [
        {
            "EventBusName": "sluice-test-events",
            "Source": "sluice.test",
            "DetailType": detail_type,
            "Detail": json.dumps(
                {
                    "version": "1",
                    "event_id": f"e-{n}",
                    "correlation_id": "iam-driver",
                    "bucket": "sluice-test-landing",
                    "key": LANDING_KEY,
                    "record_type": "order",
                    "counts": {},
                    "landed_at": "2026-12-05T00:00:00.000Z",
                }
            ),
        }
        for n, detail_type in enumerate(DETAIL_TYPES)
    ]
    target.client("events").put_events(Entries=entries)


@pytest.fixture(scope="module")
def recorded(
    apps: list[AppSpec], triggers: dict[str, list[dict[str, Any]]], tmp_path_factory: Any
) -> Iterator[dict[str, dict[str, Any]]]:
    """{function name: {"calls": [...], "runs": [...]}} over the whole pipeline."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    tmp = tmp_path_factory.mktemp("iam")
    try:
        with aws_environment(), pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            target = Target.from_env("test", root=ROOT)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # moto warns about the types it skips
                for spec in stage_stacks(ROOT, "test"):
                    deploy_stack(target, spec, log=lambda _: None)
                    fill_gaps(target, spec, resolver_for(target, spec), log=lambda _: None)
            target.client("s3").put_object(
                Bucket="sluice-test-landing", Key=LANDING_KEY, Body=SAMPLE.read_bytes()
            )
            for key, body in type_samples().items():
                target.client("s3").put_object(Bucket="sluice-test-landing", Key=key, Body=body)
            results: dict[str, dict[str, Any]] = {}
            child_env = {**os.environ, "SLUICE_STAGE": "test"}
            # Record consumers first, then the consumers of pipeline events, whose queue is
            # fed by a rule on the bus: one event of each kind is put there for them (the
            # driver runs handlers on a few messages each, so no object completes here).
            for app in sorted(apps, key=_is_event_consumer):
                if _is_event_consumer(app):
                    _put_pipeline_events(target)
                plan = tmp / f"{app.key}-plan.json"
                out = tmp / f"{app.key}-calls.json"
                project = write_project_dir(app.path, "test", tmp / app.key)
                plan.write_text(json.dumps(plan_for(app, triggers[app.key])))
                done = subprocess.run(
                    [sys.executable, str(DRIVER), str(app.path), str(plan), str(out), str(project)],
                    cwd=app.path,
                    env=child_env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert done.returncode == 0, f"{app.rel}:\n{done.stderr[-3000:]}"
                for handler, entry in json.loads(out.read_text()).items():
                    results[app.function_name("test", handler)] = {
                        **entry,
                        "app": app,
                        "handler": handler,
                    }
            yield results
    finally:
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
        ).close()
        server.stop()


def policy_of(app: AppSpec, handler: str, stage: str = "test") -> dict[str, Any]:
    """The policy `sluice deploy` renders for the function (region us-east-1)."""
    return dict(rendered(app.path, stage).policies[handler])


@functools.cache
def rendered(app_dir: Path, stage: str) -> RenderedApp:
    return render_for(app_dir, stage, account=ACCOUNT)


@pytest.mark.slow
def test_every_handler_ran_on_its_event_without_crashing(
    recorded: dict[str, dict[str, Any]], apps: list[AppSpec]
) -> None:
    expected = {app.function_name("test", h) for app in apps for h in app.handlers("test")}
    assert set(recorded) == expected
    for name, entry in recorded.items():
        for run in entry["runs"]:
            assert run["error"] is None, f"{name}: {run['error']}"
    # The chain carried data all the way: every SQS/SNS-fed handler got records.
    fed = [r for e in recorded.values() for r in e["runs"] if r["kind"] in {"sqs", "sns"}]
    assert all(r["records"] > 0 for r in fed), fed


@pytest.mark.slow
def test_every_recorded_call_is_allowed_by_the_function_policy(
    recorded: dict[str, dict[str, Any]],
) -> None:
    missing: list[str] = []
    for name, entry in sorted(recorded.items()):
        policy = policy_of(entry["app"], entry["handler"])
        for call in entry["calls"]:
            for action, resource in required(call):
                if not allows(policy, action, resource):
                    missing.append(f"{name}: {action} on {resource}")
    assert not sorted(set(missing)), "rendered policies miss:\n" + "\n".join(sorted(set(missing)))


def test_every_trigger_and_failure_destination_is_allowed(
    apps: list[AppSpec], triggers: dict[str, list[dict[str, Any]]]
) -> None:
    missing = []
    for app in apps:
        failures = f"arn:aws:sqs:us-east-1:123456789012:sluice-test-{app.key}-failures"
        for source in triggers[app.key]:
            name = app.function_name("test", source["handler"])
            policy = policy_of(app, source["handler"])
            needs = [
                (
                    "logs:CreateLogStream",
                    f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{name}:log-stream:x",
                ),
                (
                    "logs:PutLogEvents",
                    f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{name}:log-stream:x",
                ),
            ]
            if source["kind"] == "SQSEventConfig":
                queue = f"arn:aws:sqs:us-east-1:123456789012:{source['queue']}"
                needs += [
                    (a, queue)
                    for a in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
                ]
            if source["kind"] in ASYNC_KINDS:
                # Lambda sends a failed async event to the destination with the function's role.
                needs.append(("sqs:SendMessage", failures))
            missing += [f"{name}: {a} on {r}" for a, r in needs if not allows(policy, a, r)]
    assert not missing, "rendered policies miss:\n" + "\n".join(missing)


def _scope_error(resource: str, actions: list[str], stage: str, app: AppSpec) -> str | None:
    if resource == "*":
        if all(a.lower().startswith("xray:") for a in actions):
            return None
        return f'"Resource": "*" for {actions}'
    parts = resource.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn":
        return f"{resource} is not an ARN"
    service, region, account, rest = parts[2], parts[3], parts[4], parts[5]
    if service != "s3" and (region, account) != ("us-east-1", ACCOUNT):
        return f"{resource} is not in region us-east-1, account {ACCOUNT}"
    if service == "ssm":
        return None  # parameters: see test_ssm_parameters_are_scoped_to_the_stage
    if service == "logs":
        prefix = f"log-group:/aws/lambda/{app.app_name}-{stage}-"
    elif service == "dynamodb":
        prefix = f"table/sluice-{stage}-"
    elif service == "events":
        prefix = f"event-bus/sluice-{stage}-"
    else:
        prefix = f"sluice-{stage}-"
    head = rest[: len(prefix)]
    if head != prefix or "*" in head or "?" in head:
        return f"{resource} is broader than (or outside) {prefix}*"
    return None


@pytest.mark.parametrize("stage", [*STAGES, "qa7"])
def test_no_grant_is_broader_than_the_stage_prefix(stage: str, apps: list[AppSpec]) -> None:
    problems = []
    for app in apps:
        for handler in app.handlers(stage):
            for actions, resource in grants(policy_of(app, handler, stage)):
                if any(a == "*" or a.endswith(":*") for a in actions):
                    problems.append(f"{app.rel}.{handler}: wildcard action in {actions}")
                error = _scope_error(resource, actions, stage, app)
                if error:
                    problems.append(f"{app.rel}.{handler} ({stage}): {error}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stage", ["dev", "prod", "local", "qa7"])
def test_every_stage_grants_what_the_test_stage_grants(stage: str, apps: list[AppSpec]) -> None:
    for app in apps:
        for handler in app.handlers("test"):
            tested = json.dumps(policy_of(app, handler, "test"), sort_keys=True)
            other = json.dumps(policy_of(app, handler, stage), sort_keys=True)
            expected = tested.replace("-test-", f"-{stage}-").replace(
                "parameter/sluice/test/", f"parameter/sluice/{stage}/"
            )
            assert other == expected, f"{app.rel}.{handler}"


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_ssm_parameters_are_scoped_to_the_stage(stage: str, apps: list[AppSpec]) -> None:
    scoped = []
    for app in apps:
        for handler in app.handlers(stage):
            for _actions, resource in grants(policy_of(app, handler, stage)):
                if resource.startswith("arn:aws:ssm:"):
                    scoped.append(f"parameter/sluice/{stage}/" in resource)
    assert all(scoped)
