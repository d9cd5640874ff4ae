"""JSON log lines on stdout, and the per-invocation context every line carries.

Owns the root logger's one handler and a contextvars store (`bind`, `log_context`). Reads the
environment when configuring or formatting, never at import.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from sluice.errors import ConfigError

TRACE_HEADER_ENV = "_X_AMZN_TRACE_ID"

# Keys the formatter writes itself; binding one would silently shadow it.
_RESERVED_KEYS = frozenset(
    {"timestamp", "level", "message", "logger", "service", "stage", "exc_info", "stack_info"}
)
_EMPTY: Mapping[str, object] = MappingProxyType({})
_context: ContextVar[Mapping[str, object]] = ContextVar("sluice_log_context", default=_EMPTY)

_lock = threading.Lock()
_handler: _StdoutHandler | None = None


def bind(**fields: object) -> None:
    """Add `fields` to every later line in this context; a value of None removes the field.

    Usual keys: function_name, request_id, cold_start, correlation_id, chunk_id, record_id,
    duration_ms. Any other key is logged as well.
    """
    _context.set(_merged(fields))


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Bind `fields` (None removes one) for the block, then restore exactly what was there."""
    token = _context.set(_merged(fields))
    try:
        yield
    finally:
        _context.reset(token)


def get_context() -> Mapping[str, object]:
    """The fields bound in the current context (read-only)."""
    return MappingProxyType(dict(_context.get()))


def get_logger(name: str) -> logging.Logger:
    """A standard logger; its lines go through the handler `configure_logging` installs."""
    return logging.getLogger(name)


def configure_logging(service: str, level: str | None = None) -> None:
    """Make the root logger write one JSON object per line to stdout. Safe to call again.

    `level` defaults to env LOG_LEVEL, then INFO; `stage` comes from env SLUICE_STAGE, read now.
    A second call replaces service, stage and level and keeps the single handler.
    """
    resolved = _resolve_level(level)
    formatter = SluiceJsonFormatter(service=service, stage=os.environ.get("SLUICE_STAGE") or None)
    root = logging.getLogger()
    global _handler
    with _lock:
        if _handler is None or _handler not in root.handlers:
            if os.environ.get("LAMBDA_TASK_ROOT"):
                # The Lambda runtime puts its own text handler on the root logger; keeping
                # it would write every line twice, once as text and once as JSON.
                for existing in list(root.handlers):
                    root.removeHandler(existing)
            _handler = _StdoutHandler()
            root.addHandler(_handler)
        _handler.setFormatter(formatter)
        root.setLevel(resolved)


def trace_id_from_header(header: str | None) -> str | None:
    """The `Root=` part of an X-Ray trace header such as `Root=1-...;Parent=...;Sampled=1`."""
    if not header:
        return None
    return _parse_root(header)


class SluiceJsonFormatter(JsonFormatter):
    """Orders the fixed fields first, then the bound context, then `extra=` fields.

    Fields whose value is unknown (None) are left out rather than written as null.
    """

    def __init__(self, *, service: str, stage: str | None) -> None:
        super().__init__(json_ensure_ascii=False)
        self._static = {k: v for k, v in (("service", service), ("stage", stage)) if v}

    def add_fields(
        self,
        log_data: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        created = datetime.fromtimestamp(record.created, tz=UTC)
        log_data["timestamp"] = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        log_data["level"] = record.levelname
        log_data["message"] = record.message
        log_data["logger"] = record.name
        log_data.update(self._static)
        log_data.update(_context.get())
        trace_id = trace_id_from_header(os.environ.get(TRACE_HEADER_ENV))
        if trace_id:
            log_data["xray_trace_id"] = trace_id
        # Adds `extra=` fields and exc_info; the message is already in place.
        super().add_fields(log_data, record, message_dict)
        for key in [k for k, v in log_data.items() if v is None]:
            del log_data[key]


class _StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stdout` is at emit time, so a replaced stdout still gets lines."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def _merged(fields: Mapping[str, object]) -> Mapping[str, object]:
    if not _RESERVED_KEYS.isdisjoint(fields):
        reserved = _RESERVED_KEYS.intersection(fields)
        raise ValueError(f"cannot bind reserved log field(s): {', '.join(sorted(reserved))}")
    current = _context.get()  # copying the proxy's dict: a tenth of dict() over a Mapping
    merged = current.copy() if isinstance(current, MappingProxyType) else dict(current)
    for key, value in fields.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return MappingProxyType(merged)


def _resolve_level(level: str | None) -> int:
    if level is not None:
        number = logging.getLevelName(level.upper())
        if not isinstance(number, int):
            raise ValueError(f"unknown log level {level!r}")
        return number
    from_env = os.environ.get("LOG_LEVEL") or "INFO"
    number = logging.getLevelName(from_env.upper())
    if not isinstance(number, int):
        raise ConfigError(f"invalid LOG_LEVEL {from_env!r}: use DEBUG, INFO, WARNING or ERROR")
    return number


@lru_cache(maxsize=16)
def _parse_root(header: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "Root" and value:
            return value
    return None
