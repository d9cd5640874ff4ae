"""The test runner behind `nox -s tests`: which pytest processes run which test dirs, with
what environment, and how their outcomes add up.

Every Chalice app has its own top-level `app` module and `chalicelib` package, so each
app's tests (`tests/<app>`, `tests/consumers/<name>`) run in a pytest process of their own
with the app dir on PYTHONPATH; every other dir directly under tests/ (shared, tools,
infra, ...) is a non-app group, and they share one process.

The noxfile keeps the session (installing, `session.run`, `session.error`) and passes a
`Runner` that starts one pytest process; everything else is here, with tests of its own
(tests/tools/test_testrun.py). Standard library only: nox imports it from its own
interpreter, before any session has installed anything.
"""

from __future__ import annotations

import os
import time
import xml.parsers.expat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sluice_tools.stages import CONSUMERS_DIR, PIPELINE_STAGES, app_dirs, app_rel

# pytest's exit code when it collected or selected nothing (not a failure of the group; the
# run as a whole fails when no group ran a test).
NOTHING_COLLECTED = 5

# pytest options whose value may follow as a separate argument (never a test path).
VALUE_OPTIONS = frozenset(
    {"-k", "-m", "-p", "-c", "-o", "-W", "-r", "--maxfail", "--durations", "--tb", "--ignore"}
    | {"--ignore-glob", "--deselect", "--rootdir", "--basetemp", "--junitxml", "--confcutdir"}
    | {"--log-level", "--import-mode"}
)


def isolated_env(environ: Mapping[str, str] = os.environ) -> dict[str, str | None]:
    """The environment of every test process (None: unset).

    Tests never reach real AWS: dummy credentials, a fixed region, no profile, no endpoint
    override, no ~/.aws files, and no SLUICE_* settings leaking in from the shell.
    """
    return {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": None,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_PROFILE": None,
        "AWS_DEFAULT_PROFILE": None,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        **{name: None for name in environ if name.startswith(("AWS_ENDPOINT_URL", "SLUICE_"))},
    }


@dataclass(frozen=True)
class TestGroup:
    """Test dirs that run in one pytest process; `app` (if any) goes on PYTHONPATH."""

    __test__ = False  # not a pytest test class

    label: str
    slug: str  # names the group's JUnit report
    paths: tuple[str, ...]
    app: str | None = None


@dataclass
class GroupResult:
    """What one group came to: its outcome, counts and (if it ran) its time."""

    label: str
    outcome: str  # passed | failed | no tests | skipped
    detail: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float | None = None  # the group's pytest process, wall clock


def discover_apps(root: Path) -> list[str]:
    """App dirs relative to the root (`ingest`, `consumers/warehouse`), in pipeline order."""
    return [app_rel(root, d) for d in app_dirs(root)]


def has_test_files(directory: Path) -> bool:
    """Whether pytest would find test modules under `directory` (default naming)."""
    return any(directory.rglob("test_*.py")) or any(directory.rglob("*_test.py"))


def non_app_test_dirs(root: Path) -> list[Path]:
    """Dirs directly under tests/ that belong to no app: shared, tools, infra, support, ..."""
    tests = root / "tests"
    if not tests.is_dir():
        return []
    reserved = {*PIPELINE_STAGES, CONSUMERS_DIR}
    return sorted(
        p
        for p in tests.iterdir()
        if p.is_dir() and p.name not in reserved and not p.name.startswith((".", "_"))
    )


def plan_groups(root: Path) -> list[TestGroup | GroupResult]:
    """tests/ split into pytest processes, with a skip entry for each app without tests.

    An app group is `tests/<app>` for every app; a tests dir named after a stage or a
    consumer whose app.py is missing still gets a process of its own (it will say why).
    Every other dir with tests directly under tests/ is a non-app group; they share one.
    """
    tests = root / "tests"
    plan: list[TestGroup | GroupResult] = []
    others = [d for d in non_app_test_dirs(root) if has_test_files(d)]  # not tests/support
    top_level = sorted(tests.glob("test_*.py"))
    paths = tuple(p.relative_to(root).as_posix() for p in [*others, *top_level])
    if paths:
        label = ", ".join(p.name for p in others) + (" + tests/test_*.py" if top_level else "")
        plan.append(TestGroup(label, "non-app", paths))

    apps = discover_apps(root)
    found = set(apps) | {name for name in PIPELINE_STAGES if (tests / name).is_dir()}
    if (tests / CONSUMERS_DIR).is_dir():
        found |= {
            p.relative_to(tests).as_posix()
            for p in (tests / CONSUMERS_DIR).iterdir()
            if p.is_dir() and not p.name.startswith((".", "_"))
        }
    # Pipeline order: ingest, cleanse, router, then consumers by name.
    order = {name: i for i, name in enumerate(PIPELINE_STAGES)}
    for app in sorted(found, key=lambda a: (order.get(a, len(order)), a)):
        if not (tests / app).is_dir() or not has_test_files(tests / app):
            plan.append(GroupResult(app, "skipped", f"no test files in tests/{app}/"))
            continue
        label = app if app in apps else f"{app} (no {app}/app.py)"
        plan.append(TestGroup(label, app.replace("/", "-"), (f"tests/{app}",), app=app))
    return plan


def split_posargs(root: Path, posargs: list[str]) -> tuple[list[str], list[str]]:
    """Test paths under tests/ (`tests/x/test_y.py::test_z` too) apart from other arguments.

    Paths pick the groups that run and replace each group's own dirs; everything else goes
    to every pytest process as it is.
    """
    paths: list[str] = []
    options: list[str] = []
    value_expected = False
    for arg in posargs:
        candidate = (root / arg.split("::")[0]).resolve()
        is_test_path = (
            not value_expected
            and not arg.startswith("-")
            and candidate.exists()
            and candidate.is_relative_to(root / "tests")
        )
        (paths if is_test_path else options).append(arg)
        value_expected = arg in VALUE_OPTIONS
    return paths, options


