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


def unregistered_name(base: str) -> str:
    """`base`, or `base2`, `base3`, ...: the first that this checkout's registry does not hold
    (a test that adds a type must still pass once a type of that name is registered)."""
    from sluice.registry import load_registry

    names = load_registry(ROOT / "types").names()
    return next(n for n in (base, *(f"{base}{i}" for i in range(2, 100))) if n not in names)


def unused_consumer_name(base: str) -> str:
    """`base`, or `base2`, `base3`, ...: the first no consumer of this checkout is named (a
    test that scaffolds a consumer must still pass once a consumer of that name exists)."""
    taken = {p.name for p in (ROOT / "consumers").iterdir()} | {
        p.name for p in (ROOT / "tests" / "consumers").iterdir()
    }
    return next(n for n in (base, *(f"{base}{i}" for i in range(2, 100))) if n not in taken)
