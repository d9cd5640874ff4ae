"""Settings come from the environment on first use, with clear errors naming the variable."""

from __future__ import annotations

import pytest

from sluice.config import ResourceNames, Settings, get_settings, reset_settings
from sluice.errors import ConfigError

BASE = {"SLUICE_STAGE": "dev", "AWS_REGION": "eu-west-1"}


def test_settings_read_stage_region_and_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.stage == "dev"
    assert settings.region == "eu-west-1"
    assert settings.idempotency_enabled is True
    assert settings.names.raw_queue == "sluice-dev-raw"


def test_missing_stage_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="SLUICE_STAGE is not set"):
        Settings.from_env({"AWS_REGION": "us-east-1"})


def test_missing_region_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="AWS_REGION"):
        Settings.from_env({"SLUICE_STAGE": "dev"})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SLUICE_STAGE", "Prod", "invalid stage 'Prod'"),
        ("SLUICE_IDEMPOTENCY", "maybe", "SLUICE_IDEMPOTENCY='maybe' is not a boolean"),
        ("SLUICE_CHUNK_MAX_BYTES", "lots", "SLUICE_CHUNK_MAX_BYTES='lots' is not an integer"),
        ("SLUICE_CHUNK_MAX_BYTES", "1048577", "must be between"),
        ("SLUICE_CHUNK_MAX_RECORDS", "0", "must be 1..10000"),
        ("SLUICE_RESOURCE_PREFIX", "My_Prefix", "invalid SLUICE_RESOURCE_PREFIX"),
    ],
)
def test_invalid_values_are_errors_naming_the_variable(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**BASE, variable: value}).names  # noqa: B018


def test_idempotency_can_be_switched_off() -> None:
    assert Settings.from_env({**BASE, "SLUICE_IDEMPOTENCY": "off"}).idempotency_enabled is False


def test_resource_names_follow_the_convention() -> None:
    names = ResourceNames(stage="prod")
    assert names.landing_bucket == "sluice-prod-landing"
    assert names.dlq_of(names.clean_queue) == "sluice-prod-clean-dlq"
    assert names.consumer_queue("warehouse") == "sluice-prod-consumer-warehouse"
    assert ResourceNames(stage="prod", prefix="acme").records_topic == "acme-prod-records"
    assert all(v.startswith("sluice-prod-") for v in names.as_dict().values())


def test_settings_are_read_on_first_use_and_can_be_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    reset_settings()
    monkeypatch.setenv("SLUICE_STAGE", "one")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert get_settings().stage == "one"
    monkeypatch.setenv("SLUICE_STAGE", "two")
    assert get_settings().stage == "one"  # cached for the life of the process
    reset_settings()
    assert get_settings().stage == "two"
    reset_settings()


def test_importing_the_runtime_needs_no_settings_and_no_tooling() -> None:
    """Import every runtime module with an empty environment; nothing heavy may come along."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, sluice\n"
        "for m in pkgutil.walk_packages(sluice.__path__, 'sluice.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in ('moto', 'pytest', 'click', 'nox', 'chalice', 'boto3',"
        " 'aws_xray_sdk') if n in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_names_need_only_the_stage_so_decorators_can_use_them_at_import() -> None:
    from sluice.config import names

    assert names({"SLUICE_STAGE": "local"}).raw_queue == "sluice-local-raw"
    with pytest.raises(ConfigError, match="SLUICE_STAGE is not set"):
        names({})
