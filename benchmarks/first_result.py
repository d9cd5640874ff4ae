"""First result: `sluice local run` on the samples, twice, in a fresh copy of the checkout.

The first run has nothing cached but the README's set-up (no `.sluice/`: no build copies,
no dependency cache, no Chalice zip cache, no saved deploy); the second runs on the same,
unchanged copy. Each run is `sluice local run --quiet --json` in a process of its own, as
a user types it; the breakdown comes from what the run itself records: the deploy's phases
(`.sluice/local/build/deploy-timings.json`, written by `deploy/pipeline.py`), the runtime's
"ready in" line, and the run's own pipeline seconds. Each app's deployment zip is listed
with its size zipped and unzipped. Figures only, nothing asserted.

    python -m benchmarks.first_result            # or: python -m benchmarks.run --only first
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_FIRST_S = 25.0
TARGET_SECOND_S = 10.0
_SKIP = shutil.ignore_patterns(
    ".git", ".venv", ".nox", ".sluice", "vendor", "__pycache__", "*_cache", "deployed"
)


def fresh_copy(dest: Path) -> Path:
    """The checkout as a fresh clone has it (no `.sluice/`, no build output)."""
    shutil.copytree(ROOT, dest, ignore=_SKIP, symlinks=True)
    return dest


def sluice_command() -> list[str]:
    beside = Path(sys.executable).with_name("sluice")
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "sluice_tools.cli"]


def one_run(repo: Path, label: str) -> dict[str, Any]:
    """`sluice local run` in `repo`; its wall time and what it recorded."""
    timings = repo / ".sluice" / "local" / "build" / "deploy-timings.json"
    before = timings.stat().st_mtime if timings.is_file() else None
    started = time.monotonic()
    done = subprocess.run(
        [*sluice_command(), "local", "run", "--quiet", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    figures: dict[str, Any] = {"run": label, "wall_s": round(wall, 2), "exit": done.returncode}
    try:
        figures.update(json.loads(done.stdout)["run"])
    except (ValueError, KeyError):
        figures["output"] = (done.stdout + done.stderr)[-2000:]
    ready = re.search(r"runtime ready in ([0-9.]+) s", done.stderr)
    figures["ready_s"] = float(ready.group(1)) if ready else None
    figures["deploy_skipped"] = "deploy skipped" in done.stderr
    if timings.is_file() and timings.stat().st_mtime != before:
        figures["deploy"] = json.loads(timings.read_text())
    return figures


def zip_sizes(repo: Path) -> list[dict[str, Any]]:
    """Each app's newest deployment zip under the run's build copies."""
    build = repo / ".sluice" / "local" / "build"
    found = []
    for deployments in sorted(build.glob("**/.chalice/deployments")):
        zips = sorted(deployments.glob("*.zip"), key=lambda p: p.stat().st_mtime)
        if not zips:
            continue
        with zipfile.ZipFile(zips[-1]) as archive:
            unzipped = sum(i.file_size for i in archive.infolist())
            tops = {n.split("/")[0] for n in archive.namelist()}
        found.append(
            {
                "app": deployments.parent.parent.relative_to(build).as_posix(),
                "zipped_mb": round(zips[-1].stat().st_size / 1e6, 2),
                "unzipped_mb": round(unzipped / 1e6, 2),
                "botocore_inside": "botocore" in tops or "boto3" in tops,
            }
        )
    return found


def measure() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sluice-first-") as tmp:
        repo = fresh_copy(Path(tmp) / "repo")
        first = one_run(repo, "first (fresh clone)")
        second = one_run(repo, "second (unchanged)")
        return {"runs": [first, second], "zips": zip_sizes(repo)}


def _s(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_figures(figures: dict[str, Any], table: Any) -> None:
    rows = []
    for run in figures["runs"]:
        deploy = run.get("deploy") or {}
        phases = deploy.get("phases", {})
        target = TARGET_FIRST_S if run["run"].startswith("first") else TARGET_SECOND_S
        rows.append(
            [
                run["run"],
                _s(run["wall_s"]),
                f"<= {target:.0f}: {'yes' if run['wall_s'] <= target else 'no'}",
                _s(run.get("ready_s")),
                "skipped" if run["deploy_skipped"] else _s(deploy.get("seconds")),
                _s(phases.get("render")),
                _s(phases.get("vendor")),
                _s(phases.get("stacks")),
                _s(phases.get("apps")),
                _s((phases.get("post_deploy") or 0) + (phases.get("doctor") or 0) or None),
                _s(run.get("pipeline_seconds")),
                str(run["exit"]),
            ]
        )
    table(
        "First result: `sluice local run` on the samples (s; wall = the whole command)",
        [
            "run",
            "wall",
            "target",
            "runtime ready",
            "deploy",
            "render",
            "vendor",
            "stacks",
            "apps",
            "post+doctor",
            "pipeline",
            "exit",
        ],
        rows,
    )
    first_deploy = figures["runs"][0].get("deploy") or {}
    if first_deploy.get("apps"):
        table(
            "First run: each app's `chalice deploy` (s; 2 processes, apps in turn)",
            ["app", "seconds"],
            [[app, f"{s:.1f}"] for app, s in first_deploy["apps"].items()],
        )
    table(
        "Deployment zips (MB; target <= 5 zipped, no boto3/botocore)",
        ["app", "zipped", "unzipped", "boto3/botocore inside"],
        [
            [z["app"], f"{z['zipped_mb']:.2f}", f"{z['unzipped_mb']:.2f}", z["botocore_inside"]]
            for z in figures["zips"]
        ],
    )


def run(table: Any) -> dict[str, Any]:
    """Measure, print with `table` (benchmarks.run's), return the figures."""
    figures = measure()
    print_figures(figures, table)
    return figures


def main() -> int:
    from benchmarks.run import table

    print(json.dumps(run(table), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
