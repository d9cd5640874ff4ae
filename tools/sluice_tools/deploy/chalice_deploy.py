"""Run `chalice deploy --stage STAGE` for the apps, in child processes.

The app's `app.py` reads resource names at import, so SLUICE_STAGE is set; AWS_ENDPOINT_URL
passes through, so the same call deploys to AWS or to moto.

`chalice_deploy_all` deploys several apps with few processes: each child runs Chalice's own
CLI code (`chalice.cli.cli`, what the `chalice` command runs) for its apps one after the
other, so Python, Chalice and botocore start once per child instead of once per app (about
a second of CPU each). Between apps the child forgets the previous app's modules (`app`,
`chalicelib`), `sys.path` entries and environment, so each app loads as in a process of its
own. The apps are shared out among `workers` children running side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from sluice_tools.deploy.target import Target

MARK = "@@sluice-chalice-deploy@@"  # the child's line that ends each app's output


class ChaliceDeployError(RuntimeError):
    """`chalice deploy` failed; the message carries its output."""


def chalice_command() -> list[str]:
    """The chalice CLI of this environment (next to our Python), else the one on PATH."""
    beside = Path(sys.executable).with_name("chalice")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("chalice")
    if found:
        return [found]
    return [sys.executable, "-c", "from chalice.cli import main; main()"]


def chalice_deploy(app_dir: Path, target: Target) -> str:
    """Deploy the app in `app_dir` to `target.stage`; returns chalice's output."""
    result = chalice_deploy_all([app_dir], target, workers=1)[app_dir]
    if not result.ok:
        raise ChaliceDeployError(result.failure())
    return result.output


@dataclass(frozen=True)
class AppDeploy:
    """How one app's `chalice deploy` went."""

    app_dir: Path
    ok: bool
    seconds: float
    output: str

    def failure(self) -> str:
        tail = "\n".join(self.output.strip().splitlines()[-25:])
        return f"chalice deploy of {self.app_dir.name} failed:\n{tail}"


def chalice_deploy_all(
    app_dirs: list[Path], target: Target, workers: int = 2
) -> dict[Path, AppDeploy]:
    """Deploy every app of `app_dirs` to `target.stage` with `workers` child processes;
    {app dir: how it went}. A failed app does not stop the others."""
    groups = [app_dirs[i :: max(1, workers)] for i in range(max(1, workers))]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", __name__, target.stage, *map(str, group)],
            env=target.subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for group in groups
        if group
    ]
    found: dict[Path, AppDeploy] = {}
    for child, group in zip(children, [g for g in groups if g], strict=True):
        output, _ = child.communicate()
        found.update(_parse(output, group, child.returncode))
    return found


def _parse(output: str, group: list[Path], returncode: int) -> dict[Path, AppDeploy]:
    found: dict[Path, AppDeploy] = {}
    lines: list[str] = []
    for line in output.splitlines():
        if line.startswith(MARK):
            done = json.loads(line[len(MARK) :])
            app_dir = Path(done["app_dir"])
            found[app_dir] = AppDeploy(app_dir, done["ok"], done["seconds"], "\n".join(lines))
            lines = []
        else:
            lines.append(line)
    for app_dir in group:  # the child died before reporting it
        if app_dir not in found:
            why = f"(the deploying process exited with {returncode})"
            found[app_dir] = AppDeploy(app_dir, False, 0.0, "\n".join([*lines, why]))
    return found


def _deploy_here(stage: str, app_dirs: list[str]) -> int:
    """In the child: deploy each app in turn with Chalice's CLI code, reporting each."""
    import click
    from chalice.cli import cli

    path, environ, cwd = list(sys.path), dict(os.environ), os.getcwd()
    failed = 0
    for app_dir in app_dirs:
        for name in [m for m in sys.modules if m == "app" or m.split(".")[0] == "chalicelib"]:
            del sys.modules[name]
        sys.path[:] = path
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
        started = time.monotonic()
        ok = True
        try:
            cli.main(
                ["--project-dir", app_dir, "deploy", "--stage", stage],
                obj={},
                prog_name="chalice",
                standalone_mode=False,
            )
        except SystemExit as exc:
            ok = exc.code in (0, None)
        except click.exceptions.Exit as exc:
            ok = exc.exit_code == 0
        except Exception:
            traceback.print_exc(file=sys.stdout)
            ok = False
        failed += not ok
        seconds = round(time.monotonic() - started, 3)
        report = {"app_dir": app_dir, "ok": ok, "seconds": seconds}
        sys.stderr.flush()
        print("\n" + MARK + json.dumps(report), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(_deploy_here(sys.argv[1], sys.argv[2:]))
