"""The emulator's state kept between `sluice local up`s, and the hash that lets `up` skip a deploy.

moto holds every resource in this process, in one `BackendDict` per service (account →
region → backend object). `save` pickles those backends after the runtime stopped (no
request in flight) into one file, written to a temporary name and renamed: a kill during
the save leaves the previous state or none, never half a file. `load` puts them back into
the (empty) dicts of a new emulator before anything is deployed or served. moto's own
objects pickle: S3 keys drop their lock and spooled file in `__getstate__` and rebuild them,
Lambda functions drop their Docker client. A few of moto's members do not pickle as they
are; `_Pickler` saves them as what rebuilds them (docs/decisions.md, 2026-12-04).
"""

from __future__ import annotations

import base64
import collections
import copyreg
import hashlib
import io
import os
import pickle
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "moto-state.pickle"
FORMAT = 1
BLOB_MIN = 256 * 1024  # bytes and strings at least this long are kept as blob files
# What is hashed of the checkout: everything `sluice deploy` reads to render and deploy
# (apps, shared/, infra templates, the deploy tooling), not the build copies it makes.
SOURCE_DIRS = ("consumers", "shared", "infra", "requirements", "types", "tools/sluice_tools/deploy")
SKIPPED_PARTS = frozenset(
    {
        "__pycache__",
        "build",  # setuptools' build dir (an old deploy built a wheel of shared/)
        "dist",
        "deployed",
        "deployments",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "vendor",
        "tests",
    }
)


class StateError(Exception):
    """A saved state that cannot be read (damaged, or from another moto or format)."""


@dataclass
class Saved:
    """What `load` found: the deploy hash the state was made from and the moto version."""

    source_hash: str
    moto_version: str
    services: list[str]


def _moto_version() -> str:
    import moto

    return str(moto.__version__)


def _backend_dicts() -> list[Any]:
    from moto.core.base_backend import BackendDict

    return list(BackendDict._instances)  # type: ignore[misc]


def _new(kind: Callable[[], Any]) -> Any:
    return kind()


def _weak_values(items: dict[Any, Any]) -> weakref.WeakValueDictionary[Any, Any]:
    return weakref.WeakValueDictionary(items)


def _default_factory(factory: Any) -> Any:
    """A defaultdict's factory that pickles: moto's `lambda: {}` becomes `dict`."""
    try:
        pickle.dumps(factory)
    except Exception:
        made = factory()
        if isinstance(made, (dict, list, set)) and not made:
            return type(made)
        raise
    return factory


def _private_key(pem: bytes) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(pem, password=None)


def _reduce_private_key(key: Any) -> tuple[Any, ...]:
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return _private_key, (pem,)


def _dispatch_table() -> dict[type, Callable[[Any], Any]]:
    """How moto's members that do not pickle are saved: locks and conditions (SQS queues)
    as new ones, weak-value dicts (Lambda's ARN index) with their values, defaultdicts
    whose factory is a lambda with a named factory, KMS keys as PEM."""
    table: dict[type, Callable[[Any], Any]] = dict(copyreg.dispatch_table)
    table[type(threading.Lock())] = lambda _lock: (_new, (threading.Lock,))
    table[type(threading.RLock())] = lambda _lock: (_new, (threading.RLock,))
    table[threading.Condition] = lambda _cond: (_new, (threading.Condition,))
    table[weakref.WeakValueDictionary] = lambda d: (_weak_values, (dict(d.items()),))
    table[collections.defaultdict] = lambda d: (
        collections.defaultdict,
        (_default_factory(d.default_factory),),
        None,
        None,
        iter(d.items()),
    )
    try:
        from cryptography.hazmat.bindings._rust import openssl as rust

        for module, name in (("rsa", "RSAPrivateKey"), ("ec", "ECPrivateKey")):
            table[getattr(getattr(rust, module), name)] = _reduce_private_key
    except (ImportError, AttributeError):  # another cryptography: such keys fail to save
        pass
    return table


class _Pickler(pickle.Pickler):
    """moto's backends with large bytes and strings (functions' zips, twice each: bytes
    and base64) kept as blob files named by their digest: written once however many
    functions share a zip and however often the state is saved."""

    def __init__(self, out: io.BytesIO, blobs: Path | None) -> None:
        super().__init__(out, protocol=pickle.HIGHEST_PROTOCOL)
        self.dispatch_table = _dispatch_table()
        self.blobs = blobs
        self.used: set[str] = set()

    def persistent_id(self, obj: Any) -> Any:
        if self.blobs is None or type(obj) not in (bytes, str) or len(obj) < BLOB_MIN:
            return None
        kind, data = _blob_form(obj)
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self.used:
            self.used.add(digest)
            path = self.blobs / digest
            if not path.exists():
                _write_atomic(path, data)
        return (kind, digest)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: io.BytesIO, blobs: Path) -> None:
        super().__init__(data)
        self.blobs = blobs
        self.read: dict[tuple[str, str], Any] = {}

    def persistent_load(self, pid: Any) -> Any:
        kind, digest = pid
        found = self.read.get((kind, digest))
        if found is None:
            data = (self.blobs / digest).read_bytes()
            if hashlib.sha256(data).hexdigest() != digest:
                raise StateError(f"blob {digest} is damaged")
            found = self.read[(kind, digest)] = _from_blob(kind, data)
        return found


