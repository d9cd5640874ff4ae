"""One stage, deployed in order: stacks (+ moto's gaps), each app (vendor, chalice deploy),
post-deploy settings, then doctor. The same path for AWS and for the emulator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sluice_tools.deploy.apps import discover_apps, select_apps
from sluice_tools.deploy.build import build_copy, build_lock
from sluice_tools.deploy.chalice_deploy import chalice_deploy
from sluice_tools.deploy.declaration import DeclarationError
from sluice_tools.deploy.doctor import DoctorReport, run_doctor
from sluice_tools.deploy.drift import repair_drift
from sluice_tools.deploy.post_deploy import apply_post_deploy, chalice_mapping_uuids
from sluice_tools.deploy.render import RenderedApp, template_inventory
from sluice_tools.deploy.stacks import StackResult, deploy_stack
from sluice_tools.deploy.state import read_functions, resolver_for
from sluice_tools.deploy.target import Target
from sluice_tools.deploy.templates import stage_stacks
from sluice_tools.deploy.vendor import vendor_shared
from sluice_tools.motocompat.cfn import fill_gaps


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
    repair_drift(target, stacks, log)  # what an unchanged template leaves drifted

    log("apps:")
    known_uuids: set[str] = set()
    for app in apps:
        app_started = time.monotonic()
        app_dir = app_dirs[app.key]
        vendor_shared(app_dir, target.root / "shared")
        try:
            chalice_deploy(app_dir, target)
        except Exception as exc:
            raise DeployError(str(exc)) from exc
        report.apps.append(app.rel)
        known_uuids |= chalice_mapping_uuids(app_dir, target.stage)
        seconds = time.monotonic() - app_started
        log(f"  {app.rel}: chalice deploy --stage {target.stage} done ({seconds:.1f} s)")

    log("post-deploy:")
    functions = read_functions(target, apps, stacks)
    try:
        report.post_deploy = apply_post_deploy(target, functions, stacks, log, known_uuids)
    except Exception as exc:
        raise DeployError(f"post-deploy settings failed: {exc}") from exc
    if not report.post_deploy:
        log("  nothing to change")

    if doctor:
        report.doctor = run_doctor(target, only=only, apps=all_apps)
        log(report.doctor.render())
    report.seconds = time.monotonic() - started
    return report
