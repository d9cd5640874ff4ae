"""The warehouse consumer's tests: stage `test` in a moto account, and the app imported."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from support.env import aws_env

from consumers import testkit

APP_DIR = testkit.REPO / "consumers" / "warehouse"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))


@pytest.fixture
def account(aws_env: None) -> Iterator[testkit.Account]:
    from chalicelib import service

    service.reset()
    yield from testkit.mocked_account(APP_DIR / "resources.yaml")
    service.reset()


@pytest.fixture
def app_module(account: testkit.Account) -> ModuleType:
    import app  # in the test environment (`account`): its decorators read SLUICE_STAGE

    return app


@pytest.fixture
def app_dir() -> Path:
    return APP_DIR


__all__ = ["aws_env"]
