"""Fixtures of the infrastructure tests: the stage's templates, apps and their triggers."""

from __future__ import annotations

from typing import Any

import pytest
from infra.stack_model import ROOT, STAGE, app_triggers
from support.env import aws_env

from sluice_tools.deploy.apps import AppSpec, discover_apps
from sluice_tools.deploy.templates import StackSpec, stage_stacks
from sluice_tools.stages import PIPELINE_STAGES


@pytest.fixture(scope="session")
def apps() -> list[AppSpec]:
    found = discover_apps(ROOT)
    assert [a.key for a in found][: len(PIPELINE_STAGES)] == list(PIPELINE_STAGES)
    return found


@pytest.fixture(scope="session")
def triggers(apps: list[AppSpec]) -> dict[str, list[dict[str, Any]]]:
    """{app key: its event sources} in stage test."""
    return {app.key: app_triggers(app) for app in apps}


@pytest.fixture(scope="session")
def stacks() -> list[StackSpec]:
    return stage_stacks(ROOT, STAGE)


@pytest.fixture(scope="session")
def platform(stacks: list[StackSpec]) -> StackSpec:
    return stacks[0]


__all__ = ["aws_env"]
