"""Settings read from environment variables on first use, and the resource naming convention.

Nothing here runs at import. A missing or invalid variable is a `ConfigError` naming it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from sluice.errors import ConfigError

_STAGE_RE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# SNS allows 256 KiB per message *including* message attributes; leave room for those.
SNS_MAX_MESSAGE_BYTES = 256 * 1024
ATTRIBUTE_RESERVE_BYTES = 8 * 1024
DEFAULT_CHUNK_MAX_BYTES = SNS_MAX_MESSAGE_BYTES - ATTRIBUTE_RESERVE_BYTES
# SQS allows 1 MiB. Stages that only write to SQS (ingest, cleanse) may cut chunks this large;
# the router always cuts what it publishes to SNS within DEFAULT_CHUNK_MAX_BYTES.
SQS_MAX_MESSAGE_BYTES = 1024 * 1024
MAX_CHUNK_MAX_BYTES = SQS_MAX_MESSAGE_BYTES - ATTRIBUTE_RESERVE_BYTES
DEFAULT_CHUNK_MAX_RECORDS = 200
# The largest record the pipeline carries at all (by claim check); larger ones are quarantined.
DEFAULT_RECORD_MAX_BYTES = 10 * 1024 * 1024
MAX_RECORD_MAX_BYTES = 256 * 1024 * 1024


def validate_stage(stage: str) -> str:
    """Return `stage` if it can be part of every resource name, else raise `ConfigError`."""
    if not _STAGE_RE.match(stage):
        raise ConfigError(
            f"invalid stage {stage!r}: use 1-16 characters, lower-case letters, digits and '-', "
            "starting with a letter"
        )
    return stage


@dataclass(frozen=True)
class ResourceNames:
    """Every platform resource is named `<prefix>-<stage>-<resource>` (prefix `sluice`).

    The prefix exists because S3 bucket names are global: an account sets
    `SLUICE_RESOURCE_PREFIX` (for instance `sluice-123456789012`) to make them its own.
    """

    stage: str
    prefix: str = "sluice"

    def __post_init__(self) -> None:
        validate_stage(self.stage)
        if not _PREFIX_RE.match(self.prefix):
            raise ConfigError(
                f"invalid SLUICE_RESOURCE_PREFIX {self.prefix!r}: lower-case letters, digits "
                "and '-', at most 30 characters, starting with a letter"
            )

    def name(self, resource: str) -> str:
        return f"{self.prefix}-{self.stage}-{resource}"

    @property
    def landing_bucket(self) -> str:
        return self.name("landing")

    @property
    def quarantine_bucket(self) -> str:
        return self.name("quarantine")

    @property
    def curated_bucket(self) -> str:
        return self.name("curated")

    @property
    def payload_bucket(self) -> str:
        return self.name("payloads")

    @property
    def raw_queue(self) -> str:
        return self.name("raw")

    @property
    def clean_queue(self) -> str:
        return self.name("clean")

    @property
    def ingest_continue_queue(self) -> str:
        return self.name("ingest-continue")

    @staticmethod
    def dlq_of(queue: str) -> str:
        return f"{queue}-dlq"

    @property
    def records_topic(self) -> str:
        return self.name("records")

    @property
    def alerts_topic(self) -> str:
        return self.name("alerts")

    @property
    def idempotency_table(self) -> str:
        return self.name("idempotency")

    @property
    def ledger_table(self) -> str:
        return self.name("ledger")

    @property
    def records_table(self) -> str:
        return self.name("records")

    @property
    def cursor_table(self) -> str:
        return self.name("cursors")

    @property
    def events_bus(self) -> str:
        """The stage's EventBridge bus of pipeline events (`sluice.events`)."""
        return self.name("events")

    def consumer_queue(self, consumer: str) -> str:
        return self.name(f"consumer-{consumer}")

    def async_failure_queue(self, app: str) -> str:
        return self.name(f"{app}-failures")

    def as_dict(self) -> dict[str, str]:
        """Every platform resource name, by role (for tooling and docs)."""
        return {
            "landing_bucket": self.landing_bucket,
            "quarantine_bucket": self.quarantine_bucket,
            "curated_bucket": self.curated_bucket,
            "payload_bucket": self.payload_bucket,
            "raw_queue": self.raw_queue,
            "raw_dlq": self.dlq_of(self.raw_queue),
            "clean_queue": self.clean_queue,
            "clean_dlq": self.dlq_of(self.clean_queue),
            "ingest_continue_queue": self.ingest_continue_queue,
            "records_topic": self.records_topic,
            "alerts_topic": self.alerts_topic,
            "idempotency_table": self.idempotency_table,
            "ledger_table": self.ledger_table,
            "records_table": self.records_table,
            "cursor_table": self.cursor_table,
            "events_bus": self.events_bus,
        }


