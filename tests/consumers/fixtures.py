"""The fixtures of every consumer's tests, for the consumer whose tests dir a test is in.

`tests/consumers/<name>/conftest.py` imports them (one line); the consumer is
`consumers/<name>`, found from the test's path, so the conftests differ in nothing. Its
app dir goes first on sys.path (under nox it is on PYTHONPATH already), `account` is stage
`test` in a moto account built from the templates (with the consumer's EventBridge rules,
if its resources.yaml has any), and `app_module` is its `app`, imported in that account.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from support.env import aws_env

from consumers import eventkit, testkit

TESTS_DIR = Path(__file__).resolve().parent


def consumer_dir(test_path: Path) -> Path:
    """`consumers/<name>` of a test in `tests/consumers/<name>/`."""
    try:
        name = test_path.resolve().relative_to(TESTS_DIR).parts[0]
    except (ValueError, IndexError):
        raise LookupError(
            f"{test_path} is not in a consumer's tests dir {TESTS_DIR}/<name>/"
        ) from None
    return testkit.REPO / "consumers" / name


@pytest.fixture
def app_dir(request: pytest.FixtureRequest) -> Path:
    path = consumer_dir(request.path)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    return path


@pytest.fixture
def account(aws_env: None, app_dir: Path) -> Iterator[testkit.Account]:
    from chalicelib import service

    service.reset()
    template = app_dir / "resources.yaml"
    for made in testkit.mocked_account(template):
        eventkit.create_event_rules(made, testkit.load_template(template))  # if it has rules
        yield made
    service.reset()


@pytest.fixture
def app_module(account: testkit.Account) -> ModuleType:
    import app  # in the test environment (`account`): its decorators read SLUICE_STAGE

    return app


__all__ = ["account", "app_dir", "app_module", "aws_env"]
