"""What `nox -s lint` checks, and with which arguments: the paths of ruff, the runs of mypy,
the templates of cfn-lint and checkov, bandit's scopes and the skips of .security-skips.toml.

The noxfile's lint session installs the tools and runs these commands; the choices are here,
with tests (tests/tools/test_lintplan.py). Standard library only, as `testrun`: nox imports
it from its own interpreter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice_tools.testrun import discover_apps, non_app_test_dirs

# Unannotated test functions and fixtures are allowed (their bodies are still checked).
RELAXED = ("--allow-untyped-defs", "--allow-incomplete-defs")
CFN_TEMPLATES = ("infra/**/*.yaml", "infra/**/*.yml", "consumers/*/resources.yaml")
BANDIT_SCOPES = frozenset({"deployed", "tools"})


def python_paths(root: Path) -> list[str]:
    """What ruff checks and formats ([tool.ruff]'s extend-exclude keeps vendor/ out)."""
    candidates = ("noxfile.py", "shared", "tools", "tests", "benchmarks", *discover_apps(root))
    return [p for p in candidates if (root / p).exists()]


@dataclass(frozen=True)
class MypyRun:
    """One mypy process: its label, cache dir, flags, paths and MYPYPATH (None: unset)."""

    label: str
    args: tuple[str, ...]
    env: dict[str, str] | None


def mypy_runs(root: Path) -> list[MypyRun]:
    """Strict (pyproject) on code, relaxed on tests; each app (its own `app`, `chalicelib`) and
    its tests in runs of their own, with the app dir (and its tests dir, where its conftest
    may put helper modules) on MYPYPATH. Each run has its own cache: mypy keys modules by
    name (every app has an `app`), and a cache shared by runs with other flags is rebuilt on
    every run (a warm run takes 1 s, a cold 10). Runs whose paths are all missing are left
    out."""
    planned: list[tuple[str, list[str], tuple[str, ...], dict[str, str] | None]] = [
        ("code", ["shared/sluice", "tools/sluice_tools"], (), None),
        ("tests", [p.relative_to(root).as_posix() for p in non_app_test_dirs(root)], RELAXED, None),
    ]
    for app in discover_apps(root):
        code_path = {"MYPYPATH": str(root / app)}
        planned.append((app, [f"{app}/app.py", f"{app}/chalicelib"], (), code_path))
        tests_path = {"MYPYPATH": os.pathsep.join([str(root / app), str(root / "tests" / app)])}
        planned.append((f"tests/{app}", [f"tests/{app}"], RELAXED, tests_path))
    runs = []
    for label, paths, flags, env in planned:
        existing = [p for p in paths if (root / p).exists()]
        if existing:
            cache = f".mypy_cache/nox-{label.replace('/', '-')}"
            runs.append(MypyRun(label, ("--cache-dir", cache, *flags, *existing), env))
    return runs


def cfn_templates(root: Path) -> list[str]:
    """The platform's templates and each consumer's resources template, sorted."""
    return sorted(
        p.relative_to(root).as_posix() for pattern in CFN_TEMPLATES for p in root.glob(pattern)
    )


def packaged_templates(packaged: Path) -> list[str]:
    """What `chalice package` wrote for each app, then the rendered stacks (for checkov)."""
    found = sorted(p.as_posix() for p in packaged.glob("*/sam.json"))
    return found + sorted(p.as_posix() for p in packaged.glob("stacks/*/template.yaml"))


def inline_skips(templates: Sequence[str]) -> list[str]:
    """Templates that skip a checkov check inline (every skip belongs in the skips file)."""
    return [t for t in templates if "checkov:skip" in Path(t).read_text(encoding="utf-8")]


def bandit_targets(root: Path) -> list[tuple[str, list[str]]]:
    """(scope, paths): the deployed code (shared/ and each app's code), then the tooling."""
    deployed = [p for app in discover_apps(root) for p in (f"{app}/app.py", f"{app}/chalicelib")]
    deployed = ["shared/sluice", *(p for p in deployed if (root / p).exists())]
    return [("deployed", deployed), ("tools", ["tools/sluice_tools"])]


def skip_problems(skips: Mapping[str, Any]) -> list[str]:
    """Entries of .security-skips.toml without an id, a reason or (bandit) a known scope."""
    problems = []
    for tool, entries in skips.items():
        for entry in entries:
            scoped = tool != "bandit" or entry.get("scope") in BANDIT_SCOPES
            if not (entry.get("id") and str(entry.get("reason", "")).strip() and scoped):
                problems.append(f".security-skips.toml: {tool} {entry}: id, reason (and scope)?")
    return problems


def skipped_ids(skips: Mapping[str, Any], tool: str, scope: str | None = None) -> str:
    """The ids `tool` skips (in `scope`, for bandit), comma-separated as the tools take them."""
    return ",".join(e["id"] for e in skips.get(tool, []) if scope in (None, e.get("scope")))
