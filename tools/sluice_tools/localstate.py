"""The running `sluice local up` of this checkout, as the other commands see it.

`local up` writes `.sluice/local/up.json` (pid, endpoint, stage). While that process lives
and AWS_ENDPOINT_URL is not set, `--stage` defaults to the up's stage, and a command given
that stage talks to the up's endpoint with the emulator's credentials: nothing to export.
Any other stage goes where the environment says (AWS), so `--stage prod` never lands on
the emulator because a local stack happens to be up.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

# `local up`'s state file, in its state dir (written by sluice_tools.local.commands).
STATE_FILE = "up.json"


def state_dir(root: Path) -> Path:
    """Where `sluice local up` of the checkout at `root` keeps its state and logs."""
    return root / ".sluice" / "local"


def read_state(root: Path) -> dict[str, Any] | None:
    """The state file of `root`'s `local up` (None: none, or not readable)."""
    path = state_dir(root) / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


def alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LocalEndpoint:
    """Where a live `local up` serves, and the stage it deployed."""

    endpoint: str
    stage: str
    pid: int
    region: str | None = None  # when up.json names them (newer `up`)
    prefix: str | None = None

    def environment(self) -> dict[str, str]:
        """The variables that point boto3 (and `chalice deploy`) at the emulator."""
        from sluice_tools.local.emulator import CREDENTIALS

        env = {"AWS_ENDPOINT_URL": self.endpoint, **CREDENTIALS}
        if self.region:
            env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = self.region
        return env


def local_endpoint(root: Path | None = None) -> LocalEndpoint | None:
    """The `local up` of `root` (default: this checkout) if its process is alive, else None."""
    from sluice_tools.deploy.target import repo_root

    state = read_state(root or repo_root())
    if not state:
        return None
    try:
        pid, endpoint = int(state["pid"]), str(state["endpoint"])
    except (KeyError, TypeError, ValueError):
        return None  # a state file from another version, or half written: not an up
    if not alive(pid):
        return None
    return LocalEndpoint(
        endpoint=endpoint,
        stage=str(state.get("stage") or "local"),
        pid=pid,
        region=state.get("region") or None,
        prefix=state.get("prefix") or None,
    )


def local_endpoint_for(stage: str | None) -> LocalEndpoint | None:
    """The live `local up` a command for `stage` (None: any) uses; None: the environment's.

    Not when AWS_ENDPOINT_URL names another endpoint: the variable says where to go.
    """
    found = local_endpoint()
    if found is None or (stage is not None and found.stage != stage):
        return None
    override = os.environ.get("AWS_ENDPOINT_URL")
    if override and override != found.endpoint:
        return None
    return found


def default_stage() -> str | None:
    """`--stage`'s default: the stage of a live `local up` (None: the option is required)."""
    found = local_endpoint_for(None)
    return found.stage if found else None


def use_local_endpoint(stage: str) -> LocalEndpoint | None:
    """Point this process at the live `local up` if `stage` is its stage; say so on stderr."""
    found = local_endpoint_for(stage)
    if found is None or os.environ.get("AWS_ENDPOINT_URL") == found.endpoint:
        return found  # none, or the environment points there already
    os.environ.update(found.environment())
    click.echo(
        f"using the endpoint of `sluice local up` (pid {found.pid}): {found.endpoint}", err=True
    )
    return found
