"""The whole stage deployed into one moto server per test session (`sluice deploy`).

A deploy runs `chalice deploy` per app (about a minute): the modules that read or break the
deployed stage share one. `deployed` puts the suite's environment, with AWS_ENDPOINT_URL set
to that server, around a module; every module leaves the stage as healthy as it found it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sluice_tools.deploy.build import build_lock
from sluice_tools.deploy.pipeline import DeployReport, deploy_stage
from sluice_tools.deploy.target import Target
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
    deploy only); stopped on the way out.

    The server is a process of its own: moto keeps its state per process, so an in-process
    server would share it with every `mock_aws` and emulator of the session, and the first of
    those to reset moto (they all do, on the way out) would delete the deployed stage under
    the modules still using it.
    """
    with moto_server_process() as endpoint:
        yield _deploy_into(endpoint, stage, build_dir, env)


@contextmanager
def moto_server_process() -> Iterator[str]:
    """`python -m moto.server` on a free loopback port; yields its endpoint once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not start on {endpoint}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _deploy_into(
    endpoint: str, stage: str, build_dir: Path, env: Mapping[str, str] | None
) -> Deployed:
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
    return Deployed(target, report, log, build_dir, endpoint)


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
