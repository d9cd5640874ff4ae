"""What an app's zip carries beside its own code: the shared package and its third-party needs.

Everything here happens in the rendered copy of the app (`build.py`), never in the checkout.

- The shared package: the files of `shared/sluice/` (pure Python) are copied into the copy's
  `vendor/`, listed from the tree with build leftovers and caches left out, so a `build/`
  or `*.egg-info` folder in the checkout can never put a deleted module into a Lambda. No
  wheel is built: the package's files are what a wheel of it would unpack to.
- The record-type registry: the repository's `types/` is copied beside the package as
  `vendor/sluice_types/` (`sluice.registry.SHIPPED_DIR`), where a deployed app reads it.
- Third-party packages: the app's committed `requirements.txt` (exact versions with hashes,
  from `requirements/lambda.lock`) less what the Lambda Python runtime provides, boto3 and
  botocore and what only they need (`runtime_provided`), is installed by pip with
  `--require-hashes --no-deps` for Lambda's platform into a cache shared by every app,
  stage and run (`.sluice/cache/deps/<hash of the lean list and platform>`), and copied
  into `vendor/`. Every file shipped was checked against the lock's hashes; nothing is
  downloaded twice. The copy's `requirements.txt` is replaced by a comment saying so,
  so Chalice installs nothing itself and its zip cache (keyed on `vendor/`) still follows
  any change.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# What never belongs to the package: build leftovers and caches.
_NOT_SOURCE = ("build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".mypy_cache")
SHARED_PACKAGE = "sluice"  # the import package of shared/ (its pyproject's packages)
REGISTRY_DIR = "types"  # the record-type registry in the repository
SHIPPED_REGISTRY = "sluice_types"  # its copy in vendor/ (sluice.registry.SHIPPED_DIR)
# What the Lambda Python runtime itself provides: the SDK. What only these need (jmespath,
# python-dateutil, six, urllib3 with today's lock) is found from the lock's `# via` notes.
RUNTIME_SDK = frozenset({"boto3", "botocore", "s3transfer"})
LAMBDA_PLATFORM = "manylinux2014_x86_64"  # Chalice's default architecture (x86_64)
DEPS_MARKER = ".complete"


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them (`Python_Dateutil` = `python-dateutil`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------- shared/


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


def package_files(shared_dir: Path) -> list[Path]:
    """The files of the shared package itself (`sluice/**`), relative to `shared_dir`."""
    files = [p for p in source_files(shared_dir) if p.parts[0] == SHARED_PACKAGE]
    if not any(p.name == "__init__.py" and len(p.parts) == 2 for p in files):
        raise FileNotFoundError(f"{shared_dir / SHARED_PACKAGE} has no __init__.py")
    return files


def vendor_shared(app_dir: Path, shared_dir: Path) -> Path:
    """Replace APP/vendor with the shared package's files only; returns the vendor dir."""
    vendor = app_dir / "vendor"
    if vendor.exists():
        shutil.rmtree(vendor)
    vendor.mkdir(parents=True)
    _copy_files(shared_dir, package_files(shared_dir), vendor)
    return vendor


def vendor_registry(types_dir: Path, vendor: Path) -> None:
    """Copy the registry (`types/`) into `vendor/sluice_types/` (replacing any copy there)."""
    if not types_dir.is_dir():
        raise FileNotFoundError(f"{types_dir}: no record-type registry to ship")
    dest = vendor / SHIPPED_REGISTRY
    if dest.exists():
        shutil.rmtree(dest)
    _copy_files(types_dir, source_files(types_dir), dest)


def _copy_files(source: Path, files: Iterable[Path], dest: Path) -> None:
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, dest / rel)


# ---------------------------------------------------------------------------- requirements


@dataclass(frozen=True)
class Requirement:
    """One entry of a hashed requirements file: its name and its lines (hashes included)."""

    name: str
    text: str


def parse_requirements(text: str) -> list[Requirement]:
    """The entries of a pip-compile/uv style file (`name==v \\` + `--hash=` lines)."""
    found: list[Requirement] = []
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace() and lines:  # a continuation (hash) line
            lines.append(line)
            continue
        if lines:
            found.append(_requirement(lines))
        lines = [line]
    if lines:
        found.append(_requirement(lines))
    return found


def _requirement(lines: list[str]) -> Requirement:
    head = lines[0].strip()
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", head)
    if match is None or head.startswith("-"):
        raise ValueError(f"not a requirement this deploy can filter: {head!r}")
    return Requirement(canonical(match.group(0)), "\n".join(lines))


def lock_dependents(lock_text: str) -> dict[str, set[str]]:
    """{package: the packages it is there for} from a lock's `# via` notes; a package an app
    asks for itself (`-r app/requirements.in`) gets the mark `-r`."""
    via: dict[str, set[str]] = {}
    current: str | None = None
    in_via = False
    for line in lock_text.splitlines():
        stripped = line.strip()
        if line and not line[0].isspace() and not stripped.startswith("#"):
            current = _requirement([line]).name
            via[current] = set()
            in_via = False
            continue
        if current is None or not stripped.startswith("#"):
            continue
        note = stripped.lstrip("#").strip()
        if note.startswith("via"):
            rest = note[3:].strip()
            in_via = True
            if rest:
                via[current].add(_via_entry(rest))
        elif in_via and note:
            via[current].add(_via_entry(note))
    return via


def _via_entry(note: str) -> str:
    return "-r" if note.startswith("-r") else canonical(note.split()[0])


