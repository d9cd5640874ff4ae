"""Where a deploy goes: stage, prefix, region, account, endpoint, and whether it is moto.

One object every step shares; it makes the boto3 clients (tooling, not the runtime's cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.config import ResourceNames
from sluice_tools.deploy.render import EMULATOR_STAGES, Placement

DEFAULT_REGION = "us-east-1"


def repo_root() -> Path:
    """The monorepo root: the nearest parent of the cwd with infra/platform.yaml, else ours."""
    for parent in (Path.cwd(), *Path.cwd().parents):
        if (parent / "infra" / "platform.yaml").is_file():
            return parent
    return Path(__file__).resolve().parents[3]


@dataclass
class Target:
    """A stage in one account and region; `emulator` when it is moto (endpoint or stage)."""

    stage: str
    prefix: str = "sluice"
    root: Path = field(default_factory=repo_root)
    region: str = ""
    endpoint_url: str | None = None
    emulator: bool = False
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _account: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, stage: str, prefix: str | None = None, root: Path | None = None) -> Target:
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
        region = (
            os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        )
        return cls(
            stage=stage,
            prefix=prefix or os.environ.get("SLUICE_RESOURCE_PREFIX") or "sluice",
            root=root or repo_root(),
            region=region,
            endpoint_url=endpoint,
            emulator=endpoint is not None or stage in EMULATOR_STAGES,
        )

    @property
    def names(self) -> ResourceNames:
        return ResourceNames(stage=self.stage, prefix=self.prefix)

    def client(self, service: str) -> Any:
        found = self._clients.get(service)
        if found is None:
            import boto3

            session: Any = boto3.session.Session()  # Any: stubs overload per literal name
            found = session.client(service, region_name=self.region, endpoint_url=self.endpoint_url)
            self._clients[service] = found
        return found

    @property
    def account(self) -> str:
        if self._account is None:
            self._account = str(self.client("sts").get_caller_identity()["Account"])
        return self._account

    @property
    def partition(self) -> str:
        return "aws-cn" if self.region.startswith("cn-") else "aws"

    def placement(self) -> Placement:
        """What rendered names and ARNs depend on (asks STS for the account once)."""
        return Placement(
            prefix=self.prefix,
            stage=self.stage,
            region=self.region,
            account=self.account,
            partition=self.partition,
            emulator=self.emulator,
        )

    @property
    def build_root(self) -> Path:
        """Where deploys render the apps by default: `.sluice/build/<prefix>-<stage>`."""
        return self.root / ".sluice" / "build" / f"{self.prefix}-{self.stage}"

    def parameters(self) -> dict[str, str]:
        """The parameters every Sluice template takes."""
        return {"Stage": self.stage, "ResourcePrefix": self.prefix}

    def subprocess_env(self) -> dict[str, str]:
        """Environment of `chalice deploy`: ours, plus the stage (app.py reads it at import)."""
        env = dict(os.environ)
        env["SLUICE_STAGE"] = self.stage
        env["AWS_DEFAULT_REGION"] = self.region
        env["SLUICE_RESOURCE_PREFIX"] = self.prefix  # not a different one from the shell
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        return env
