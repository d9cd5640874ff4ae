"""A repository root with a copy of the record-type registry, as the `sluice` commands find
one (noxfile.py and router/ mark it): for tests that add or edit types without the checkout."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def registry_repo(dest: Path) -> Path:
    """`dest` made a repository root holding a copy of this checkout's `types/`."""
    (dest / "router").mkdir(parents=True)
    (dest / "noxfile.py").write_text("", encoding="utf-8")
    shutil.copytree(ROOT / "types", dest / "types")
    return dest
