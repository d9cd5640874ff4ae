"""With a `sluice local up` running, the CLI finds its endpoint and stage by itself.

The up is faked: a checkout of the test's own with `.sluice/local/up.json` naming a live pid
(this test process) or a dead one, and for `dlq list` a moto server at the named endpoint.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from sluice_tools.cli import main
from sluice_tools.local.emulator import CREDENTIALS
from sluice_tools.localstate import local_endpoint

ROOT = Path(__file__).resolve().parents[2]  # the real checkout: its consumers' filters
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", *CREDENTIALS)
ELSEWHERE = "http://127.0.0.1:9"  # an endpoint nothing listens on


@pytest.fixture
def checkout(aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A checkout (cwd) without an up; the endpoint variables come back after the test."""
    for name in ENDPOINT_VARIABLES:  # recorded, so what the CLI sets is undone
        monkeypatch.setenv(name, os.environ.get(name, "unset"))
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("SLUICE_STAGE")
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "platform.yaml").write_text("Resources: {}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_up(root: Path, pid: int, endpoint: str = ELSEWHERE, **more: Any) -> None:
    state = root / ".sluice" / "local"
    state.mkdir(parents=True, exist_ok=True)
    (state / "up.json").write_text(
        json.dumps({"pid": pid, "endpoint": endpoint, "stage": "local", "at": 0, **more})
    )


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_a_live_up_gives_the_stage_endpoint_and_credentials_to_dlq(
    checkout: Path, moto_endpoint: str
) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    sqs.create_queue(QueueName="sluice-local-raw-dlq")
    write_up(checkout, os.getpid(), moto_endpoint)

    result = CliRunner().invoke(main, ["dlq", "list"])

    assert result.exit_code == 0, result.output
    assert "sluice-local-raw-dlq" in result.stdout
    assert result.stderr.splitlines() == [
        f"using the endpoint of `sluice local up` (pid {os.getpid()}): {moto_endpoint}"
    ]
    assert os.environ["AWS_ENDPOINT_URL"] == moto_endpoint
    for name, value in CREDENTIALS.items():
        assert os.environ[name] == value


@pytest.mark.parametrize(
    ("args", "module", "function"),
    [
        (["doctor"], "sluice_tools.deploy.doctor", "run_doctor"),
        (["deploy"], "sluice_tools.deploy.pipeline", "deploy_stage"),
        (["ledger", "--repo", str(ROOT)], "sluice_tools.ledger.command", "ledger_report"),
    ],
)
def test_deploy_doctor_and_ledger_default_to_the_live_up(
    checkout: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    module: str,
    function: str,
) -> None:
    """What each command hands on: the up's stage, with the up's endpoint in effect."""
    seen: dict[str, Any] = {}

    def fake(what: Any, *_args: Any, **_kwargs: Any) -> Any:
        seen["endpoint"] = os.environ.get("AWS_ENDPOINT_URL")
        seen["what"] = what
        raise SystemExit(0)

    monkeypatch.setattr(f"{module}.{function}", fake)
    write_up(checkout, os.getpid())

    result = CliRunner().invoke(main, args)

    assert result.exit_code == 0, result.output
    assert seen["endpoint"] == ELSEWHERE
    target = seen["what"]  # a Target, or the ledger's ResourceNames
    assert (target.stage, target.prefix) == ("local", "sluice")
    assert "using the endpoint of `sluice local up`" in result.stderr


def test_info_takes_the_stage_and_prefix_of_a_live_up(checkout: Path) -> None:
    write_up(checkout, os.getpid(), prefix="acme-data", region="eu-west-1")

    result = CliRunner().invoke(main, ["info", "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["landing_bucket"] == "acme-data-local-landing"
    assert os.environ["AWS_REGION"] == "eu-west-1"


def test_a_dead_up_is_ignored(checkout: Path) -> None:
    write_up(checkout, dead_pid())

    result = CliRunner().invoke(main, ["info"])

    assert local_endpoint() is None
    assert result.exit_code == 2
    assert "Missing option '--stage'" in result.output
    assert "using the endpoint" not in result.output
    assert "AWS_ENDPOINT_URL" not in os.environ


def test_another_stage_or_endpoint_is_not_sent_to_the_live_up(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_up(checkout, os.getpid())

    other_stage = CliRunner().invoke(main, ["info", "--stage", "prod"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8")
    other_endpoint = CliRunner().invoke(main, ["info"])

    assert other_stage.exit_code == 0, other_stage.output
    assert "sluice-prod-landing" in other_stage.stdout
    assert "using the endpoint" not in other_stage.output
    assert other_endpoint.exit_code == 2
    assert "Missing option '--stage'" in other_endpoint.output
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8"


def test_an_unreadable_state_file_is_no_up(checkout: Path) -> None:
    write_up(checkout, os.getpid())
    (checkout / ".sluice" / "local" / "up.json").write_text('{"pid": "x"')

    assert local_endpoint() is None
