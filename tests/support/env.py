"""The process environment of every test that talks to (moto's) AWS: one list, one fixture.

No real AWS: fake credentials, a fixed region, no profile or config file, no endpoint
override, and no `SLUICE_*` setting from the shell (the same rule as noxfile.py's
TEST_ENV, so a test run from a bare `pytest` behaves as under nox). `SLUICE_STAGE` is
`test`. Settings and cached clients are reset on the way in and out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sluice import aws
from sluice.config import reset_settings
from support.platform import STAGE

SET: dict[str, str] = {
    "SLUICE_STAGE": STAGE,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
UNSET = ("AWS_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "_X_AMZN_TRACE_ID")
UNSET_PREFIXES = ("SLUICE_", "AWS_ENDPOINT_URL")


@contextmanager
def aws_environment() -> Iterator[None]:
    """The test environment for the `with` block; the previous one is back afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n in UNSET or n.startswith(UNSET_PREFIXES)]:
            mp.delenv(name)
        for name, value in SET.items():
            mp.setenv(name, value)
        reset_settings()
        aws.reset_clients()
        try:
            yield
        finally:
            reset_settings()
            aws.reset_clients()


@pytest.fixture
def aws_env() -> Iterator[None]:
    """`aws_environment()` around one test (conftests import this fixture to offer it)."""
    with aws_environment():
        yield
