"""The Chalice apps of the monorepo, in deploy order, and what their config.json says.

ingest, cleanse, router, then each `consumers/*/app.py` by name. Function names are
`{app_name}-{stage}-{handler}` (Chalice's rule).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGE_APPS = ("ingest", "cleanse", "router")


@dataclass(frozen=True)
class AppSpec:
    """One Chalice app dir and its `.chalice/config.json`."""

    key: str  # ingest | cleanse | router | consumer-<name>  (names its failures queue)
    path: Path
    config: dict[str, Any]

    @property
    def rel(self) -> str:
        """The app dir relative to the repo root (`consumers/index`), as --only takes it."""
        return self.path.name if self.key in STAGE_APPS else f"consumers/{self.path.name}"

    @property
    def app_name(self) -> str:
        return str(self.config["app_name"])

    def function_prefix(self, stage: str) -> str:
        return f"{self.app_name}-{stage}-"

    def function_name(self, stage: str, handler: str) -> str:
        return f"{self.function_prefix(stage)}{handler}"

    def stage_config(self, stage: str) -> dict[str, Any]:
        stages = self.config.get("stages") or {}
        if stage not in stages:
            raise KeyError(f"{self.path}/.chalice/config.json has no stage {stage!r}")
        return dict(stages[stage])

    def handlers(self, stage: str) -> list[str]:
        """Handlers named in the stage's lambda_functions (those with a policy file)."""
        return sorted((self.stage_config(stage).get("lambda_functions") or {}).keys())

    def lookup(self, stage: str, handler: str, key: str) -> Any:
        """A setting as Chalice looks it up: stage function, stage, top function, top."""
        stage_cfg = self.stage_config(stage)
        for scope in (
            (stage_cfg.get("lambda_functions") or {}).get(handler) or {},
            stage_cfg,
            (self.config.get("lambda_functions") or {}).get(handler) or {},
            self.config,
        ):
            if key in scope:
                return scope[key]
        return None

    def timeout(self, stage: str, handler: str) -> int:
        return int(self.lookup(stage, handler, "lambda_timeout") or 60)

    def policy_file(self, stage: str, handler: str) -> Path | None:
        name = self.lookup(stage, handler, "iam_policy_file")
        return self.path / ".chalice" / name if name else None


def discover_apps(root: Path) -> list[AppSpec]:
    """Every app dir with app.py and .chalice/config.json, in deploy order."""
    dirs = [root / name for name in STAGE_APPS]
    dirs += sorted(p.parent for p in root.glob("consumers/*/app.py"))
    apps = []
    for path in dirs:
        config = path / ".chalice" / "config.json"
        if not (path / "app.py").is_file() or not config.is_file():
            continue
        key = path.name if path.parent == root else f"consumer-{path.name}"
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
