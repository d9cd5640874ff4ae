"""The router's wiring and deployment config: trigger, stages, least-privilege policies.

Config and policies are those `sluice deploy` renders from router/deploy.yaml (prefix
sluice, us-east-1, account 123456789012), for the usual stages and one never listed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sluice.config import (
    ATTRIBUTE_RESERVE_BYTES,
    MAX_CHUNK_MAX_BYTES,
    SNS_MAX_MESSAGE_BYTES,
    reset_settings,
)

APP_DIR = Path(__file__).resolve().parents[2] / "router"
STAGES = ("dev", "prod", "local", "test", "qa7")
WHERE = "us-east-1:123456789012"


def _rendered(stage: str) -> Any:
    """The router rendered for `stage` (sluice_tools: not in app_tests' venv, skipped there)."""
    render = pytest.importorskip("sluice_tools.deploy.render")
    return render.render_for(APP_DIR, stage)


def _policy(stage: str) -> dict[str, Any]:
    return dict(_rendered(stage).policies["route"])


def _grants(policy: dict[str, Any]) -> dict[str, set[str]]:
    """Action → resources it is allowed on."""
    grants: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        for action in statement["Action"]:
            grants.setdefault(action, set()).update(resources)
    return grants


def test_importing_the_app_loads_no_aws_sdk_and_calls_nothing() -> None:
    check = "import sys, app; print(sorted({'boto3', 'botocore'} & set(sys.modules)))"
    env = {**os.environ, "SLUICE_STAGE": "test", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=APP_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_router_listens_on_the_stages_clean_queue(app_module: ModuleType) -> None:
    # Its batch size is checked where it matters: a full batch of the largest chunks fits
    # Lambda's 6 MB payload (tests/infra/test_chunk_budgets.py).
    [source] = app_module.app.event_sources
    assert (source.name, source.queue) == ("route", "sluice-test-clean")


@pytest.mark.parametrize("setting", [None, MAX_CHUNK_MAX_BYTES], ids=["as-set", "largest"])
@pytest.mark.parametrize("stage", STAGES)
def test_the_router_cuts_what_it_publishes_to_fit_sns_whatever_its_chunk_setting(
    stage: str,
    setting: int | None,
    aws_env: None,
    service: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ingest and cleanse may cut chunks up to an SQS message; the router publishes to SNS.
    for name, value in _rendered(stage).environment("route").items():
        monkeypatch.setenv(name, value)
    if setting is not None:
        monkeypatch.setenv("SLUICE_CHUNK_MAX_BYTES", str(setting))
    reset_settings()

    limits = service.Router().limits

    assert limits.max_bytes + ATTRIBUTE_RESERVE_BYTES <= SNS_MAX_MESSAGE_BYTES


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_sets_its_name_and_a_policy_file_of_its_own(stage: str) -> None:
    config = _rendered(stage).config
    assert config["autogen_policy"] is False
    settings = config["stages"][stage]
    assert settings["environment_variables"]["SLUICE_STAGE"] == stage
    assert settings["environment_variables"]["SLUICE_RESOURCE_PREFIX"] == "sluice"
    assert settings["lambda_functions"]["route"]["iam_policy_file"] == f"policy-{stage}-route.json"


@pytest.mark.parametrize("stage", STAGES)
def test_policy_grants_exactly_what_the_router_uses_on_its_stages_resources(stage: str) -> None:
    grants = _grants(_policy(stage))
    p = f"sluice-{stage}"
    assert grants["sns:Publish"] == {f"arn:aws:sns:{WHERE}:{p}-records"}
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        assert grants[action] == {f"arn:aws:sqs:{WHERE}:{p}-clean"}
    assert grants["dynamodb:DeleteItem"] == {f"arn:aws:dynamodb:{WHERE}:table/{p}-idempotency"}
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem"):
        assert grants[action] == {
            f"arn:aws:dynamodb:{WHERE}:table/{p}-idempotency",
            f"arn:aws:dynamodb:{WHERE}:table/{p}-ledger",
        }
    # The ledger: entry and progress in one transaction, the progress read back; the events.
    assert grants["dynamodb:GetItem"] == {f"arn:aws:dynamodb:{WHERE}:table/{p}-ledger"}
    assert grants["events:PutEvents"] == {f"arn:aws:events:{WHERE}:event-bus/{p}-events"}
    for action in ("sns:ListSubscriptionsByTopic", "sns:GetSubscriptionAttributes"):
        assert grants[action] == {f"arn:aws:sns:{WHERE}:{p}-records"}
    assert grants["s3:PutObject"] == {
        f"arn:aws:s3:::{p}-quarantine/*",
        f"arn:aws:s3:::{p}-payloads/*",
    }
    assert grants["s3:GetObject"] == {f"arn:aws:s3:::{p}-payloads/*"}


@pytest.mark.parametrize("stage", STAGES)
def test_only_xray_is_granted_on_every_resource(stage: str) -> None:
    grants = _grants(_policy(stage))
    unbounded = {action for action, resources in grants.items() if "*" in resources}
    assert unbounded == {
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:PutSpans",
        "xray:PutSpansForIndexing",
    }
    other_stages = [f"sluice-{s}-" for s in STAGES if s != stage]
    text = json.dumps(_policy(stage))
    assert not any(name in text for name in other_stages)
