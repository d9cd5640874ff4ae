"""The test runner behind `nox -s tests` (sluice_tools.testrun), on small trees in tmp_path
and a fake runner in place of pytest processes."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

import sluice_tools.stages
from sluice_tools import testrun
from sluice_tools.testrun import GroupResult, TestGroup


def touch(root: Path, *paths: str) -> None:
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Stages (cleanse without tests), two consumers, one consumer's tests without its app,
    non-app dirs (support has no tests) and a top-level test module."""
    touch(
        tmp_path,
        "router/app.py",
        "ingest/app.py",
        "cleanse/app.py",
        "consumers/index/app.py",
        "consumers/alerts/app.py",
        "tests/ingest/test_a.py",
        "tests/router/test_r.py",
        "tests/consumers/index/test_i.py",
        "tests/consumers/alerts/conftest.py",
        "tests/consumers/ghost/test_g.py",
        "tests/consumers/__pycache__/x.pyc",
        "tests/shared/test_s.py",
        "tests/tools/deep/x_test.py",
        "tests/support/helpers.py",
        "tests/test_top.py",
    )
    return tmp_path


def entries(plan: list[TestGroup | GroupResult]) -> list[tuple[str, str]]:
    return [
        (e.label, "skip: " + e.detail if isinstance(e, GroupResult) else ",".join(e.paths))
        for e in plan
    ]


def test_plan_puts_non_app_dirs_in_one_process_and_each_app_in_its_own(tree: Path) -> None:
    assert testrun.discover_apps(tree) == [
        "ingest",
        "cleanse",
        "router",
        "consumers/alerts",
        "consumers/index",
    ]
    assert entries(testrun.plan_groups(tree)) == [
        ("shared, tools + tests/test_*.py", "tests/shared,tests/tools,tests/test_top.py"),
        ("ingest", "tests/ingest"),
        ("cleanse", "skip: no test files in tests/cleanse/"),
        ("router", "tests/router"),
        ("consumers/alerts", "skip: no test files in tests/consumers/alerts/"),
        ("consumers/ghost (no consumers/ghost/app.py)", "tests/consumers/ghost"),
        ("consumers/index", "tests/consumers/index"),
    ]
    apps = {e.label: e.app for e in testrun.plan_groups(tree) if isinstance(e, TestGroup)}
    assert apps["router"] == "router"
    assert apps["shared, tools + tests/test_*.py"] is None


def test_paths_among_the_arguments_pick_groups_and_options_go_to_every_process(
    tree: Path,
) -> None:
    paths, options = testrun.split_posargs(
        tree, ["tests/router", "-k", "tests/ingest", "-x", "tests/shared/test_s.py::t", "nope"]
    )
    assert paths == ["tests/router", "tests/shared/test_s.py::t"]
    assert options == ["-k", "tests/ingest", "-x", "nope"]

    router = TestGroup("router", "router", ("tests/router",), app="router")
    index = TestGroup("consumers/index", "ci", ("tests/consumers/index",), "consumers/index")
    assert testrun.selected_paths(tree, router, []) == ["tests/router"]
    assert testrun.selected_paths(tree, router, ["tests/router/test_r.py::t"]) == [
        "tests/router/test_r.py::t"
    ]
    assert testrun.selected_paths(tree, index, ["tests/consumers"]) == ["tests/consumers/index"]
    assert testrun.selected_paths(tree, router, ["tests/consumers"]) == []


def test_the_environment_has_no_real_aws_and_an_app_group_its_app_on_pythonpath(
    tree: Path,
) -> None:
    shell = {"SLUICE_STAGE": "prod", "AWS_ENDPOINT_URL_S3": "http://x", "PYTHONPATH": "/mine"}
    env = testrun.group_env(tree, TestGroup("router", "router", ("tests/router",), "router"), shell)
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["AWS_PROFILE"] is None
    assert env["SLUICE_STAGE"] is None
    assert env["AWS_ENDPOINT_URL_S3"] is None
    assert env["PYTHONPATH"] == f"{tree / 'router'}{os.pathsep}/mine"
    assert "PYTHONPATH" not in testrun.group_env(tree, TestGroup("s", "s", ("tests/shared",)), {})


JUNIT = """<testsuites><testsuite tests="{total}" failures="{failures}" errors="{errors}"
skipped="{skipped}"/></testsuites>"""


