"""The whole stage deployed into one moto server per test session (`sluice deploy`).

A deploy runs `chalice deploy` per app (about a minute): the modules that read or break the
deployed stage share one. `deployed` puts the suite's environment, with AWS_ENDPOINT_URL set
to that server, around a module; every module leaves the stage as healthy as it found it.
"""

from __future__ import annotations

import logging
import shutil
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sluice_tools.deploy import DeployReport, Target, deploy_stage
from sluice_tools.deploy.build import build_lock
from support.env import aws_environment

ROOT = Path(__file__).resolve().parents[2]
STAGE = "test"
# Kept between runs: chalice caches each app's dependency zip in its .chalice/deployments.
BUILD_DIR = ROOT / ".sluice" / "test-build"


@dataclass
class Deployed:
    target: Target
    report: DeployReport
    log: list[str]
    build_dir: Path
    endpoint: str

    def client(self, service: str) -> Any:
        return self.target.client(service)


@contextmanager
def deployed_into_moto(
    stage: str, build_dir: Path, env: Mapping[str, str] | None = None
) -> Iterator[Deployed]:
    """A moto server with `stage` deployed (`env`, e.g. a prefix or region, set around the
    deploy only); reset and stopped on the way out."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with aws_environment(), pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            for name, value in (env or {}).items():
                mp.setenv(name, value)
            target = Target.from_env(stage, root=ROOT)
            log: list[str] = []
            with build_lock(build_dir):  # another test run may be deploying from it
                # A previous session's Chalice state names resources this fresh moto never had.
                for stale in build_dir.glob("**/.chalice/deployed"):
                    shutil.rmtree(stale)
                report = deploy_stage(target, build_dir=build_dir, log=log.append)
        yield Deployed(target, report, log, build_dir, endpoint)
    finally:
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
        ).close()
        server.stop()


@pytest.fixture(scope="session")
def deployed_stage() -> Iterator[Deployed]:
    """moto's server with stage `test` deployed (the environment is set only around it)."""
    with deployed_into_moto(STAGE, BUILD_DIR) as deployed:
        yield deployed


@pytest.fixture(scope="module")
def deployed(deployed_stage: Deployed) -> Iterator[Deployed]:
    """The deployed stage, with the suite's environment pointing at it around a module."""
    with aws_environment(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", deployed_stage.endpoint)
        yield deployed_stage
