"""Tracing behind a small `Tracer` port: a no-op, and X-Ray (end of support Feb 2027).

aws_xray_sdk is imported only when X-Ray is actually used. A tracing failure is logged and
swallowed: it must never fail the handler. An OpenTelemetry tracer plugs in via `set_tracer`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, runtime_checkable

TRACE_HEADER_ENV = "_X_AMZN_TRACE_ID"
TRACING_ENV = "SLUICE_TRACING"
_OFF = frozenset({"off", "false", "0", "no"})

log = logging.getLogger(__name__)


@runtime_checkable
class Tracer(Protocol):
    """What the pipeline needs from a tracer: one span per chunk, and traced AWS clients."""

    def chunk_span(
        self, chunk_id: str, correlation_id: str | None = None, record_type: str | None = None
    ) -> AbstractContextManager[None]:
        """A span named "chunk" around the processing of one chunk; records and re-raises."""
        ...

    def patch_clients(self) -> None:
        """Trace botocore calls (idempotent)."""
        ...


class NoopTracer:
    """Traces nothing: used outside Lambda, when tracing is off, or without a trace header."""

    @contextmanager
    def chunk_span(
        self, chunk_id: str, correlation_id: str | None = None, record_type: str | None = None
    ) -> Iterator[None]:
        yield

    def patch_clients(self) -> None:
        return None


class XRayTracer:
    """X-Ray subsegments under the segment Lambda creates from `_X_AMZN_TRACE_ID`.

    By default it configures the SDK's global recorder (the one `patch` instruments botocore
    with) on first use: Lambda context (a facade segment rebuilt from the trace header of each
    invocation), every closed subsegment sent at once to AWS_XRAY_DAEMON_ADDRESS, and
    context_missing=IGNORE_ERROR so nothing complains where no segment exists. Pass `recorder`
    to use one you configured yourself.
    """

    def __init__(self, recorder: Any | None = None) -> None:
        self._recorder = recorder
        self._lock = threading.Lock()
        self._failed = False
        self._patched = False

    @contextmanager
    def chunk_span(
        self, chunk_id: str, correlation_id: str | None = None, record_type: str | None = None
    ) -> Iterator[None]:
        recorder = self._get_recorder()
        subsegment = None
        if recorder is not None:
            subsegment = _begin_chunk(recorder, chunk_id, correlation_id, record_type)
        try:
            yield
        except Exception as exc:
            if subsegment is not None:
                _record_exception(recorder, subsegment, exc)
            raise
        finally:
            if subsegment is not None:
                _end_subsegment(recorder)

    def patch_clients(self) -> None:
        with self._lock:
            if self._patched or self._get_recorder() is None:
                return
            try:
                from aws_xray_sdk.core import patch

                patch(["botocore"])
            except Exception:
                log.warning("X-Ray could not patch botocore; AWS calls go untraced", exc_info=True)
            self._patched = True

    def _get_recorder(self) -> Any | None:
        if self._recorder is not None or self._failed:
            return self._recorder
        try:
            self._recorder = _configure_global_recorder()
        except Exception:
            # Only once: a broken SDK turns this tracer into a no-op for the process.
            self._failed = True
            log.warning("X-Ray tracing unavailable; continuing without it", exc_info=True)
        return self._recorder


def _configure_global_recorder() -> Any:
    from aws_xray_sdk.core import xray_recorder
    from aws_xray_sdk.core.lambda_launcher import LambdaContext

    settings: dict[str, Any] = {"context_missing": "IGNORE_ERROR", "streaming_threshold": 0}
    # The SDK picks the Lambda context only if LAMBDA_TASK_ROOT was set when it was imported.
    if not isinstance(xray_recorder.context, LambdaContext):
        settings["context"] = LambdaContext()
    address = os.environ.get("AWS_XRAY_DAEMON_ADDRESS")
    if address:
        settings["daemon_address"] = address
    xray_recorder.configure(**settings)
    return xray_recorder


def _begin_chunk(
    recorder: Any, chunk_id: str, correlation_id: str | None, record_type: str | None
) -> Any | None:
    try:
        subsegment = recorder.begin_subsegment("chunk")
    except Exception:
        log.debug("could not begin the X-Ray chunk subsegment", exc_info=True)
        return None
    if subsegment is None:
        return None
    annotations = {
        "chunk_id": chunk_id,
        "correlation_id": correlation_id,
        "record_type": record_type,
    }
    try:
        for key, value in annotations.items():
            if value is not None:
                subsegment.put_annotation(key, value)
    except Exception:
        # The subsegment is open in the recorder's context: return it so that it is ended.
        log.debug("could not annotate the X-Ray chunk subsegment", exc_info=True)
    return subsegment


def _end_subsegment(recorder: Any) -> None:
    try:
        recorder.end_subsegment()
    except Exception:
        log.debug("could not end the X-Ray chunk subsegment", exc_info=True)


def _record_exception(recorder: Any, subsegment: Any, exc: Exception) -> None:
    # Called inside the `except` block: the stack trace comes from sys.exc_info().
    try:
        from aws_xray_sdk.core.utils import stacktrace

        stack = stacktrace.get_stacktrace(limit=recorder.max_trace_back)
        subsegment.add_exception(exc, stack)
    except Exception:
        log.debug("could not record the exception on the X-Ray subsegment", exc_info=True)


_lock = threading.Lock()
_injected: Tracer | None = None
_noop = NoopTracer()
_xray: XRayTracer | None = None


def tracing_enabled() -> bool:
    """X-Ray applies when Lambda passed a trace header and SLUICE_TRACING is not "off"."""
    if not os.environ.get(TRACE_HEADER_ENV):
        return False
    return os.environ.get(TRACING_ENV, "").strip().lower() not in _OFF


def get_tracer() -> Tracer:
    """The tracer given to `set_tracer`, else X-Ray if `tracing_enabled()`, else the no-op.

    Decided on every call (two environment lookups), so a change of environment is honoured.
    """
    global _xray
    if _injected is not None:
        return _injected
    if not tracing_enabled():
        return _noop
    with _lock:
        if _xray is None:
            _xray = XRayTracer()
        return _xray


def set_tracer(tracer: Tracer | None) -> None:
    """Use `tracer` (for instance an OpenTelemetry one) everywhere; None restores the default."""
    global _injected
    _injected = tracer
