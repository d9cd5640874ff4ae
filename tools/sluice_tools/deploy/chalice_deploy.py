"""Run `chalice deploy --stage STAGE` for one app, as a subprocess in the app's dir.

The app's `app.py` reads resource names at import, so SLUICE_STAGE is set; AWS_ENDPOINT_URL
passes through, so the same call deploys to AWS or to moto.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from sluice_tools.deploy.target import Target


class ChaliceDeployError(RuntimeError):
    """`chalice deploy` exited non-zero; the message carries its output."""


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
    cmd = [*chalice_command(), "deploy", "--stage", target.stage]
    done = subprocess.run(
        cmd,
        cwd=app_dir,
        env=target.subprocess_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise ChaliceDeployError(f"chalice deploy of {app_dir.name} failed:\n{tail}")
    return output