def selected_paths(root: Path, group: TestGroup, paths: list[str]) -> list[str]:
    """What `group` runs of the given test paths: those inside it, and its own paths that lie
    inside one of them (`tests/consumers` selects every consumer). All of it if none given.
    """
    if not paths:
        return list(group.paths)
    selected: dict[str, None] = {}
    for path in paths:
        target = (root / path.split("::")[0]).resolve()
        for own in group.paths:
            base = (root / own).resolve()
            if target.is_relative_to(base):
                selected[path] = None
            elif base.is_relative_to(target):
                selected[own] = None
    return list(selected)


def group_env(
    root: Path, group: TestGroup, environ: Mapping[str, str] = os.environ
) -> dict[str, str | None]:
    """`isolated_env()`, and for an app group its app dir first on PYTHONPATH."""
    env = isolated_env(environ)
    if group.app:
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(root / group.app), environ.get("PYTHONPATH")])
        )
    return env


def add_counts(result: GroupResult, report: Path) -> bool:
    """Fill test counts from pytest's JUnit XML report; False if there is none."""
    if not report.is_file():
        return False
    for suite in _testsuites(report):
        total = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        result.failed += failed
        result.skipped += skipped
        result.passed += total - failed - skipped
    counts = f"{result.passed} passed, {result.failed} failed, {result.skipped} skipped"
    result.detail = f"{result.detail}; {counts}" if result.detail else counts
    return True


def _testsuites(report: Path) -> list[dict[str, str]]:
    """The attributes of each `testsuite` element of a JUnit XML report (pytest's own, read
    with expat, which limits entity expansion since 2.4)."""
    found: list[dict[str, str]] = []

    def start(name: str, attributes: dict[str, str]) -> None:
        if name == "testsuite":
            found.append(attributes)

    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = start
    with report.open("rb") as f:
        parser.ParseFile(f)
    return found


# Starts one pytest process with these arguments and environment (None: unset); returns its
# exit code, or None when it did not run (nox's --install-only).
Runner = Callable[[TestGroup, list[str], dict[str, str | None]], int | None]


def run_group(
    root: Path,
    group: TestGroup,
    targets: list[str],
    options: list[str],
    report_dir: Path,
    runner: Runner,
    environ: Mapping[str, str] = os.environ,
) -> GroupResult | None:
    """Run one group's pytest process; None when the runner did not run it."""
    report = report_dir / f"{group.slug}.xml"
    report.unlink(missing_ok=True)
    args = ["-m", "pytest", f"--junitxml={report}", *targets, *options]
    started = time.monotonic()
    code = runner(group, args, group_env(root, group, environ))
    if code is None:
        return None
    seconds = time.monotonic() - started
    if code not in (0, NOTHING_COLLECTED):
        result = GroupResult(group.label, "failed", f"pytest exit code {code}", seconds=seconds)
        add_counts(result, report)
        return result
    result = GroupResult(group.label, "passed", "", seconds=seconds)
    if not add_counts(result, report):
        result.detail = "counts unknown (--junitxml overridden?)"
    elif result.passed + result.failed + result.skipped == 0:
        result.outcome, result.detail = "no tests", "none collected or selected (pytest exit 5)"
    return result


def run_tests(
    root: Path,
    posargs: list[str],
    report_dir: Path,
    runner: Runner,
    environ: Mapping[str, str] = os.environ,
) -> list[GroupResult] | None:
    """Every group of `plan_groups(root)` the arguments select, one pytest process each (in
    plan order); None when the runner ran none (install only)."""
    paths, options = split_posargs(root, posargs)
    results: list[GroupResult] = []
    for entry in plan_groups(root):
        if isinstance(entry, GroupResult):
            results.append(entry)
            continue
        targets = selected_paths(root, entry, paths)
        if not targets:
            results.append(GroupResult(entry.label, "skipped", "not among the paths given"))
            continue
        result = run_group(root, entry, targets, options, report_dir, runner, environ)
        if result is None:
            return None
        results.append(result)
    return results


def duration(seconds: float) -> str:
    """`42 s`, `3m 05s`: a group's time in the closing table."""
    whole = round(seconds)
    return f"{whole} s" if whole < 60 else f"{whole // 60}m {whole % 60:02d}s"


def summary(results: list[GroupResult]) -> list[str]:
    """The closing table: each group's outcome, time and counts, then all groups' time."""
    lines = ["=== test groups (wall-clock time of each group's pytest process)"]
    width = max((len(r.label) for r in results), default=0)
    for r in results:
        took = "" if r.seconds is None else duration(r.seconds)
        lines.append(f"  {r.label:<{width}}  {r.outcome:<8}  {took:>7}  {r.detail}")
    timed = [r.seconds for r in results if r.seconds is not None]
    lines.append(f"  {'all groups':<{width}}  {'':<8}  {duration(sum(timed)):>7}")
    return lines


def total_line(results: list[GroupResult]) -> str:
    """`total: N passed, N failed, N skipped`: the plain closing line CI reads (.ci/run)."""
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results)
    skipped = sum(r.skipped for r in results)
    return f"total: {passed} passed, {failed} failed, {skipped} skipped"


def verdict(results: list[GroupResult]) -> str | None:
    """Why the run failed (a group failed, or no group ran a test), or None if it passed."""
    failures = [r.label for r in results if r.outcome == "failed"]
    if failures:
        return f"test groups failed: {', '.join(failures)}"
    if not any(r.outcome == "passed" for r in results):
        return "no tests ran in any group (pytest collected nothing)"
    return None