def runtime_provided(lock_text: str) -> frozenset[str]:
    """The SDK and what only it needs: packages all of whose dependents the runtime provides.

    A package some shipped package needs too (urllib3 for requests, say) stays shipped."""
    via = lock_dependents(lock_text)
    dropped = set(RUNTIME_SDK)
    changed = True
    while changed:
        changed = False
        for name, users in via.items():
            if name not in dropped and users and users <= dropped:
                dropped.add(name)
                changed = True
    return frozenset(dropped)


@dataclass(frozen=True)
class LeanRequirements:
    """An app's requirements split: what its zip carries, what the runtime provides."""

    shipped: tuple[Requirement, ...]
    dropped: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(r.text + "\n" for r in self.shipped)


def lean_requirements(requirements_text: str, lock_text: str) -> LeanRequirements:
    provided = runtime_provided(lock_text)
    entries = parse_requirements(requirements_text)
    shipped = tuple(r for r in entries if r.name not in provided)
    dropped = tuple(sorted(r.name for r in entries if r.name in provided))
    for entry in shipped:
        if "--hash=" not in entry.text:
            raise ValueError(f"{entry.name}: no --hash in requirements.txt (run nox -s lock)")
    return LeanRequirements(shipped, dropped)


# ---------------------------------------------------------------------------- installing


def python_tag() -> str:
    """The Lambda runtime's Python, which Chalice takes from the Python running it."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass
class DependencyCache:
    """Installed lean requirement sets, one folder per (list, platform, Python), kept
    between deploys and runs and shared by every app, stage and build root."""

    root: Path
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def key(self, lean: LeanRequirements) -> str:
        digest = hashlib.sha256(lean.text.encode())
        digest.update(f"\0{LAMBDA_PLATFORM}\0{python_tag()}".encode())
        return digest.hexdigest()[:24]

    def install(self, lean: LeanRequirements) -> tuple[Path, bool]:
        """The folder holding `lean`'s packages, installed now if not yet; (dir, installed)."""
        key = self.key(lean)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            target = self.root / key
            if (target / DEPS_MARKER).is_file():
                return target, False
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.root))
            try:
                if lean.shipped:
                    _pip_install(lean.text, staging)
                (staging / DEPS_MARKER).write_text(lean.text)
                shutil.rmtree(target, ignore_errors=True)
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return target, True


class DependencyError(RuntimeError):
    """pip could not install an app's requirements for Lambda; the message has its output."""


def _pip_install(requirements: str, target: Path) -> None:
    listing = target / ".requirements.txt"
    listing.write_text(requirements)
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--require-hashes", "--no-deps", "--no-compile",
        "--only-binary=:all:", "--platform", LAMBDA_PLATFORM,
        "--implementation", "cp", "--python-version", python_tag(),
        "--target", str(target), "-r", str(listing),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    listing.unlink()
    if done.returncode != 0:
        raise DependencyError(
            "pip could not install the app's requirements for Lambda "
            f"({LAMBDA_PLATFORM}, Python {python_tag()}):\n{done.stderr.strip()}"
        )
    shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts: not for a Lambda


REQUIREMENTS_NOTE = (
    "# Installed into vendor/ by `sluice deploy` (tools/sluice_tools/deploy/vendor.py): the\n"
    "# app's requirements.txt less what the Lambda runtime provides ({dropped}),\n"
    "# hash-checked. Nothing is left for Chalice to install.\n"
)


@dataclass(frozen=True)
class VendorResult:
    """What one app's `vendor/` was made of."""

    deps_dir: Path
    shipped: tuple[str, ...]
    dropped: tuple[str, ...]
    installed: bool  # pip ran for it in this deploy (else the cache had it)


def vendor_app(
    app_dir: Path,
    shared_dir: Path,
    lock_text: str,
    cache: DependencyCache,
    shared_files: list[Path] | None = None,
) -> VendorResult:
    """Make `app_dir/vendor` (a rendered copy): the shared package and the lean requirements.

    `shared_files`: `package_files(shared_dir)` when the caller lists it once for all apps.
    """
    requirements = app_dir / "requirements.txt"
    text = requirements.read_text() if requirements.is_file() else ""
    lean = lean_requirements(text, lock_text)
    deps_dir, installed = cache.install(lean)
    vendor = app_dir / "vendor"
    if vendor.exists():
        shutil.rmtree(vendor)
    shutil.copytree(deps_dir, vendor, ignore=shutil.ignore_patterns(DEPS_MARKER))
    if (vendor / SHARED_PACKAGE).exists():
        raise DependencyError(f"a requirement of {app_dir.name} installs a {SHARED_PACKAGE}/")
    files = package_files(shared_dir) if shared_files is None else shared_files
    _copy_files(shared_dir, files, vendor)
    vendor_registry(shared_dir.parent / REGISTRY_DIR, vendor)
    note = REQUIREMENTS_NOTE.format(dropped=", ".join(lean.dropped) or "nothing")
    requirements.write_text(note)
    return VendorResult(deps_dir, tuple(r.name for r in lean.shipped), lean.dropped, installed)


def lock_text(root: Path) -> str:
    """The lock every app's requirements.txt comes from ('' when the repo has none)."""
    lock = root / "requirements" / "lambda.lock"
    return lock.read_text() if lock.is_file() else ""


def dependency_cache(root: Path) -> DependencyCache:
    """The repository's cache of installed requirement sets (`.sluice/cache/deps`)."""
    return DependencyCache(root / ".sluice" / "cache" / "deps")


def vendor_for_deploy(app_dir: Path, root: Path) -> VendorResult:
    """`vendor_app` with the repository's shared/, lock and dependency cache (one app)."""
    return vendor_app(app_dir, root / "shared", lock_text(root), dependency_cache(root))
