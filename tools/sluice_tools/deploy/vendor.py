"""Vendor the shared package fresh into an app's `vendor/`, so the zip carries exactly it.

Only `shared/` goes there (its third-party needs are in the app's requirements.txt, which is
Chalice's job). The old `vendor/` is removed first: a stale module never ships.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def vendor_shared(app_dir: Path, shared_dir: Path) -> Path:
    """`pip install --no-deps --target APP/vendor ./shared`; returns the vendor dir."""
    vendor = app_dir / "vendor"
    if vendor.exists():
        shutil.rmtree(vendor)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-compile",
        "--disable-pip-version-check",
        "--target",
        str(vendor),
        str(shared_dir),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"vendoring {shared_dir} into {vendor} failed:\n{done.stderr}")
    # pip's own metadata is not code the function needs; keep the zip to the package.
    for meta in vendor.glob("*.dist-info"):
        shutil.rmtree(meta)
    return vendor
