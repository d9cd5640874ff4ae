"""Sessions for the Sluice monorepo; `nox --list` is the menu.

Python versions and dependency groups come from the root `pyproject.toml`. Every Chalice
app has its own top-level `app` module and `chalicelib` package, so each app's tests run
in a pytest process of their own; the non-app groups (shared, tools, infra, ...) share one.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PYTHON_VERSIONS = nox.project.python_versions(PYPROJECT)
PYTHON = PYTHON_VERSIONS[0]

# The stages with a fixed place; consumers are found by globbing `consumers/*/app.py`.
STAGE_APPS = ("ingest", "cleanse", "router")

# Tests never reach real AWS: dummy credentials, a fixed region, no profile, no endpoint
# override, no ~/.aws files, and no SLUICE_* settings leaking in from the shell.
TEST_ENV: dict[str, str | None] = {
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
    **{name: None for name in os.environ if name.startswith(("AWS_ENDPOINT_URL", "SLUICE_"))},
}


def group(name: str) -> list[str]:
    """A dependency group of pyproject.toml, included groups resolved, duplicates dropped."""
    return list(dict.fromkeys(nox.project.dependency_groups(PYPROJECT, name)))


def editable(session: nox.Session, *packages: str) -> tuple[str, str]:
    """`-r FILE` installing `packages` (dirs of this repo) in editable mode.

    uv rebuilds a local path given on its command line on every install (seconds each);
    listed in a requirements file, it rebuilds only when the package's pyproject.toml
    changes, which is all an editable install needs.
    """
    path = Path(session.create_tmp()) / f"editable-{'-'.join(packages)}.txt"
    path.write_text("".join(f"-e {ROOT / package}\n" for package in packages))
    return ("-r", str(path))


def discover_apps() -> list[str]:
    """App dirs relative to the root (`ingest`, `consumers/warehouse`): those with `app.py`."""
    apps = [name for name in STAGE_APPS if (ROOT / name / "app.py").is_file()]
    apps += sorted(p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("consumers/*/app.py"))
    return apps


@dataclass(frozen=True)
class TestGroup:
    """Test dirs that run in one pytest process; `app` (if any) goes on PYTHONPATH."""

    label: str
    slug: str  # names the group's JUnit report
    paths: tuple[str, ...]
    app: str | None = None


@dataclass
class GroupResult:
    label: str
    outcome: str  # passed | failed | no tests | skipped
    detail: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float | None = None  # the group's pytest process, wall clock


def test_plan() -> list[TestGroup | GroupResult]:
    """tests/ split into pytest processes, with a skip entry for each app without tests.

    An app group is `tests/<app>` for every app; a tests dir named after a stage or a
    consumer whose app.py is missing still gets a process of its own (it will say why).
    Every other dir with tests directly under tests/ is a non-app group; they share one.
    """
    tests = ROOT / "tests"
    plan: list[TestGroup | GroupResult] = []
    others = [d for d in non_app_test_dirs() if has_test_files(d)]  # not tests/support
    top_level = sorted(tests.glob("test_*.py"))
    paths = tuple(p.relative_to(ROOT).as_posix() for p in [*others, *top_level])
    if paths:
        label = ", ".join(p.name for p in others) + (" + tests/test_*.py" if top_level else "")
        plan.append(TestGroup(label, "non-app", paths))

    apps = discover_apps()
    app_dirs = set(apps) | {name for name in STAGE_APPS if (tests / name).is_dir()}
    if (tests / "consumers").is_dir():
        app_dirs |= {
            p.relative_to(tests).as_posix()
            for p in (tests / "consumers").iterdir()
            if p.is_dir() and not p.name.startswith((".", "_"))
        }
    # Pipeline order: ingest, cleanse, router, then consumers by name.
    order = {name: i for i, name in enumerate(STAGE_APPS)}
    for app in sorted(app_dirs, key=lambda a: (order.get(a, len(order)), a)):
        if not (tests / app).is_dir() or not has_test_files(tests / app):
            plan.append(GroupResult(app, "skipped", f"no test files in tests/{app}/"))
            continue
        label = app if app in apps else f"{app} (no {app}/app.py)"
        plan.append(TestGroup(label, app.replace("/", "-"), (f"tests/{app}",), app=app))
    return plan


def non_app_test_dirs() -> list[Path]:
    """Dirs directly under tests/ that belong to no app: shared, tools, infra, support, ..."""
    tests = ROOT / "tests"
    if not tests.is_dir():
        return []
    reserved = {*STAGE_APPS, "consumers"}
    return sorted(
        p
        for p in tests.iterdir()
        if p.is_dir() and p.name not in reserved and not p.name.startswith((".", "_"))
    )


def has_test_files(directory: Path) -> bool:
    """Whether pytest would find test modules under `directory` (default naming)."""
    return any(directory.rglob("test_*.py")) or any(directory.rglob("*_test.py"))


# pytest options whose value may follow as a separate argument (never a test path).
_VALUE_OPTIONS = frozenset(
    {"-k", "-m", "-p", "-c", "-o", "-W", "-r", "--maxfail", "--durations", "--tb", "--ignore"}
    | {"--ignore-glob", "--deselect", "--rootdir", "--basetemp", "--junitxml", "--confcutdir"}
    | {"--log-level", "--import-mode"}
)


def split_posargs(posargs: list[str]) -> tuple[list[str], list[str]]:
    """Test paths under tests/ (`tests/x/test_y.py::test_z` too) apart from other arguments.

    Paths pick the groups that run and replace each group's own dirs; everything else goes
    to every pytest process as it is.
    """
    paths: list[str] = []
    options: list[str] = []
    value_expected = False
    for arg in posargs:
        candidate = (ROOT / arg.split("::")[0]).resolve()
        is_test_path = (
            not value_expected
            and not arg.startswith("-")
            and candidate.exists()
            and candidate.is_relative_to(ROOT / "tests")
        )
        (paths if is_test_path else options).append(arg)
        value_expected = arg in _VALUE_OPTIONS
    return paths, options


def selected_paths(group: TestGroup, paths: list[str]) -> list[str]:
    """What `group` runs of the given test paths: those inside it, and its own paths that lie
    inside one of them (`tests/consumers` selects every consumer). All of it if none given.
    """
    if not paths:
        return list(group.paths)
    selected: dict[str, None] = {}
    for path in paths:
        target = (ROOT / path.split("::")[0]).resolve()
        for own in group.paths:
            root = (ROOT / own).resolve()
            if target.is_relative_to(root):
                selected[path] = None
            elif root.is_relative_to(target):
                selected[own] = None
    return list(selected)


def run_pytest(
    session: nox.Session,
    group: TestGroup,
    targets: list[str],
    options: list[str],
    report_dir: Path,
) -> GroupResult | None:
    """Run one group's pytest process; None when nox was asked to install only."""
    report = report_dir / f"{group.slug}.xml"
    report.unlink(missing_ok=True)
    env = dict(TEST_ENV)
    if group.app:
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / group.app), os.environ.get("PYTHONPATH")])
        )
    session.log(f"--- tests: {group.label}")
    started = time.monotonic()
    try:
        ran = session.run(
            "python",
            "-m",
            "pytest",
            f"--junitxml={report}",
            *targets,
            *options,
            env=env,
            success_codes=[0, 5],  # 5: nothing collected; judged over all groups below
        )
    except nox.command.CommandFailed as exc:
        result = GroupResult(group.label, "failed", f"pytest exit code {exc.return_code}")
        result.seconds = time.monotonic() - started
        _add_counts(result, report)
        return result
    if ran is None:
        return None
    result = GroupResult(group.label, "passed", "", seconds=time.monotonic() - started)
    if not _add_counts(result, report):
        result.detail = "counts unknown (--junitxml overridden?)"
    elif result.passed + result.failed + result.skipped == 0:
        result.outcome, result.detail = "no tests", "none collected or selected (pytest exit 5)"
    return result


