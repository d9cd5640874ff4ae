"""The stage's templates, apps and triggers as the infrastructure tests read them.

Triggers come from each app's own Chalice object (`app.event_sources`), imported in a
subprocess per app (every app has its own `app` and `chalicelib`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sluice_tools.deploy.apps import AppSpec
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import Resolver, StackSpec

ROOT = Path(__file__).resolve().parents[2]
STAGE = "test"
STAGES = ("dev", "prod", "local", "test")
ACCOUNT = "123456789012"

_TRIGGERS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import app as module
found = []
for source in module.app.event_sources:
    found.append({
        "kind": type(source).__name__,
        "handler": source.name,
        "queue": getattr(source, "queue", None),
        "bucket": getattr(source, "bucket", None),
        "topic": getattr(source, "topic", None),
    })
print("TRIGGERS=" + json.dumps(found))
"""


def app_triggers(app: AppSpec, stage: str = STAGE) -> list[dict[str, Any]]:
    """The app's event sources (kind, handler, queue/bucket/topic) for `stage`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_ENDPOINT"))}
    env.update(SLUICE_STAGE=stage, AWS_DEFAULT_REGION="us-east-1")
    done = subprocess.run(
        [sys.executable, "-c", _TRIGGERS, str(app.path)],
        cwd=app.path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("TRIGGERS="))
    return list(json.loads(line.removeprefix("TRIGGERS=")))


def resolver(spec: StackSpec, stage: str = STAGE) -> Resolver:
    return Resolver(
        spec, {"Stage": stage, "ResourcePrefix": "sluice"}, region="us-east-1", account=ACCOUNT
    )


def offline_target(stage: str = STAGE) -> Target:
    target = Target(stage=stage, root=ROOT, region="us-east-1", emulator=True)
    target._account = ACCOUNT
    return target
