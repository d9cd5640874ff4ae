"""Vendor the shared package into an app's `vendor/`, so the zip carries exactly it.

Only `shared/` goes there (its third-party needs are in the app's requirements.txt, which is
Chalice's job). The wheel is built once per content of `shared/`, from a clean temporary
copy of the package's own files: a `build/` or `*.egg-info` folder left in the checkout
(setuptools reuses `build/lib`) can never put a deleted module into a Lambda. Each app's
old `vendor/` is removed first, then the wheel is unpacked into it (a pure-Python wheel is
its files, so unpacking is what pip would do, in milliseconds instead of seconds per app).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# What never belongs to the package: build leftovers and caches.
_NOT_SOURCE = ("build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".mypy_cache")
_wheels: dict[str, Path] = {}  # content hash of shared/ -> its wheel (this process)


def source_files(shared_dir: Path) -> list[Path]:
    """The files a clean copy of `shared_dir` holds (sorted, relative)."""
    ignore = shutil.ignore_patterns(*_NOT_SOURCE)
    found: list[Path] = []

    def walk(folder: Path) -> None:
        names = sorted(p.name for p in folder.iterdir())
        skipped = ignore(str(folder), names)
        for name in names:
            if name in skipped:
                continue
            path = folder / name
            if path.is_dir():
                walk(path)
            else:
                found.append(path.relative_to(shared_dir))

    walk(shared_dir)
    return found


def shared_wheel(shared_dir: Path) -> Path:
    """The wheel of `shared_dir`'s current files, built from a clean copy (once per content)."""
    files = source_files(shared_dir)
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.as_posix().encode() + b"\0" + (shared_dir / rel).read_bytes() + b"\0")
    key = digest.hexdigest()
    wheel = _wheels.get(key)
    if wheel is not None and wheel.is_file():
        return wheel
    work = Path(tempfile.mkdtemp(prefix="sluice-shared-"))
    clean = work / "src"
    for rel in files:
        (clean / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shared_dir / rel, clean / rel)
    cmd = [
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
        "--disable-pip-version-check", "--wheel-dir", str(work / "dist"), str(clean),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building the wheel of {shared_dir} failed:\n{done.stderr}")
    (wheel,) = (work / "dist").glob("*.whl")
    _wheels[key] = wheel
    return wheel


def vendor_shared(app_dir: Path, shared_dir: Path) -> Path:
    """Replace APP/vendor with the shared package's files; returns the vendor dir."""
    vendor = app_dir / "vendor"
    if vendor.exists():
        shutil.rmtree(vendor)
    vendor.mkdir(parents=True)
    with zipfile.ZipFile(shared_wheel(shared_dir)) as wheel:
        # The wheel's metadata is not code the function needs; keep the zip to the package.
        members = [m for m in wheel.namelist() if ".dist-info/" not in m]
        wheel.extractall(vendor, members)
    return vendor
