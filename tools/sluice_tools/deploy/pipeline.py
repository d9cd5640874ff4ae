"""One stage, deployed in order: stacks (+ moto's gaps), the apps (vendor, chalice deploy),
post-deploy settings, then doctor. The same path for AWS and for the emulator.

The apps are vendored side by side (one dependency cache, `vendor.py`), their runtime's
SDK checked (`runtime_sdk.py`), then deployed by Chalice in `APP_WORKERS` processes side by
side, each deploying its share of the apps in turn (`chalice_deploy_all`): each app has its
own functions, roles and event sources, and Chalice only reads-merges-writes an S3 bucket's
notifications for `on_s3_event` (ingest alone has one). Each phase's seconds are in the
report and in `<build root>/deploy-timings.json` (the first-result benchmark reads them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sluice_tools.deploy.apps import discover_apps, select_apps
from sluice_tools.deploy.build import build_copy, build_lock
from sluice_tools.deploy.chalice_deploy import chalice_deploy_all
from sluice_tools.deploy.declaration import DeclarationError
from sluice_tools.deploy.doctor import DoctorReport, run_doctor
from sluice_tools.deploy.drift import repair_drift
from sluice_tools.deploy.post_deploy import apply_post_deploy, chalice_mapping_uuids
from sluice_tools.deploy.render import RenderedApp, template_inventory
from sluice_tools.deploy.runtime_sdk import RuntimeSdkError, SdkCheck, check_runtime_sdk
from sluice_tools.deploy.stacks import StackResult, deploy_stack
from sluice_tools.deploy.state import read_functions, resolver_for
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import stage_stacks
from sluice_tools.deploy.vendor import (
    DependencyError,
    VendorResult,
    dependency_cache,
    lock_text,
    package_files,
    runtime_provided,
    vendor_app,
)
from sluice_tools.motocompat.cfn import fill_gaps

APP_WORKERS = 2  # processes deploying apps side by side (chalice_deploy.chalice_deploy_all)
TIMINGS_FILE = "deploy-timings.json"


class DeployError(RuntimeError):
    """A step of the deploy failed; the message says which and why."""


@dataclass
class DeployReport:
    stage: str
    stacks: list[StackResult] = field(default_factory=list)
    gaps_filled: list[str] = field(default_factory=list)
    apps: list[str] = field(default_factory=list)
    rendered: list[RenderedApp] = field(default_factory=list)
    build_root: Path | None = None
    post_deploy: list[str] = field(default_factory=list)
    doctor: DoctorReport | None = None
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds, in order
    app_seconds: dict[str, float] = field(default_factory=dict)  # app -> its chalice deploy
    vendored: dict[str, VendorResult] = field(default_factory=dict)
    sdk: SdkCheck | None = None

    def timings(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "seconds": round(self.seconds, 3),
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "apps": {k: round(v, 3) for k, v in self.app_seconds.items()},
            "dependencies_installed": sorted(
                key for key, v in self.vendored.items() if v.installed
            ),
        }

    @property
    def ok(self) -> bool:
        return self.doctor is None or self.doctor.ok


def deploy_stage(
    target: Target,
    only: list[str] | None = None,
    *,
    build_dir: Path | None = None,
    doctor: bool = True,
    log: Callable[[str], None] = print,
) -> DeployReport:
    """Deploy `target.stage`: stacks, apps in order, post-deploy settings, then doctor.

    `only` limits the apps (and consumer stacks) to those named; the platform stack is always
    deployed (a no-op when unchanged). Apps are deployed from copies rendered for the target
    (`build.py`) under `build_dir`, by default `.sluice/build/<prefix>-<stage>`; the checkout
    is never written to. Every app is rendered before anything is deployed, so a mistake
    in a `deploy.yaml` stops the deploy before it starts.
    """
    build_root = build_dir or target.build_root
    with build_lock(build_root):
        return _deploy(target, only, build_root, build_dir is None, doctor, log)


def _deploy(
    target: Target,
    only: list[str] | None,
    build_root: Path,
    seed_state: bool,
    doctor: bool,
    log: Callable[[str], None],
) -> DeployReport:
    started = time.monotonic()
    report = DeployReport(stage=target.stage)
    clock = _Clock(report.phases)
    all_apps = discover_apps(target.root)
    try:
        apps = select_apps(all_apps, only)
    except ValueError as exc:
        raise DeployError(str(exc)) from exc
    consumers = [a.path.name for a in apps if a.key.startswith("consumer-")]
    stacks = stage_stacks(
        target.root, target.stage, target.prefix, consumers=consumers if only else None
    )
    report.build_root = build_root
    place = target.placement()
    inventory = template_inventory(target.root, place)
    app_dirs = {}
    try:
        for app in apps:
            app_dirs[app.key], rendered = build_copy(
                app, place, build_root, inventory, seed_state=seed_state
            )
            report.rendered.append(rendered)
    except DeclarationError as exc:
        raise DeployError(f"cannot render the apps: {exc}") from exc
    clock.lap("render")

    # Vendored before anything is deployed: a requirement pip cannot install, or a runtime
    # too old for what ships, stops the deploy before it changes anything.
    lock = lock_text(target.root)
    cache = dependency_cache(target.root)
    shared = target.root / "shared"
    shared_files = package_files(shared)
    try:
        with ThreadPoolExecutor(max_workers=APP_WORKERS) as pool:  # pip runs per distinct set
            vendoring = {
                app.key: pool.submit(
                    vendor_app, app_dirs[app.key], shared, lock, cache, shared_files
                )
                for app in apps
            }
            for app in apps:
                report.vendored[app.key] = vendoring[app.key].result()
        clock.lap("vendor")
        deps = sorted({v.deps_dir for v in report.vendored.values()})
        report.sdk = check_runtime_sdk(deps, runtime_provided(lock), emulator=target.emulator)
    except (DependencyError, RuntimeSdkError, ValueError) as exc:
        raise DeployError(f"cannot vendor the apps' packages: {exc}") from exc
    clock.lap("sdk_check")

    where = "the emulator" if target.emulator else f"AWS {target.region}"
    log(f"deploy stage {target.stage} to {where}")
    log("stacks:")
    for spec in stacks:
        try:
            report.stacks.append(deploy_stack(target, spec, log))
        except Exception as exc:
            raise DeployError(f"stack {spec.name} failed:\n{exc}") from exc
        if target.emulator:
            filled = fill_gaps(target, spec, resolver_for(target, spec), log=lambda _: None)
            report.gaps_filled += filled
            log(f"  {spec.name}: {len(filled)} setting(s) moto's CloudFormation skips, applied")
    clock.lap("stacks")
    repair_drift(target, stacks, log)  # what an unchanged template leaves drifted
    clock.lap("drift")

    log(f"apps ({report.sdk.summary()}):")

    deployed = chalice_deploy_all([app_dirs[a.key] for a in apps], target, APP_WORKERS)
    failures = []
    for app in apps:  # the report keeps the apps' order
        result = deployed[app_dirs[app.key]]
        if not result.ok:
            failures.append(result.failure())
            continue
        report.apps.append(app.rel)
        report.app_seconds[app.rel] = result.seconds
        vendored = report.vendored[app.key]
        log(
            f"  {app.rel}: chalice deploy --stage {target.stage} done ({result.seconds:.1f} s; "
            f"{len(vendored.shipped)} package(s) shipped, runtime's: "
            f"{', '.join(vendored.dropped) or 'none'})"
        )
    if failures:
        raise DeployError("\n".join(failures))
    known_uuids: set[str] = set()
    for app in apps:
        known_uuids |= chalice_mapping_uuids(app_dirs[app.key], target.stage)
    clock.lap("apps")

    log("post-deploy:")
    functions = read_functions(target, apps, stacks)
    try:
        report.post_deploy = apply_post_deploy(target, functions, stacks, log, known_uuids)
    except Exception as exc:
        raise DeployError(f"post-deploy settings failed: {exc}") from exc
    if not report.post_deploy:
        log("  nothing to change")
    clock.lap("post_deploy")

    if doctor:
        report.doctor = run_doctor(target, only=only, apps=all_apps)
        log(report.doctor.render())
        clock.lap("doctor")
    report.seconds = time.monotonic() - started
    _write_timings(build_root, report)
    return report


class _Clock:
    """Seconds since the last lap, added to `phases` under the lap's name."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases
        self.at = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.at
        self.at = now


def _write_timings(build_root: Path, report: DeployReport) -> None:
    path = build_root / TIMINGS_FILE
    path.write_text(json.dumps(report.timings(), indent=2) + "\n", encoding="utf-8")