def _blob_form(obj: bytes | str) -> tuple[str, bytes]:
    """How a value is kept as a blob: bytes as they are, a base64 string (a zip as Lambda's
    API received it) as the bytes it encodes, so that it shares the zip's blob."""
    if isinstance(obj, bytes):
        return "bytes", obj
    try:
        decoded = base64.b64decode(obj, validate=True)
    except ValueError:
        return "str", obj.encode()
    if base64.b64encode(decoded).decode() == obj:
        return "b64", decoded
    return "str", obj.encode()


def _from_blob(kind: str, data: bytes) -> Any:
    if kind == "b64":
        return base64.b64encode(data).decode()
    return data.decode() if kind == "str" else data


def dumps(document: Any, blobs: Path | None = None) -> tuple[bytes, set[str]]:
    """`document` pickled (large values into `blobs`, if given); the blobs it refers to."""
    out = io.BytesIO()
    pickler = _Pickler(out, blobs)
    pickler.dump(document)
    return out.getvalue(), pickler.used


def _write_atomic(path: Path, data: bytes) -> None:
    """Written under a temporary name and renamed: `path` is whole or absent, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with partial.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def save(path: Path, source_hash: str) -> int:
    """Pickle every backend moto holds to `path` (atomically); the bytes written."""
    from moto.core.base_backend import backend_lock

    with backend_lock:
        services: dict[str, dict[str, dict[str, Any]]] = {}
        for backends in _backend_dicts():
            accounts = {
                account: dict(regions.items()) for account, regions in backends.items() if regions
            }
            if accounts:
                services[backends.service_name] = accounts
        document = {
            "format": FORMAT,
            "moto": _moto_version(),
            "source_hash": source_hash,
            "services": services,
        }
        blobs = _blob_dir(path)
        blobs.mkdir(parents=True, exist_ok=True)
        data, used = dumps(document, blobs)
    _write_atomic(path, data)
    # Blobs of earlier states go only now: until the rename the old state needed them.
    for blob in blobs.iterdir():
        if blob.name not in used:
            blob.unlink(missing_ok=True)
    return len(data) + sum((blobs / digest).stat().st_size for digest in used)


def _blob_dir(path: Path) -> Path:
    return path.with_name(f"{path.name}.blobs")


def load(path: Path) -> Saved | None:
    """Put the backends saved at `path` back into moto; None if there is no saved state.

    Raises StateError for a state that cannot be read; moto is then left as it was.
    """
    if not path.exists():
        return None
    try:  # our own file, under .sluice/
        document = _Unpickler(io.BytesIO(path.read_bytes()), _blob_dir(path)).load()
    except StateError:
        raise
    except Exception as exc:
        raise StateError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StateError(f"{path} is not a state this version of sluice wrote")
    if document.get("moto") != _moto_version():
        raise StateError(
            f"{path} was saved by moto {document.get('moto')}, this is moto {_moto_version()}"
        )
    from moto.backends import get_backend
    from moto.core.base_backend import backend_lock

    services: dict[str, dict[str, dict[str, Any]]] = document["services"]
    with backend_lock:
        for service, accounts in services.items():
            backends: Any = get_backend(service)  # type: ignore[call-overload]
            for account, regions in accounts.items():
                for region, backend in regions.items():
                    backends[account][region] = backend
    return Saved(
        source_hash=str(document.get("source_hash") or ""),
        moto_version=str(document["moto"]),
        services=sorted(services),
    )


def source_hash(root: Path, extra: Iterable[str] = ()) -> str:
    """A digest of what `sluice deploy` would deploy from `root`, plus `extra` (stage, prefix,
    region ...): the source files, never the build copies, so the way a deploy renders an app
    can change without this changing."""
    digest = hashlib.sha256()
    for item in extra:
        digest.update(f"{item}\0".encode())
    from sluice_tools.stages import PIPELINE_STAGES as STAGE_APPS

    for top in (*STAGE_APPS, *SOURCE_DIRS):
        base = root / top
        if not base.exists():
            continue
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(root)
            if any(p in SKIPPED_PARTS or p.endswith(".egg-info") for p in rel.parts):
                continue
            if not path.is_file():
                continue
            if path.suffix in {".pyc", ".log"}:
                continue
            digest.update(f"{rel.as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def disk_usage(path: Path) -> int:
    """Bytes of the files under `path` (0 if it does not exist)."""
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# ---------------------------------------------------------------- the deployed stage alone

DEPLOYED_FILE = "deployed-state.pickle"  # moto right after a verified deploy (`local run`)
DEPLOYED_HASH = "deployed-state.hash"  # its source hash, read before the state is loaded


def save_deployed(state_dir: Path, source: str) -> int:
    """Keep moto's state as the deploy left it (nothing uploaded yet) for the next `run` of
    the same source; the hash file is written last, so a half-saved state is never used."""
    (state_dir / DEPLOYED_HASH).unlink(missing_ok=True)
    size = save(state_dir / DEPLOYED_FILE, source)
    (state_dir / DEPLOYED_HASH).write_text(source)
    return size


def load_deployed(state_dir: Path, source: str) -> Saved | None:
    """Put back the state `save_deployed` kept for this same `source`; None (moto untouched)
    when there is none or it was deployed from other source. Raises StateError."""
    marker = state_dir / DEPLOYED_HASH
    if not marker.is_file() or marker.read_text().strip() != source:
        return None
    saved = load(state_dir / DEPLOYED_FILE)
    if saved is not None and saved.source_hash != source:
        raise StateError(f"{state_dir / DEPLOYED_FILE} holds another deploy than its hash says")
    return saved
