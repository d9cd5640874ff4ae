"""Cold start per app: `import app` of the deployed package, next to `import boto3` alone.

Each sample is a fresh `python -S -X importtime` with only the extracted deployment zip and
the Lambda runtime's packages (boto3 & co.) on sys.path, the function's environment and
Lambda's own variables set; the figure is the cumulative import time of the top module.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = "import sys; sys.path[:0] = [{code!r}, {runtime!r}]; import {module}"


@dataclass(frozen=True)
class Package:
    """One deployed app as a worker would run it."""

    app: str
    code_dir: str
    runtime_dir: str
    environment: dict[str, str]
    function: str
    memory_mb: int
    timeout_s: int


@dataclass(frozen=True)
class ColdStart:
    app: str
    median_ms: float
    boto3_median_ms: float
    samples_ms: tuple[float, ...]

    @property
    def ratio(self) -> float:
        return self.median_ms / self.boto3_median_ms if self.boto3_median_ms else 0.0


def import_ms(package: Package, module: str) -> float:
    """One fresh interpreter's cumulative import time of `module`, in ms."""
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "LANG", "HOME", "TMPDIR"}}
    env.update(
        {
            "LAMBDA_TASK_ROOT": package.code_dir,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}",
            "AWS_LAMBDA_FUNCTION_NAME": package.function,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(package.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(package.timeout_s),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        }
    )
    env.update(package.environment)
    code = SCRIPT.format(code=package.code_dir, runtime=package.runtime_dir, module=module)
    done = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", code],
        env=env,
        cwd=package.code_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"import {module} failed for {package.app}: {done.stderr[-800:]}")
    return cumulative_ms(done.stderr, module)


def cumulative_ms(importtime: str, module: str) -> float:
    """The cumulative µs of `module`'s line in `-X importtime` output, in ms."""
    for line in importtime.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = [f.strip() for f in line.removeprefix("import time:").split("|")]
        if len(fields) == 3 and fields[2] == module:
            return int(fields[1]) / 1000
    raise ValueError(f"no import time line for {module}")


def measure(packages: list[Package], repeat: int = 7) -> list[ColdStart]:
    """Samples interleaved (app, boto3, app, ...) so drift hits both alike; medians."""
    results = []
    for package in packages:
        app_samples: list[float] = []
        boto_samples: list[float] = []
        for _ in range(repeat):
            app_samples.append(import_ms(package, "app"))
            boto_samples.append(import_ms(package, "boto3"))
        results.append(
            ColdStart(
                app=package.app,
                median_ms=statistics.median(app_samples),
                boto3_median_ms=statistics.median(boto_samples),
                samples_ms=tuple(round(s, 1) for s in app_samples),
            )
        )
    return results


def packages_of(runtime: Any) -> list[Package]:
    """One package per app of a started LocalRuntime (its extracted zips)."""
    seen: dict[str, Package] = {}
    for name, pool in runtime.pools.items():
        spec = pool.spec
        app = runtime.topology.functions[name].app.removeprefix("sluice-")
        if app in seen:
            continue
        env = {
            k: v
            for k, v in spec.environment.items()
            if not k.startswith("AWS_ENDPOINT") and k != "AWS_SDK_UA_APP_ID"
        }
        seen[app] = Package(
            app=app,
            code_dir=spec.code_dir,
            runtime_dir=spec.runtime_dir,
            environment=env,
            function=spec.function,
            memory_mb=spec.memory_mb,
            timeout_s=spec.timeout_s,
        )
    return [seen[a] for a in sorted(seen, key=_order)]


def _order(app: str) -> tuple[int, str]:
    order = {"ingest": 0, "cleanse": 1, "router": 2}
    return order.get(app, 3), app


def code_dirs_exist(packages: list[Package]) -> bool:
    return all(Path(p.code_dir, "app.py").is_file() for p in packages)
