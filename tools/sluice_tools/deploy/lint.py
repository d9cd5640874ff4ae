"""cfn-lint over every template of the repo, including what `chalice package` makes of each app.

`python -m sluice_tools.deploy.lint [--stage STAGE]` (nox -s lint runs it). Apps with
`@app.on_s3_event` are skipped with a note: `chalice package` refuses them (FACTS.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from sluice_tools.deploy.apps import AppSpec, discover_apps
from sluice_tools.deploy.build import build_copy, build_lock
from sluice_tools.deploy.chalice_deploy import chalice_command
from sluice_tools.deploy.render import EMULATOR_STAGES, Placement, template_inventory
from sluice_tools.deploy.target import repo_root
from sluice_tools.deploy.templates import StackSpec, stage_stacks


def cfn_lint_command() -> list[str]:
    beside = Path(sys.executable).with_name("cfn-lint")
    if beside.is_file():
        return [str(beside)]
    return [shutil.which("cfn-lint") or "cfn-lint"]


def packageable(app: AppSpec) -> bool:
    return "on_s3_event" not in (app.path / "app.py").read_text(encoding="utf-8")


def package_app(app: AppSpec, stage: str, out: Path, build: Path | None = None) -> Path:
    """`chalice package --stage STAGE` of `app` into `out`; returns the SAM template.

    The app is packaged from a copy rendered for `stage` (prefix sluice, us-east-1, a
    placeholder account) made under `build` (default: beside `out`), which also lets
    chalice reuse its dependency cache between runs.
    """
    place = Placement(
        "sluice", stage, "us-east-1", "123456789012", emulator=stage in EMULATOR_STAGES
    )
    build_root = build if build is not None else out.parent / "apps"
    with build_lock(build_root):
        app_dir, _ = build_copy(app, place, build_root, template_inventory(app.root, place))
        return _package(app, app_dir, stage, out)


def _package(app: AppSpec, app_dir: Path, stage: str, out: Path) -> Path:
    """Run `chalice package` in the rendered copy `app_dir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env.update(SLUICE_STAGE=stage)
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    done = subprocess.run(
        [*chalice_command(), "package", "--stage", stage, str(out)],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"chalice package of {app.rel} failed:\n{done.stdout}{done.stderr}")
    return out / "sam.json"


def template_files(stacks: list[StackSpec], directory: Path) -> list[Path]:
    """Each stack's template as deployed: its file, or the rendered text (e.g. the platform
    with its Glue tables) written to `directory/<stack name>/template.yaml`."""
    paths = []
    for spec in stacks:
        if spec.rendered is None:
            paths.append(spec.path)
            continue
        path = directory / spec.name / "template.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(spec.rendered, encoding="utf-8")
        paths.append(path)
    return paths


def lint_all(
    root: Path,
    stage: str = "dev",
    build: Path | None = None,
    log: Callable[[str], None] = print,
    packaged: Path | None = None,
) -> int:
    """Run cfn-lint on the stage's templates and the apps' packaged templates; exit code.

    `packaged`: keep each app's packaged template there (`<app key>/sam.json`, for other
    checkers such as checkov) and the rendered stacks (`stacks/<stack>/template.yaml`)
    instead of in a temporary directory.
    """
    with tempfile.TemporaryDirectory(prefix="sluice-package-") as tmp:
        out = packaged if packaged is not None else Path(tmp)
        # Rendered stacks (the platform with its Glue tables) are kept beside the packaged
        # apps, as `stacks/<stack>/template.yaml`, for checkov too.
        templates = template_files(stage_stacks(root, stage), out / "stacks")
        for app in discover_apps(root):
            if not packageable(app):
                log(f"cfn-lint: {app.rel} skipped: chalice package refuses @app.on_s3_event")
                continue
            templates.append(package_app(app, stage, out / app.key, build))
        done = subprocess.run([*cfn_lint_command(), *map(str, templates)], check=False)
    shown = ", ".join(
        str(t.relative_to(root)) if t.is_relative_to(root) else t.parent.name for t in templates
    )
    log(f"cfn-lint: {len(templates)} template(s): {shown}")
    return done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--build-dir", type=Path, default=None)
    parser.add_argument("--packaged-dir", type=Path, default=None)
    args = parser.parse_args()
    sys.exit(lint_all(repo_root(), args.stage, args.build_dir, packaged=args.packaged_dir))


if __name__ == "__main__":
    main()
