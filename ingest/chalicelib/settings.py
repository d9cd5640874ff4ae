"""Ingest's own settings (`SLUICE_INGEST_*`), read from the environment on first use.

The accepted record types are the registry's (`sluice.registry`, shipped with the app):
an object under `incoming/<type>/` of any registered type is read, no setting repeats them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sluice.config import Settings, env_bool, get_settings
from sluice.errors import ConfigError
from sluice.registry import Registry, load_registry

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class IngestSettings:
    """What ingest accepts and how hard it works before handing off to a follow-up."""

    types: frozenset[str]
    # Decompression-bomb guards: total decompressed bytes, and decompressed/compressed ratio
    # (the ratio is only enforced past `ratio_grace_bytes`, so small repetitive files pass).
    max_decompressed_bytes: int = 5 * GIB
    max_ratio: int = 200
    ratio_grace_bytes: int = 64 * MIB
    # Hand off to a follow-up invocation when less than this is left of the Lambda's time.
    safety_margin_ms: int = 30_000
    read_block_bytes: int = MIB
    # Scheduled pulls.
    pull_timeout_s: float = 10.0  # per socket operation
    pull_source_deadline_s: float = 60.0  # the whole request of one source
    pull_max_bytes: int = 64 * MIB
    # Plain http, to loopback addresses only: local runs against a test server.
    pull_allow_http_loopback: bool = False

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, registry: Registry | None = None
    ) -> IngestSettings:
        """Settings from `env` (default: the process's), types from `registry` (default:
        the one shipped with the app)."""
        env = os.environ if env is None else env
        found = load_registry() if registry is None else registry
        types = frozenset(found.names())
        if not types:
            raise ConfigError(f"the record-type registry {found.root} holds no type")
        return cls(
            types=types,
            max_decompressed_bytes=_int(env, "SLUICE_INGEST_MAX_DECOMPRESSED_BYTES", 5 * GIB),
            max_ratio=_int(env, "SLUICE_INGEST_MAX_RATIO", 200),
            safety_margin_ms=_int(env, "SLUICE_INGEST_SAFETY_MARGIN_MS", 30_000),
            read_block_bytes=_int(env, "SLUICE_INGEST_READ_BLOCK_BYTES", MIB),
            pull_timeout_s=float(_int(env, "SLUICE_INGEST_PULL_TIMEOUT_S", 10)),
            pull_source_deadline_s=float(_int(env, "SLUICE_INGEST_PULL_DEADLINE_S", 60)),
            pull_max_bytes=_int(env, "SLUICE_INGEST_PULL_MAX_BYTES", 64 * MIB),
            pull_allow_http_loopback=env_bool(env, "SLUICE_INGEST_PULL_ALLOW_HTTP_LOOPBACK", False),
        )


def _int(env: Mapping[str, str], variable: str, default: int) -> int:
    raw = env.get(variable)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {variable}={raw!r} is not an integer") from None
    if value <= 0:
        raise ConfigError(f"environment variable {variable}={value} must be positive")
    return value


def load() -> tuple[Settings, IngestSettings]:
    """The shared settings and ingest's own, both from the environment."""
    return get_settings(), IngestSettings.from_env()