class FakePytest:
    """Writes each group's JUnit report as told and returns the exit code it is given."""

    def __init__(self, outcomes: dict[str, tuple[int | None, dict[str, int] | None]]) -> None:
        self.outcomes = outcomes
        self.calls: list[tuple[str, list[str], dict[str, str | None]]] = []

    def __call__(self, group: TestGroup, args: list[str], env: dict[str, str | None]) -> int | None:
        self.calls.append((group.label, args, env))
        code, counts = self.outcomes[group.label]
        if counts is not None:
            report = Path(next(a for a in args if a.startswith("--junitxml=")).split("=", 1)[1])
            report.write_text(JUNIT.format(**counts), encoding="utf-8")
        return code


def counts(total: int, failures: int = 0, errors: int = 0, skipped: int = 0) -> dict[str, int]:
    return {"total": total, "failures": failures, "errors": errors, "skipped": skipped}


def test_a_run_adds_up_the_groups_and_fails_on_a_failed_group(tree: Path) -> None:
    fake = FakePytest(
        {
            "shared, tools + tests/test_*.py": (0, counts(5, skipped=1)),
            "ingest": (1, counts(3, failures=1, errors=1)),
            "router": (5, counts(0)),
        }
    )
    reports = tree / "junit"
    reports.mkdir()
    results = testrun.run_tests(
        tree, ["tests/shared", "tests/ingest", "tests/router"], reports, fake
    )
    assert results is not None
    by_label = {r.label: r for r in results}
    assert [c[0] for c in fake.calls] == ["shared, tools + tests/test_*.py", "ingest", "router"]
    _label, args, env = fake.calls[1]
    assert args[:2] == ["-m", "pytest"]
    assert args[3:] == ["tests/ingest"]
    assert env["PYTHONPATH"] is not None
    assert env["PYTHONPATH"].startswith(str(tree / "ingest"))
    assert fake.calls[0][1][3:] == ["tests/shared"]  # the path given, not the whole group

    shared = by_label["shared, tools + tests/test_*.py"]
    assert (shared.outcome, shared.passed, shared.skipped) == ("passed", 4, 1)
    ingest = by_label["ingest"]
    assert (ingest.outcome, ingest.passed, ingest.failed) == ("failed", 1, 2)
    assert ingest.detail.startswith("pytest exit code 1")
    assert by_label["router"].outcome == "no tests"
    assert by_label["consumers/index"].outcome == "skipped"
    assert by_label["consumers/index"].detail == "not among the paths given"
    assert all(r.seconds is not None for r in (shared, ingest, by_label["router"]))

    assert testrun.total_line(results) == "total: 5 passed, 2 failed, 1 skipped"
    assert testrun.verdict(results) == "test groups failed: ingest"
    table = testrun.summary(results)
    assert table[0].startswith("=== test groups")
    assert table[-1].lstrip().startswith("all groups")
    assert any("ingest" in line and "failed" in line for line in table)


def test_a_run_where_nothing_was_collected_fails_and_install_only_runs_nothing(
    tree: Path,
) -> None:
    reports = tree / "junit"
    reports.mkdir()
    nothing = FakePytest({"router": (5, counts(0))})
    results = testrun.run_tests(tree, ["tests/router"], reports, nothing)
    assert results is not None
    assert testrun.verdict(results) == "no tests ran in any group (pytest collected nothing)"

    passed = FakePytest({"router": (0, counts(2))})
    results = testrun.run_tests(tree, ["tests/router"], reports, passed)
    assert results is not None
    assert testrun.verdict(results) is None

    no_report = FakePytest({"router": (0, None)})
    results = testrun.run_tests(tree, ["tests/router"], reports, no_report)
    assert results is not None
    router = next(r for r in results if r.label == "router")
    assert router.detail == "counts unknown (--junitxml overridden?)"

    install_only = FakePytest({"shared, tools + tests/test_*.py": (None, None)})
    assert testrun.run_tests(tree, [], reports, install_only) is None


def test_durations_read_as_seconds_then_minutes() -> None:
    assert testrun.duration(42.4) == "42 s"
    assert testrun.duration(185) == "3m 05s"


@pytest.mark.parametrize("module", [testrun, sluice_tools.stages])
def test_what_the_noxfile_imports_needs_the_standard_library_only(module: object) -> None:
    """nox imports the runner from its own interpreter, where nothing else is installed."""
    tree = ast.parse(Path(str(getattr(module, "__file__", ""))).read_text(encoding="utf-8"))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    tops = {name.split(".")[0] for name in imported} - {"__future__"}
    outside = {t for t in tops if t not in sys.stdlib_module_names}
    assert {*outside} <= {"sluice_tools"}
    assert {n for n in imported if n.startswith("sluice_tools")} <= {"sluice_tools.stages"}
