"""Sessions for the Sluice monorepo; `nox --list` is the menu.

Python versions and dependency groups come from the root `pyproject.toml`. Every Chalice
app has its own top-level `app` module and `chalicelib` package, so each app's tests run
in a pytest process of their own; the non-app groups (shared, tools, infra, ...) share one.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent
# The test runner's logic lives in the tools package, with tests of its own; nox imports it
# from this tree (it is standard library only), not from an installed sluice_tools.
sys.path.insert(0, str(ROOT / "tools"))
from sluice_tools import lintplan, testrun  # noqa: E402

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PYTHON_VERSIONS = nox.project.python_versions(PYPROJECT)
PYTHON = PYTHON_VERSIONS[0]

# Tests never reach real AWS (testrun.isolated_env): dummy credentials, a fixed region, no
# profile, no endpoint override, no ~/.aws files, no SLUICE_* settings from the shell.
TEST_ENV = testrun.isolated_env()


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
    return testrun.discover_apps(ROOT)


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

    def pytest(
        test_group: testrun.TestGroup, args: list[str], env: dict[str, str | None]
    ) -> int | None:
        session.log(f"--- tests: {test_group.label}")
        try:
            ran = session.run(
                "python", *args, env=env, success_codes=[0, testrun.NOTHING_COLLECTED]
            )
        except nox.command.CommandFailed as exc:
            return exc.return_code if exc.return_code is not None else 1
        return None if ran is None else 0

    results = testrun.run_tests(ROOT, session.posargs, report_dir, pytest)
    if results is None:
        return  # --install-only
    for line in testrun.summary(results):
        session.log(line)
    # A plain closing line, alone on its line, that CI reads whatever the groups were.
    print(testrun.total_line(results), flush=True)
    failure = testrun.verdict(results)
    if failure:
        session.error(failure)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Lint: ruff check, ruff format --check, mypy (pyproject config), cfn-lint on templates,
    bandit on the code and checkov on the templates (skips: .security-skips.toml).

    Every check runs and reports even if an earlier one failed. Arguments after `--` go to
    `ruff check` (e.g. `nox -s lint -- --fix`).
    """
    session.install(*editable(session, "shared", "tools"), *group("lint"))
    apps = discover_apps()  # chalice package runs only if there are apps
    failed: list[str] = []

    def check(
        label: str, *args: str, env: dict[str, str] | None = None, external: bool = False
    ) -> None:
        try:
            session.run(*args, env=env, external=external)
        except nox.command.CommandFailed:
            failed.append(label)

    # ruff reads [tool.ruff]; its extend-exclude keeps vendor/ and .chalice/ out.
    py_paths = lintplan.python_paths(ROOT)
    check("ruff check", "ruff", "check", *session.posargs, *py_paths)
    check("ruff format", "ruff", "format", "--check", *py_paths)

    # mypy: strict on code, relaxed on tests, each app in runs of its own (lintplan.mypy_runs).
    for run in lintplan.mypy_runs(ROOT):
        check(f"mypy {run.label}", "mypy", *run.args, env=run.env)

    # cfn-lint: the platform templates and each consumer's own resources template.
    templates = lintplan.cfn_templates(ROOT)
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
    for problem in lintplan.skip_problems(skips):
        session.error(problem)
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

    bandit = (str(bin_dir / "bandit"), "-q", "--severity-level", "medium", "--ignore-nosec")
    for scope, paths in lintplan.bandit_targets(ROOT):
        ids = lintplan.skipped_ids(skips, "bandit", scope)
        skip = ("--skip", ids) if ids else ()
        check(f"bandit {scope}", *bandit, *skip, "-r", *paths, external=True)

    cfn = [*templates, *lintplan.packaged_templates(packaged)]
    inline = lintplan.inline_skips(cfn)
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
            lintplan.skipped_ids(skips, "checkov"),
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
    if not (ROOT / "tests" / app).is_dir() or not testrun.has_test_files(ROOT / "tests" / app):
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
