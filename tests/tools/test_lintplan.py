"""What `nox -s lint` checks (sluice_tools.lintplan), on a small tree in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

from sluice_tools import lintplan


def touch(root: Path, *paths: str, text: str = "") -> None:
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_each_app_and_its_tests_get_mypy_runs_of_their_own(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "noxfile.py",
        "shared/sluice/__init__.py",
        "router/app.py",
        "router/chalicelib/__init__.py",
        "consumers/index/app.py",  # no chalicelib, no tests
        "tests/router/test_r.py",
        "tests/tools/test_t.py",
    )
    expected = ["noxfile.py", "shared", "tests", "router", "consumers/index"]
    assert lintplan.python_paths(tmp_path) == expected
    runs = {run.label: run for run in lintplan.mypy_runs(tmp_path)}
    assert list(runs) == ["code", "tests", "router", "tests/router", "consumers/index"]
    assert runs["code"].args == ("--cache-dir", ".mypy_cache/nox-code", "shared/sluice")
    assert runs["code"].env is None
    assert runs["tests"].args[2:] == (*lintplan.RELAXED, "tests/tools")
    assert runs["router"].args[2:] == ("router/app.py", "router/chalicelib")
    assert runs["router"].env == {"MYPYPATH": str(tmp_path / "router")}
    paths = [str(tmp_path / "router"), str(tmp_path / "tests" / "router")]
    assert runs["tests/router"].env == {"MYPYPATH": os.pathsep.join(paths)}
    assert runs["tests/router"].args[1] == ".mypy_cache/nox-tests-router"
    assert runs["consumers/index"].args[2:] == ("consumers/index/app.py",)


def test_templates_bandit_scopes_and_inline_skips(tmp_path: Path) -> None:
    touch(tmp_path, "infra/platform.yaml", "infra/x/extra.yml", "consumers/a/resources.yaml")
    touch(tmp_path, "router/app.py", "router/chalicelib/__init__.py")
    assert lintplan.cfn_templates(tmp_path) == [
        "consumers/a/resources.yaml",
        "infra/platform.yaml",
        "infra/x/extra.yml",
    ]
    assert lintplan.bandit_targets(tmp_path) == [
        ("deployed", ["shared/sluice", "router/app.py", "router/chalicelib"]),
        ("tools", ["tools/sluice_tools"]),
    ]
    packaged = tmp_path / "packaged"
    touch(packaged, "router/sam.json", "stacks/platform/template.yaml")
    touch(packaged, "ingest/sam.json", text="# checkov:skip=CKV_AWS_1")
    found = lintplan.packaged_templates(packaged)
    assert [Path(p).relative_to(packaged).as_posix() for p in found] == [
        "ingest/sam.json",
        "router/sam.json",
        "stacks/platform/template.yaml",
    ]
    assert lintplan.inline_skips(found) == [found[0]]


def test_every_skip_needs_an_id_a_reason_and_for_bandit_a_scope() -> None:
    skips = {
        "bandit": [
            {"id": "B1", "reason": "why", "scope": "deployed"},
            {"id": "B2", "reason": "why", "scope": "tools"},
            {"id": "B3", "reason": "why", "scope": "everywhere"},
        ],
        "checkov": [{"id": "C1", "reason": "why"}, {"id": "C2", "reason": "  "}],
    }
    problems = lintplan.skip_problems(skips)
    assert len(problems) == 2
    assert "B3" in problems[0]
    assert "C2" in problems[1]
    assert lintplan.skipped_ids(skips, "bandit", "deployed") == "B1"
    assert lintplan.skipped_ids(skips, "checkov") == "C1,C2"
    assert lintplan.skipped_ids(skips, "semgrep") == ""
