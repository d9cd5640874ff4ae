"""Deployment zips carry neither boto3 nor botocore (nor what only they need), stay under
5 MB, and still import with only what the Lambda runtime adds; what ships is hash-checked,
and a runtime SDK too old for a shipped package stops the deploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from chalice.deploy.packager import DependencyBuilder, LambdaDeploymentPackager
from chalice.utils import UI, OSUtils

from sluice.registry import load_registry
from sluice_tools.deploy.apps import discover_apps
from sluice_tools.deploy.build import build_copy
from sluice_tools.deploy.render import Placement, template_inventory
from sluice_tools.deploy.runtime_sdk import RuntimeSdkError, check_runtime_sdk
from sluice_tools.deploy.vendor import (
    DependencyCache,
    DependencyError,
    lean_requirements,
    lock_text,
    runtime_provided,
    vendor_app,
)
from sluice_tools.local.pool import CodeStore
from sluice_tools.stages import PIPELINE_STAGES

ROOT = Path(__file__).resolve().parents[2]
MAX_ZIP = 5 * 1024 * 1024
NEVER_SHIPPED = {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3"}


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, dict[str, str]]]:
    """{app: (zip, rendered copy, one function's environment)}: every app, packaged by
    Chalice's own deployment packager from the copy the deploy renders and vendors."""
    work = tmp_path_factory.mktemp("lean")
    place = Placement("sluice", "test", "us-east-1", "123456789012", emulator=True)
    inventory = template_inventory(ROOT, place)
    cache = DependencyCache(work / "deps")
    lock = lock_text(ROOT)
    osutils = OSUtils()
    packager = LambdaDeploymentPackager(osutils, DependencyBuilder(osutils), UI())
    python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = {}
    for app in discover_apps(ROOT):
        copy, rendered = build_copy(app, place, work / "build", inventory)
        vendor_app(copy, ROOT / "shared", lock, cache)
        package = Path(packager.create_deployment_package(str(copy), python))
        function = sorted(rendered.policies)[0]
        found[app.rel] = (package, copy, rendered.environment(function))
    return found


def test_every_zip_is_small_and_carries_no_sdk(zips) -> None:
    assert set(PIPELINE_STAGES) <= set(zips)
    for app, (package, _, _) in zips.items():
        with zipfile.ZipFile(package) as archive:
            tops = {name.split("/")[0] for name in archive.namelist()}
            names = archive.namelist()
        assert not tops & NEVER_SHIPPED, f"{app} ships {sorted(tops & NEVER_SHIPPED)}"
        assert {"app.py", "sluice", "msgspec", "pythonjsonlogger"} <= tops, app
        shipped = {n.split("/")[1] for n in names if n.startswith("sluice_types/")}
        assert shipped == set(load_registry().names()), f"{app} ships types {sorted(shipped)}"
        assert package.stat().st_size <= MAX_ZIP, f"{app}: {package.stat().st_size} bytes"
    with zipfile.ZipFile(zips["cleanse"][0]) as archive:
        assert any(n.startswith("fastjsonschema/") for n in archive.namelist())


def test_every_zip_imports_with_only_what_the_runtime_adds(zips, tmp_path: Path) -> None:
    runtime = CodeStore(tmp_path / "store").runtime_dir()  # boto3 & co, as the local runtime
    probe = (
        "import sys, sysconfig, importlib\n"
        "std = [p for p in sys.path if p.startswith(sysconfig.get_paths()['stdlib'])]\n"
        "sys.path[:] = [sys.argv[1], sys.argv[2], *std]\n"
        "import app, botocore\n"
        "assert app.__file__.startswith(sys.argv[1]), app.__file__\n"
        "assert not botocore.__file__.startswith(sys.argv[1])\n"
        "print(type(app.app).__name__)\n"
    )
    for app, (package, _, environment) in zips.items():
        code = tmp_path / app.replace("/", "-")
        with zipfile.ZipFile(package) as archive:
            archive.extractall(code)
        env = {"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": "us-east-1", **environment}
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", probe, str(code), str(runtime)],
            cwd=code,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{app}: {done.stderr[-2000:]}"
        assert done.stdout.strip() == "Chalice", app


def test_the_copy_leaves_nothing_for_chalice_to_install(zips) -> None:
    for app, (_, copy, _) in zips.items():
        requirements = (copy / "requirements.txt").read_text()
        lines = [ln for ln in requirements.splitlines() if ln and not ln.startswith("#")]
        assert lines == [], app
        assert "botocore" in requirements  # it says what the runtime provides instead


def test_what_only_the_sdk_needs_is_dropped_what_a_shipped_package_needs_ships() -> None:
    lock = (
        "aws-xray-sdk==2.15.0 \\\n    --hash=sha256:aa\n    # via -r ingest/requirements.in\n"
        "botocore==1.44.8 \\\n    --hash=sha256:bb\n    # via aws-xray-sdk\n"
        "requests==2.32.0 \\\n    --hash=sha256:cc\n    # via -r ingest/requirements.in\n"
        "six==1.17.0 \\\n    --hash=sha256:dd\n    # via python-dateutil\n"
        "python-dateutil==2.9.0 \\\n    --hash=sha256:ee\n    # via botocore\n"
        "urllib3==2.8.0 \\\n    --hash=sha256:ff\n    # via\n    #   botocore\n"
        "    #   requests\n"
    )
    assert runtime_provided(lock) == {"boto3", "botocore", "s3transfer", "python-dateutil", "six"}
    lean = lean_requirements(lock, lock)
    assert [r.name for r in lean.shipped] == ["aws-xray-sdk", "requests", "urllib3"]
    assert "--hash=sha256:ff" in lean.text
    assert "botocore" not in lean.text


def test_a_wrong_hash_stops_the_install(tmp_path: Path) -> None:
    lock = lock_text(ROOT)
    entry = next(
        block
        for block in lock.split("\n")
        if block.startswith("python-json-logger==")  # pure Python, one wheel
    )
    requirements = f"{entry}\n    --hash=sha256:{'0' * 64}\n"
    lean = lean_requirements(requirements, lock)
    with pytest.raises(DependencyError, match=r"(?i)hash"):
        DependencyCache(tmp_path / "deps").install(lean)
    assert not list((tmp_path / "deps").glob("*/.complete"))


def test_a_runtime_sdk_older_than_a_shipped_package_needs_stops_the_deploy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = tmp_path / "needy-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: needy\nVersion: 1.0\n"
        "Requires-Dist: botocore>=1.40\nRequires-Dist: boto3>=99; python_version < '3'\n"
    )
    provided = frozenset({"boto3", "botocore"})
    monkeypatch.setenv("SLUICE_LAMBDA_BOTOCORE", "1.35.0")
    with pytest.raises(RuntimeSdkError, match=r"botocore 1\.35\.0 .* needy needs >=1\.40"):
        check_runtime_sdk([tmp_path], provided, emulator=False)
    monkeypatch.setenv("SLUICE_LAMBDA_BOTOCORE", "1.41.2")
    check = check_runtime_sdk([tmp_path], provided, emulator=False)
    assert check.provided["botocore"] == "1.41.2"
    assert json.dumps(check.needs)  # the marker-excluded boto3>=99 is not a need
    assert all(spec != ">=99" for spec, _ in check.needs["boto3"])
