"""Fixtures of ingest's tests: env of stage `test`, a moto account from infra/platform.yaml,
and the ingest app folder first on sys.path (its `app` and `chalicelib` are imported here).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support import platform as moto_platform
from support.env import aws_env, aws_environment
from support.platform import STAGE

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "ingest"

for path in (APP_DIR, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from ingest_support import FakeContext, Platform, drain, s3_event  # noqa: E402

from chalicelib import pull, service  # noqa: E402
from chalicelib.service import Ingestor  # noqa: E402
from chalicelib.settings import IngestSettings  # noqa: E402
from sluice.config import ResourceNames, Settings, reset_settings  # noqa: E402


@pytest.fixture(autouse=True)
def ingest_env(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Environment of the ingest function in stage `test` (its types: the registry's)."""
    reset_settings()
    service.reset()
    pull.reset()
    yield
    service.reset()
    pull.reset()


@pytest.fixture(scope="session")
def app_module() -> ModuleType:
    """ingest/app.py, imported once per test process, in the test environment: its
    decorators read SLUICE_STAGE for the bucket, queue and schedule."""
    with aws_environment():
        return importlib.import_module("app")


@pytest.fixture
def platform(aws_env: None) -> Iterator[Platform]:
    """A moto account with the platform's tables (from the template), buckets and queues."""
    names = ResourceNames(stage=STAGE)
    with moto_platform.mocked_platform(
        buckets=(names.landing_bucket, names.quarantine_bucket, names.payload_bucket),
        queues=(names.raw_queue, names.ingest_continue_queue),
    ) as (raw, cont):
        yield Platform(names, raw, cont)


@pytest.fixture
def make_ingestor(platform: Platform) -> Callable[..., Ingestor]:
    """`make_ingestor(**ingest_settings)`: an Ingestor with settings read now from the env."""

    def make(**overrides: Any) -> Ingestor:
        reset_settings()
        ingest = IngestSettings.from_env()
        if overrides:
            from dataclasses import replace

            ingest = replace(ingest, **overrides)
        return Ingestor(settings=Settings.from_env(), ingest=ingest, sleep=lambda _s: None)

    return make


__all__ = ["FakeContext", "Platform", "aws_env", "drain", "s3_event"]
