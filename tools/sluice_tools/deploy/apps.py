"""The Chalice apps of the monorepo, in deploy order, with their names and declarations.

ingest, cleanse, router, then each `consumers/*/app.py` by name. Function names are
`{app_name}-{stage}-{handler}` (Chalice's rule). The committed `.chalice/config.json` holds
the app's name only; its stages, environments and policies are rendered at deploy time
from the app's `deploy.yaml` (`render.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from sluice_tools.deploy.declaration import Declaration, load_declaration
from sluice_tools.stages import CONSUMER_PREFIX, PIPELINE_STAGES, app_dirs


@dataclass(frozen=True)
class AppSpec:
    """One Chalice app dir and its `.chalice/config.json`."""

    key: str  # ingest | cleanse | router | consumer-<name>  (names its failures queue)
    path: Path
    config: dict[str, Any]

    @property
    def rel(self) -> str:
        """The app dir relative to the repo root (`consumers/index`), as --only takes it."""
        return self.path.name if self.key in PIPELINE_STAGES else f"consumers/{self.path.name}"

    @property
    def app_name(self) -> str:
        return str(self.config["app_name"])

    def function_prefix(self, stage: str) -> str:
        return f"{self.app_name}-{stage}-"

    def function_name(self, stage: str, handler: str) -> str:
        return f"{self.function_prefix(stage)}{handler}"

    @property
    def root(self) -> Path:
        """The monorepo root the app belongs to."""
        return self.path.parent if self.key in PIPELINE_STAGES else self.path.parent.parent

    @cached_property
    def declaration(self) -> Declaration:
        """The app's `deploy.yaml`: its functions, their settings and grants."""
        return load_declaration(self.path)

    def handlers(self, stage: str | None = None) -> list[str]:
        """The functions the app declares (the same in every stage)."""
        return sorted(self.declaration.functions)

    def timeout(self, stage: str, handler: str) -> int:
        return self.declaration.settings(stage, handler).timeout


def discover_apps(root: Path) -> list[AppSpec]:
    """Every app dir with app.py and .chalice/config.json, in deploy order."""
    apps = []
    for path in app_dirs(root):
        config = path / ".chalice" / "config.json"
        if not config.is_file():
            continue
        key = path.name if path.parent == root else f"{CONSUMER_PREFIX}{path.name}"
        apps.append(AppSpec(key=key, path=path, config=json.loads(config.read_text())))
    return apps


def select_apps(apps: list[AppSpec], only: list[str] | None) -> list[AppSpec]:
    """Apps named in `only` (ingest, consumers/index, index or consumer-index); all if None."""
    if not only:
        return apps
    wanted = {o.strip("/") for o in only}
    chosen = [a for a in apps if {a.rel, a.key, a.path.name, a.app_name} & wanted]
    known = {n for a in apps for n in (a.rel, a.key, a.path.name, a.app_name)}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(
            f"unknown app(s) {', '.join(unknown)}; known: {', '.join(a.rel for a in apps)}"
        )
    return chosen
