"""An app's `deploy.yaml`: how each of its functions runs and what each may do, for any stage.

The app owns it (a team owning a stage owns its grants). Grants name resources by
reference (`queue:raw`, `bucket:quarantine/*`, `self:log-group`), never by ARN: rendering
(`render.py`) turns them into exact ARNs for one prefix, stage, region, account and partition.

    defaults:            # every function, every stage
      timeout: 60
      memory: 512
      xray: true         # always off on the emulator
      environment: {LOG_LEVEL: INFO}
    stages:              # overrides by stage name; an environment value null removes it
      prod: {memory: 1024, functions: {cleanse: {timeout: 90}}}
    functions:
      cleanse:
        timeout: 60      # optional, over defaults
        grants:
          - sid: ReceiveRaw
            actions: [sqs:ReceiveMessage, sqs:DeleteMessage]
            resources: [queue:raw]

Lookup order is Chalice's: stage function, stage, function, defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DECLARATION_FILE = "deploy.yaml"
RESERVED_ENVIRONMENT = ("SLUICE_STAGE", "SLUICE_RESOURCE_PREFIX")  # set by rendering
REFERENCE_KINDS = ("queue", "topic", "table", "bucket", "bus", "parameter", "self")
SELF_REFERENCES = ("log-group",)
_SETTINGS = {"timeout", "memory", "xray", "environment"}
_REFERENCE = re.compile(r"(?P<kind>[a-z]+):(?P<name>[A-Za-z0-9_.*/-]+)")
_ACTION = re.compile(r"[a-z0-9-]+:[A-Za-z*]+")


class DeclarationError(ValueError):
    """A `deploy.yaml` that cannot be rendered; the message names the file and the key."""


@dataclass(frozen=True)
class Grant:
    """One statement: actions allowed on references (`*` only for X-Ray, which needs it)."""

    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]


@dataclass(frozen=True)
class FunctionSettings:
    """What Chalice needs for one function in one stage (before names are rendered)."""

    timeout: int
    memory: int
    xray: bool
    environment: dict[str, str]


@dataclass(frozen=True)
class Declaration:
    path: Path
    defaults: dict[str, Any]
    stages: dict[str, dict[str, Any]]
    functions: dict[str, dict[str, Any]]
    grants: dict[str, tuple[Grant, ...]] = field(default_factory=dict)

    def settings(self, stage: str, function: str) -> FunctionSettings:
        """The function's settings in `stage` (any stage name; unlisted ones get defaults)."""
        if function not in self.functions:
            raise DeclarationError(f"{self.path}: no function {function!r}")
        stage_cfg = self.stages.get(stage) or {}
        scopes = [
            self.defaults,
            self.functions[function],
            stage_cfg,
            (stage_cfg.get("functions") or {}).get(function) or {},
        ]
        merged: dict[str, Any] = {"timeout": 60, "memory": 512, "xray": True}
        environment: dict[str, str] = {}
        for scope in scopes:
            for key in ("timeout", "memory", "xray"):
                if key in scope:
                    merged[key] = scope[key]
            for name, value in (scope.get("environment") or {}).items():
                if value is None:
                    environment.pop(name, None)
                else:
                    environment[name] = str(value)
        return FunctionSettings(
            timeout=int(merged["timeout"]),
            memory=int(merged["memory"]),
            xray=bool(merged["xray"]),
            environment=environment,
        )


def load_declaration(app_dir: Path) -> Declaration:
    """Read and check `APP/deploy.yaml`; a mistake is a `DeclarationError` naming where."""
    path = app_dir / DECLARATION_FILE
    if not path.is_file():
        raise DeclarationError(
            f"{path} is missing: every app declares its functions and grants there"
        )
    with path.open(encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise DeclarationError(f"{path}: expected a mapping at the top")
    unknown = set(raw) - {"defaults", "stages", "functions"}
    if unknown:
        raise DeclarationError(f"{path}: unknown key(s) {sorted(unknown)}")
    defaults = _settings(path, "defaults", raw.get("defaults") or {})
    stages = {}
    for stage, cfg in (raw.get("stages") or {}).items():
        cfg = dict(cfg or {})
        per_function = cfg.pop("functions", None) or {}
        stages[str(stage)] = _settings(path, f"stages.{stage}", cfg)
        stages[str(stage)]["functions"] = {
            str(fn): _settings(path, f"stages.{stage}.functions.{fn}", v or {})
            for fn, v in per_function.items()
        }
    functions: dict[str, dict[str, Any]] = {}
    grants: dict[str, tuple[Grant, ...]] = {}
    for name, cfg in (raw.get("functions") or {}).items():
        cfg = dict(cfg or {})
        statements = cfg.pop("grants", None) or []
        functions[str(name)] = _settings(path, f"functions.{name}", cfg)
        grants[str(name)] = tuple(
            _grant(path, f"functions.{name}.grants[{i}]", s) for i, s in enumerate(statements)
        )
    if not functions:
        raise DeclarationError(f"{path}: declares no functions")
    for stage, cfg in stages.items():
        extra = set(cfg["functions"]) - set(functions)
        if extra:
            raise DeclarationError(f"{path}: stages.{stage} names unknown function(s) {extra}")
    return Declaration(path, defaults, stages, functions, grants)


def _settings(path: Path, where: str, cfg: Any) -> dict[str, Any]:
    if not isinstance(cfg, dict):
        raise DeclarationError(f"{path}: {where} must be a mapping")
    unknown = set(cfg) - _SETTINGS
    if unknown:
        raise DeclarationError(f"{path}: {where} has unknown key(s) {sorted(unknown)}")
    environment = cfg.get("environment") or {}
    if not isinstance(environment, dict):
        raise DeclarationError(f"{path}: {where}.environment must be a mapping")
    reserved = set(environment) & set(RESERVED_ENVIRONMENT)
    if reserved:
        raise DeclarationError(
            f"{path}: {where}.environment sets {sorted(reserved)}: the deploy sets those"
        )
    return dict(cfg)


def _grant(path: Path, where: str, raw: Any) -> Grant:
    if not isinstance(raw, dict) or set(raw) - {"sid", "actions", "resources"}:
        raise DeclarationError(f"{path}: {where} must have sid, actions and resources only")
    actions = tuple(str(a) for a in raw.get("actions") or [])
    resources = tuple(str(r) for r in raw.get("resources") or [])
    if not actions or not resources:
        raise DeclarationError(f"{path}: {where} needs actions and resources")
    for action in actions:
        if not _ACTION.fullmatch(action) or action.endswith(":*"):
            raise DeclarationError(f"{path}: {where}: {action!r} is not one action")
    for resource in resources:
        if resource == "*":
            if not all(a.startswith("xray:") for a in actions):
                raise DeclarationError(f"{path}: {where}: '*' is allowed for X-Ray only")
            continue
        match = _REFERENCE.fullmatch(resource)
        if not match or match["kind"] not in REFERENCE_KINDS:
            raise DeclarationError(
                f"{path}: {where}: {resource!r} is not a reference "
                f"({', '.join(k + ':NAME' for k in REFERENCE_KINDS)})"
            )
        if match["kind"] == "self" and match["name"] not in SELF_REFERENCES:
            raise DeclarationError(f"{path}: {where}: unknown {resource!r}")
        if match["kind"] in ("queue", "topic", "table", "bus") and "*" in match["name"]:
            raise DeclarationError(f"{path}: {where}: {resource!r}: name one resource")
    return Grant(str(raw.get("sid") or ""), actions, resources)
