"""The copy of an app that a deploy ships: the committed app, rendered for one place.

`sluice deploy` never deploys the checkout itself: each app is copied under a build root
(`.sluice/build/<prefix>-<stage>/<app>` unless told otherwise), every file of a previous
copy removed first so a deleted module never ships, then `.chalice/config.json` and the
policy files are rendered from `deploy.yaml`. The build root is stable per prefix and
stage, so Chalice's deployed state (`.chalice/deployed/<stage>.json`) and its zip cache
(`.chalice/deployments`) stay there between deploys; a state left in the app dir by an
in-place deploy (before 2026-12) is copied in once. A deploy holds `build_lock` on its
build root throughout, so two deploys (or test runs) sharing one wait for each other
instead of clearing each other's copies.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sluice_tools.deploy.apps import AppSpec
from sluice_tools.deploy.render import Placement, RenderedApp, render_app, write_rendered

KEPT = ("deployed", "deployments")  # under .chalice: Chalice's state and its zip cache
_IGNORE = shutil.ignore_patterns(
    "vendor", "__pycache__", ".mypy_cache", "deployments", "deployed", "policy-*.json"
)


_HELD: dict[Path, int] = {}  # build roots this process holds, and how deep


@contextmanager
def build_lock(build_root: Path) -> Iterator[None]:
    """Exclusive use of `build_root` by this process until the block ends (waits for it).

    Re-entrant within the process (a test fixture may hold it around a deploy)."""
    key = build_root.resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    build_root.mkdir(parents=True, exist_ok=True)
    with (build_root / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_copy(
    app: AppSpec,
    place: Placement,
    build_root: Path,
    inventory: dict[str, set[str]],
    *,
    seed_state: bool = False,
) -> tuple[Path, RenderedApp]:
    """Copy `app` to `build_root/<app.rel>` and render it for `place`; (dir, rendered).

    `seed_state`: take `.chalice/deployed/<stage>.json` from the app dir when the copy
    has none (the default build root only: an old in-place deploy's state).
    """
    rendered = render_app(app, place, inventory)  # fails before touching anything
    dest = build_root / app.rel
    _clear(dest)
    shutil.copytree(app.path, dest, ignore=_IGNORE, dirs_exist_ok=True)
    if seed_state:
        state = Path(".chalice") / "deployed" / f"{place.stage}.json"
        if (app.path / state).is_file() and not (dest / state).is_file():
            (dest / state).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(app.path / state, dest / state)
    write_rendered(rendered, dest)
    return dest, rendered


def _clear(dest: Path) -> None:
    """Remove all of a previous copy but Chalice's state and zip cache."""
    if not dest.is_dir():
        return
    for child in dest.iterdir():
        if child.name == ".chalice" and child.is_dir():
            for inner in child.iterdir():
                if inner.name not in KEPT:
                    _remove(inner)
        else:
            _remove(child)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
