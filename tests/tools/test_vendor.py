"""Vendoring shared/ into an app: the package's current files, nothing a stale build left."""

from __future__ import annotations

import shutil
from pathlib import Path

from sluice_tools.deploy.vendor import vendor_shared

ROOT = Path(__file__).resolve().parents[2]


def _shared_copy(tmp_path: Path) -> Path:
    shared = tmp_path / "shared"
    shutil.copytree(
        ROOT / "shared",
        shared,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    return shared


def test_a_module_left_in_a_stale_build_folder_never_ships(tmp_path: Path) -> None:
    shared = _shared_copy(tmp_path)
    planted = shared / "build" / "lib" / "sluice" / "planted.py"
    planted.parent.mkdir(parents=True)
    planted.write_text("raise SystemExit('a module deleted from the tree')\n")
    (shared / "sluice.egg-info").mkdir()
    (shared / "sluice.egg-info" / "SOURCES.txt").write_text("sluice/planted.py\n")

    vendor = vendor_shared(tmp_path / "app", shared)

    assert not (vendor / "sluice" / "planted.py").exists()
    shipped = sorted(p.relative_to(vendor).as_posix() for p in vendor.rglob("*.py"))
    in_tree = sorted(
        p.relative_to(shared).as_posix()
        for p in (shared / "sluice").rglob("*.py")
        if "__pycache__" not in p.parts
    )
    assert shipped == in_tree
    assert (vendor / "sluice" / "py.typed").is_file()
    assert not list(vendor.glob("*.dist-info"))


def test_a_deleted_module_leaves_and_a_changed_one_follows_on_the_next_vendoring(tmp_path):
    shared = _shared_copy(tmp_path)
    app = tmp_path / "app"
    extra = shared / "sluice" / "extra.py"
    extra.write_text("VALUE = 1\n")
    assert (vendor_shared(app, shared) / "sluice" / "extra.py").read_text() == "VALUE = 1\n"

    extra.unlink()
    (shared / "sluice" / "errors.py").write_text("# changed\n")
    vendor = vendor_shared(app, shared)

    assert not (vendor / "sluice" / "extra.py").exists()
    assert (vendor / "sluice" / "errors.py").read_text() == "# changed\n"
