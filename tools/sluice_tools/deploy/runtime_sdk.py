"""Is the boto3/botocore of the Lambda runtime recent enough for what the zips carry?

The zips ship without boto3 and botocore (`vendor.py`): the functions use the runtime's.
Before any app is deployed, the deploy compares what is needed with what the runtime has:

- needed: `CODE_NEEDS` (what Sluice's own code uses, below) and every version bound a
  shipped package declares on a runtime package (its `Requires-Dist`, e.g. aws-xray-sdk's
  `botocore>=1.11.3`), read from the installed packages' metadata;
- provided: on AWS, the runtime's SDK version from `LAMBDA_RUNTIME_SDK` (AWS documents it
  per runtime, "Runtime-included SDK versions" in the Lambda developer guide; the runtime
  is updated in place, so a documented version is a floor); on the emulator, the dev
  environment's own boto3/botocore, which the local runtime gives the functions.

A shortfall stops the deploy before it starts, naming the package, both versions and who
needs it. `SLUICE_LAMBDA_BOTOCORE` (and `SLUICE_LAMBDA_BOTO3`) set the runtime's version
when you know better than the table (a function that logs `botocore.__version__`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from sluice_tools.deploy.vendor import python_tag

# What the code in shared/ and the apps needs of the SDK: conditional PutItem with
# `ReturnValuesOnConditionCheckFailure` (the idempotency claims, the warehouse's placements),
# first in botocore 1.29.164's DynamoDB model (1.29.163 lacks it; checked 2026-12-04 in the
# released wheels), with boto3 1.26.164 beside it. Older, the parameter is refused, or with
# validation off silently dropped, and a refused claim would come back without its item.
CODE_NEEDS = {"botocore": ">=1.29.164", "boto3": ">=1.26.164"}
# The SDK a runtime is documented with, at least (AWS updates runtimes in place, upward).
# python3.11: boto3-1.27.1 botocore-1.30.1, AWS's runtime table as quoted by the botocore
# maintainers in boto/botocore#3082 (2023-11-29); later runtime updates only raise it.
LAMBDA_RUNTIME_SDK: dict[str, dict[str, str]] = {
    "python3.11": {"boto3": "1.27.1", "botocore": "1.30.1"},
}
OVERRIDES = {"botocore": "SLUICE_LAMBDA_BOTOCORE", "boto3": "SLUICE_LAMBDA_BOTO3"}


class RuntimeSdkError(RuntimeError):
    """The runtime's SDK is older than what the shipped code needs (or is not known)."""


@dataclass(frozen=True)
class SdkCheck:
    runtime: str
    provided: dict[str, str]  # package -> version the runtime has
    needs: dict[str, list[tuple[str, str]]]  # package -> [(specifier, who needs it)]
    where: str  # where `provided` came from

    def summary(self) -> str:
        parts = []
        for name in sorted(self.needs):
            bounds = ", ".join(sorted({spec for spec, _ in self.needs[name] if spec}))
            parts.append(f"{name} {self.provided.get(name, '?')} (needs {bounds or 'any'})")
        return f"runtime {self.runtime} SDK from {self.where}: " + "; ".join(parts)


def runtime_versions(runtime: str, emulator: bool) -> tuple[dict[str, str], str]:
    """{package: version} the functions' runtime provides, and where that comes from."""
    if emulator:
        found = {name: metadata.version(name) for name in ("boto3", "botocore")}
        return found, "the dev environment (the local runtime's)"
    table = dict(LAMBDA_RUNTIME_SDK.get(runtime, {}))
    where = "LAMBDA_RUNTIME_SDK (tools/sluice_tools/deploy/runtime_sdk.py)"
    for name, variable in OVERRIDES.items():
        if os.environ.get(variable):
            table[name] = os.environ[variable]
            where = f"{variable} and {where}"
    return table, where


def shipped_needs(
    deps_dirs: list[Path], runtime_packages: frozenset[str]
) -> dict[str, list[tuple[str, str]]]:
    """{runtime package: [(specifier, shipped package)]} from the shipped packages' metadata."""
    python = python_tag()
    needs: dict[str, list[tuple[str, str]]] = {}
    for deps in deps_dirs:
        for meta in sorted(deps.glob("*.dist-info/METADATA")):
            headers = HeaderParser().parsestr(meta.read_text(encoding="utf-8", errors="replace"))
            owner = str(headers.get("Name", meta.parent.name))
            for line in headers.get_all("Requires-Dist") or []:
                try:
                    req = Requirement(line)
                except InvalidRequirement:
                    continue
                name = canonicalize_name(req.name)
                if name not in runtime_packages:
                    continue
                env = {"python_version": python, "extra": ""}
                if req.marker is not None and not req.marker.evaluate(env):
                    continue
                needs.setdefault(name, []).append((str(req.specifier), owner))
    return needs


def check_runtime_sdk(
    deps_dirs: list[Path], runtime_packages: frozenset[str], *, emulator: bool
) -> SdkCheck:
    """Raise `RuntimeSdkError` unless the runtime's SDK satisfies every need; the check."""
    runtime = f"python{python_tag()}"
    provided, where = runtime_versions(runtime, emulator)
    needs: dict[str, list[tuple[str, str]]] = {
        name: [(spec, "Sluice's code (runtime_sdk.CODE_NEEDS)")]
        for name, spec in CODE_NEEDS.items()
    }
    for name, found in shipped_needs(deps_dirs, runtime_packages).items():
        needs.setdefault(name, []).extend(found)
    problems = []
    for name, bounds in sorted(needs.items()):
        have = provided.get(name)
        if have is None:
            if any(spec for spec, _ in bounds) and name in OVERRIDES:
                problems.append(
                    f"{name}: the {runtime} runtime's version is not known "
                    f"(add it to LAMBDA_RUNTIME_SDK or set {OVERRIDES[name]})"
                )
            continue
        for spec, who in bounds:
            if spec and not Requirement(f"{name}{spec}").specifier.contains(
                Version(have), prereleases=True
            ):
                problems.append(f"{name} {have} in the {runtime} runtime, {who} needs {spec}")
    if problems:
        raise RuntimeSdkError(
            "the Lambda runtime's SDK is too old for what the zips carry (boto3 and botocore "
            f"are not shipped; the runtime's are used, from {where}):\n  " + "\n  ".join(problems)
        )
    return SdkCheck(runtime, provided, needs, where)