@dataclass(frozen=True)
class Settings:
    """Typed view of the environment a Sluice function runs with."""

    stage: str
    region: str
    prefix: str = "sluice"
    endpoint_url: str | None = None
    idempotency_enabled: bool = True
    chunk_max_records: int = DEFAULT_CHUNK_MAX_RECORDS
    chunk_max_bytes: int = DEFAULT_CHUNK_MAX_BYTES
    record_max_bytes: int = DEFAULT_RECORD_MAX_BYTES
    extra: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def names(self) -> ResourceNames:
        return ResourceNames(stage=self.stage, prefix=self.prefix)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        stage = validate_stage(_required(env, "SLUICE_STAGE"))
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if not region:
            raise ConfigError("AWS_REGION (or AWS_DEFAULT_REGION) is not set")
        max_bytes = _int(env, "SLUICE_CHUNK_MAX_BYTES", DEFAULT_CHUNK_MAX_BYTES)
        if not 1024 <= max_bytes <= MAX_CHUNK_MAX_BYTES:
            raise ConfigError(
                f"SLUICE_CHUNK_MAX_BYTES={max_bytes} must be between 1024 and "
                f"{MAX_CHUNK_MAX_BYTES} (an SQS message with its attributes)"
            )
        max_records = _int(env, "SLUICE_CHUNK_MAX_RECORDS", DEFAULT_CHUNK_MAX_RECORDS)
        if not 1 <= max_records <= 10_000:
            raise ConfigError(f"SLUICE_CHUNK_MAX_RECORDS={max_records} must be 1..10000")
        record_max = _int(env, "SLUICE_RECORD_MAX_BYTES", DEFAULT_RECORD_MAX_BYTES)
        if not 1024 <= record_max <= MAX_RECORD_MAX_BYTES:
            raise ConfigError(
                f"SLUICE_RECORD_MAX_BYTES={record_max} must be between 1024 and "
                f"{MAX_RECORD_MAX_BYTES}"
            )
        return cls(
            stage=stage,
            region=region,
            prefix=env.get("SLUICE_RESOURCE_PREFIX") or "sluice",
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            idempotency_enabled=env_bool(env, "SLUICE_IDEMPOTENCY", True),
            chunk_max_records=max_records,
            chunk_max_bytes=max_bytes,
            record_max_bytes=record_max,
            extra={k: v for k, v in env.items() if k.startswith("SLUICE_")},
        )

    def require(self, variable: str) -> str:
        """A stage-specific `SLUICE_*` variable that this function cannot run without."""
        return _required(self.extra, variable)


def _required(env: Mapping[str, str], variable: str) -> str:
    value = env.get(variable)
    if not value:
        raise ConfigError(f"environment variable {variable} is not set")
    return value


def _int(env: Mapping[str, str], variable: str, default: int) -> int:
    raw = env.get(variable)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {variable}={raw!r} is not an integer") from None


def env_bool(env: Mapping[str, str], variable: str, default: bool) -> bool:
    """A true/false setting (also 1/0, yes/no, on/off); `default` when unset or empty.

    Raises `ConfigError` for any other value.
    """
    raw = env.get(variable)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"environment variable {variable}={raw!r} is not a boolean (true/false)")


_lock = threading.Lock()
_settings: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, read from the environment the first time they are needed."""
    global _settings
    if _settings is None:
        with _lock:
            if _settings is None:
                _settings = Settings.from_env()
    return _settings


def reset_settings() -> None:
    """Forget the cached settings so the next `get_settings()` reads the environment again."""
    global _settings
    with _lock:
        _settings = None


def names(env: Mapping[str, str] | None = None) -> ResourceNames:
    """Resource names for the current stage, from `SLUICE_STAGE` and `SLUICE_RESOURCE_PREFIX`.

    Needs nothing else, so Chalice decorators can call it at import (`chalice deploy` imports
    `app.py` on the deploying machine, where the deploy tooling sets `SLUICE_STAGE`).
    """
    env = os.environ if env is None else env
    return ResourceNames(
        stage=_required(env, "SLUICE_STAGE"), prefix=env.get("SLUICE_RESOURCE_PREFIX") or "sluice"
    )


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "DEFAULT_CHUNK_MAX_BYTES",
    "SNS_MAX_MESSAGE_BYTES",
    "ResourceNames",
    "Settings",
    "env_bool",
    "get_settings",
    "names",
]