def _add_counts(result: GroupResult, report: Path) -> bool:
    """Fill test counts from pytest's JUnit XML report; False if there is none."""
    if not report.is_file():
        return False
    for suite in ET.parse(report).getroot().iter("testsuite"):
        total = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        result.failed += failed
        result.skipped += skipped
        result.passed += total - failed - skipped
    counts = f"{result.passed} passed, {result.failed} failed, {result.skipped} skipped"
    result.detail = f"{result.detail}; {counts}" if result.detail else counts
    return True


def _duration(seconds: float) -> str:
    """`42 s`, `3m 05s`: a group's time in the closing table."""
    whole = round(seconds)
    return f"{whole} s" if whole < 60 else f"{whole // 60}m {whole % 60:02d}s"


@nox.session(python=PYTHON_VERSIONS)
def tests(session: nox.Session) -> None:
    """Run every test group: non-app groups in one pytest process, each app in its own.

    Arguments after `--` go to every pytest process (`nox -s tests -- -k envelope -x`);
    test paths among them run only the groups they belong to (`-- tests/router`). The closing
    table gives each group's outcome, counts and time, and the time of all groups.
    """
    session.install(*editable(session, "shared", "tools"), *group("test"))
    report_dir = Path(session.create_tmp()) / "junit"
    report_dir.mkdir(exist_ok=True)
    paths, options = split_posargs(session.posargs)
    results: list[GroupResult] = []
    for entry in test_plan():
        if isinstance(entry, GroupResult):
            results.append(entry)
            continue
        targets = selected_paths(entry, paths)
        if not targets:
            results.append(GroupResult(entry.label, "skipped", "not among the paths given"))
            continue
        result = run_pytest(session, entry, targets, options, report_dir)
        if result is None:
            return  # --install-only
        results.append(result)

    session.log("=== test groups (wall-clock time of each group's pytest process)")
    width = max((len(r.label) for r in results), default=0)
    for r in results:
        took = "" if r.seconds is None else _duration(r.seconds)
        session.log(f"  {r.label:<{width}}  {r.outcome:<8}  {took:>7}  {r.detail}")
    timed = [r.seconds for r in results if r.seconds is not None]
    session.log(f"  {'all groups':<{width}}  {'':<8}  {_duration(sum(timed)):>7}")
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results)
    skipped = sum(r.skipped for r in results)
    # A plain closing line, alone on its line, that CI reads whatever the groups were.
    print(f"total: {passed} passed, {failed} failed, {skipped} skipped", flush=True)

    failures = [r.label for r in results if r.outcome == "failed"]
    if failures:
        session.error(f"test groups failed: {', '.join(failures)}")
    if not any(r.outcome == "passed" for r in results):
        session.error("no tests ran in any group (pytest collected nothing)")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Lint: ruff check, ruff format --check, mypy (pyproject config), cfn-lint on templates,
    bandit on the code and checkov on the templates (skips: .security-skips.toml).

    Every check runs and reports even if an earlier one failed. Arguments after `--` go to
    `ruff check` (e.g. `nox -s lint -- --fix`).
    """
    session.install(*editable(session, "shared", "tools"), *group("lint"))
    apps = discover_apps()
    failed: list[str] = []

    def check(
        label: str, *args: str, env: dict[str, str] | None = None, external: bool = False
    ) -> None:
        try:
            session.run(*args, env=env, external=external)
        except nox.command.CommandFailed:
            failed.append(label)

    # ruff reads [tool.ruff]; its extend-exclude keeps vendor/ and .chalice/ out.
    py_paths = [
        p
        for p in ("noxfile.py", "shared", "tools", "tests", "benchmarks", *apps)
        if (ROOT / p).exists()
    ]
    check("ruff check", "ruff", "check", *session.posargs, *py_paths)
    check("ruff format", "ruff", "format", "--check", *py_paths)

    # mypy: strict (pyproject) on code; tests may leave test functions and fixtures
    # unannotated (their bodies are still checked). mypy_path and explicit_package_bases in
    # pyproject map files to modules. Each app has its own `app` and `chalicelib`, so it is
    # checked in runs of its own, with the app dir on MYPYPATH. Each run has its own cache:
    # mypy's cache keys modules by name (every app has an `app`), and a cache shared by
    # runs with different flags is rebuilt on every run (a warm run takes 1 s, a cold 10).
    relaxed = ("--allow-untyped-defs", "--allow-incomplete-defs")
    runs: list[tuple[str, list[str], tuple[str, ...], dict[str, str] | None]] = [
        ("code", ["shared/sluice", "tools/sluice_tools"], (), None),
        ("tests", [p.relative_to(ROOT).as_posix() for p in non_app_test_dirs()], relaxed, None),
    ]
    for app in apps:
        env = {"MYPYPATH": str(ROOT / app)}
        runs.append((app, [f"{app}/app.py", f"{app}/chalicelib"], (), env))
        # The app's conftest may put its test dir on sys.path too (helper modules there).
        env = {"MYPYPATH": os.pathsep.join([str(ROOT / app), str(ROOT / "tests" / app)])}
        runs.append((f"tests/{app}", [f"tests/{app}"], relaxed, env))
    for label, paths, flags, env in runs:
        existing = [p for p in paths if (ROOT / p).exists()]
        cache = f".mypy_cache/nox-{label.replace('/', '-')}"
        if existing:
            check(f"mypy {label}", "mypy", "--cache-dir", cache, *flags, *existing, env=env)

    # cfn-lint: the platform templates and each consumer's own resources template.
    templates = sorted(
        p.relative_to(ROOT).as_posix()
        for pattern in ("infra/**/*.yaml", "infra/**/*.yml", "consumers/*/resources.yaml")
        for p in ROOT.glob(pattern)
    )
    if templates:
        check("cfn-lint", "cfn-lint", *templates)
    else:
        session.log("cfn-lint: no templates yet (infra/**/*.yaml, consumers/*/resources.yaml)")
    # ... and what `chalice package` makes of each app (apps with on_s3_event are skipped
    # with a note: chalice cannot package them). .sluice/lint-build keeps chalice's caches;
    # the packaged templates are kept in .sluice/lint-packaged for checkov below.
    packaged = ROOT / ".sluice" / "lint-packaged"
    shutil.rmtree(packaged, ignore_errors=True)
    if apps:
        check(
            "cfn-lint chalice package",
            "python",
            "-m",
            "sluice_tools.deploy.lint",
            "--stage",
            "dev",
            "--build-dir",
            str(ROOT / ".sluice" / "lint-build"),
            "--packaged-dir",
            str(packaged),
        )

    # bandit and checkov: the `security` group, in a venv of its own beside this session's
    # (checkov pins boto3 and packaging), installed again only when the group changes. Every
    # check they skip is in .security-skips.toml with its reason; nothing is skipped inline.
    skips = nox.project.load_toml(ROOT / ".security-skips.toml")
    for tool, entries in skips.items():
        for entry in entries:
            scoped = tool != "bandit" or entry.get("scope") in {"deployed", "tools"}
            if not (entry.get("id") and str(entry.get("reason", "")).strip() and scoped):
                session.error(f".security-skips.toml: {tool} {entry}: id, reason (and scope)?")
    venv = Path(session.virtualenv.location).with_name("lint-security")
    bin_dir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    wanted = "\n".join(group("security")) + "\n"
    marker = venv / "sluice-security-group.txt"
    if not marker.is_file() or marker.read_text() != wanted:
        uv = shutil.which("uv")
        if uv:
            session.run(
                uv, "venv", "-q", "--allow-existing", "--python", PYTHON, str(venv), external=True
            )
            session.run(
                uv,
                "pip",
                "install",
                "-q",
                "--python",
                str(bin_dir / "python"),
                *group("security"),
                external=True,
            )
        else:
            session.run("python", "-m", "venv", "--clear", str(venv))
            session.run(
                str(bin_dir / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                *group("security"),
                external=True,
            )
        marker.write_text(wanted)

    def skipped(tool: str, scope: str | None = None) -> str:
        ids = [e["id"] for e in skips.get(tool, []) if scope in (None, e.get("scope"))]
        return ",".join(ids)

    bandit = (str(bin_dir / "bandit"), "-q", "--severity-level", "medium", "--ignore-nosec")
    deployed = [p for app in apps for p in (f"{app}/app.py", f"{app}/chalicelib")]
    deployed = ["shared/sluice", *(p for p in deployed if (ROOT / p).exists())]
    for scope, paths in (("deployed", deployed), ("tools", ["tools/sluice_tools"])):
        ids = skipped("bandit", scope)
        skip = ("--skip", ids) if ids else ()
        check(f"bandit {scope}", *bandit, *skip, "-r", *paths, external=True)

    cfn = [*templates, *sorted(p.as_posix() for p in packaged.glob("*/sam.json"))]
    cfn += sorted(p.as_posix() for p in packaged.glob("stacks/*/template.yaml"))  # rendered
    inline = [t for t in cfn if "checkov:skip" in Path(t).read_text(encoding="utf-8")]
    if inline:
        session.log(f"checkov: skip comments in {inline}: list them in .security-skips.toml")
        failed.append("checkov inline skips")
    if cfn:
        check(
            "checkov",
            str(bin_dir / "checkov"),
            "--framework",
            "cloudformation",
            "--quiet",
            "--compact",
            "--skip-download",  # offline: no Prisma Cloud guidelines or policies
            "--skip-check",
            skipped("checkov"),
            *(arg for t in cfn for arg in ("-f", t)),
            external=True,
        )

    if failed:
        session.error(f"lint failed: {', '.join(failed)}")


@nox.session(python=False, default=False)
def dev(session: nox.Session) -> None:
    """Create or update .venv with uv: editable shared/ and tools/ plus the dev group.

    Arguments after `--` go to `uv pip install` (e.g. `nox -s dev -- --upgrade`).
    """
    uv = shutil.which("uv")
    if uv is None:
        session.error("the dev session needs uv on PATH: python3 -m pip install uv")
    venv = ROOT / ".venv"
    # --allow-existing keeps what an existing .venv holds; install below brings it up to date.
    session.run(uv, "venv", "--allow-existing", "--python", PYTHON, str(venv), external=True)
    session.run(
        uv,
        "pip",
        "install",
        "--python",
        str(venv),
        *editable(session, "shared", "tools"),
        *group("dev"),
        *session.posargs,
        external=True,
    )
    activate = venv / ("Scripts/activate" if sys.platform == "win32" else "bin/activate")
    session.log(f"Dev environment ready. Activate it with:  source {activate.relative_to(ROOT)}")


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """Run the whole pipeline on this machine on the samples: `sluice local run`.

    moto's server and a local Lambda runtime, no AWS account, no Docker. Arguments after
    `--` go to `sluice local run` (files to upload instead of the samples, `--keep`, ...).
    """
    session.install(*editable(session, "shared", "tools"), *group("test"))
    session.run("sluice", "local", "run", *session.posargs, env=TEST_ENV)


def _app_test_tools() -> list[str]:
    """pytest, moto and chalice as pinned in the test group, without extras.

    moto[server] would bring flask, PyYAML, jsonschema, aws-xray-sdk and more, which could
    hide a package missing from an app's requirements.txt.
    """
    wanted = []
    for spec in group("test"):
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name in {"pytest", "moto", "chalice"} or name.startswith("pytest-"):
            req.extras = set()
            wanted.append(str(req))
    return wanted


def _over_apps(func: Callable[..., None]) -> Callable[..., None]:
    """Parametrize over the discovered apps; with none yet, leave one session that says so."""
    apps = discover_apps()
    if not apps:
        return func
    return nox.parametrize("app", [nox.param(app, id=app) for app in apps])(func)


@nox.session(python=PYTHON, default=False)
@_over_apps
def app_tests(session: nox.Session, app: str | None = None) -> None:
    """Test one app in a venv of only shared/, its requirements.txt, pytest, moto, chalice.

    Catches a package the app imports but does not deploy. Arguments go to pytest.
    """
    if app is None:
        session.skip("no apps yet: none of ingest/, cleanse/, router/, consumers/*/ has app.py")
    if not (ROOT / "tests" / app).is_dir() or not has_test_files(ROOT / "tests" / app):
        session.skip(f"no test files in tests/{app}/")
    requirements = f"{app}/requirements.txt"
    reqs = ["-r", requirements] if (ROOT / requirements).is_file() else []
    if not reqs:
        session.warn(f"{app} has no requirements.txt: it deploys with no extra packages")
    session.install(*editable(session, "shared"), *reqs, *_app_test_tools())
    env = dict(TEST_ENV)
    env["PYTHONPATH"] = str(ROOT / app)
    session.run("python", "-m", "pytest", f"tests/{app}", *session.posargs, env=env)


@nox.session(python=PYTHON, default=False)
def deploy(session: nox.Session) -> None:
    """Deploy a stage with `sluice deploy` (e.g. `nox -s deploy -- --stage dev --only router`).

    Arguments after `--` go to `sluice deploy`; AWS credentials and AWS_ENDPOINT_URL come
    from the environment (set AWS_ENDPOINT_URL to deploy into moto's server).
    """
    if not session.posargs:
        session.error("usage: nox -s deploy -- --stage STAGE [--only APP ...]")
    session.install(*editable(session, "shared", "tools"))
    session.run("sluice", "deploy", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: cold start, local pipeline throughput, requests and cost, ingest memory.

    Prints figures (no pass/fail) and writes .sluice/bench/results.json. `-- --full` adds
    100k records and the 200 MB ingest object; other arguments go to `benchmarks/run.py`.
    """
    session.install(*editable(session, "shared", "tools"), *group("test"))
    session.run("python", "-m", "benchmarks.run", *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON, default=False)
def chaos(session: nox.Session) -> None:
    """Chaos runs of the local pipeline, counted at the sinks (`python -m sluice_tools.chaos`).

    Per seed: API faults at the emulator, SIGKILLed workers, duplicate S3 notifications and
    re-uploads; then lost / doubled / dead-lettered per sink and whether the ledger agrees.
    Arguments after `--` go to it (default 3 random seeds of 10,000 records; repeat one with
    `-- --seed N --records 2000`). Exits 1 if any seed lost, doubled or dead-lettered a
    record, or the ledger's verdict disagreed with the sinks.
    """
    session.install(*editable(session, "shared", "tools"), *group("test"))
    session.run("python", "-m", "sluice_tools.chaos", *session.posargs, env=TEST_ENV)


@nox.session(python=False, default=False)
def lock(session: nox.Session) -> None:
    """Resolve every app's requirements.in into requirements/lambda.lock (exact versions with
    hashes, for Lambda's Python 3.11 x86_64) and write each app's requirements.txt from it
    (`python -m sluice_tools.deps lock`; needs uv and PyPI)."""
    python = ROOT / ".venv" / "bin" / "python"
    if not python.is_file():
        session.error("run `nox -s dev` first: the lock runs with the dev environment's tools")
    session.run(str(python), "-m", "sluice_tools.deps", "lock", external=True)
