"""Tracing behind a small `Tracer` port: OpenTelemetry (the default), X-Ray, or nothing.

`SLUICE_TRACING` chooses: unset (or "otel") → OpenTelemetry (`sluice.observability.otel`:
spans per invocation and chunk, W3C `traceparent` carried in message attributes, exported to
X-Ray's OTLP endpoint on AWS or to the JSON-lines file `SLUICE_TRACE_FILE` names); "xray" →
the AWS X-Ray SDK (maintenance mode since 2026-02-25, end of support Feb 2027); "off" →
nothing. OpenTelemetry applies where Lambda passed a trace header (`_X_AMZN_TRACE_ID`) or a
trace file is set; X-Ray where Lambda passed a trace header. Elsewhere the no-op.

Neither OpenTelemetry nor aws_xray_sdk is imported until a tracer is used. A tracing failure
is logged and swallowed: it must never fail the handler. Another tracer plugs in via
`set_tracer`; `invocation_span`, `inject` and `record_error` are optional for it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol, TypeVar, runtime_checkable

TRACE_HEADER_ENV = "_X_AMZN_TRACE_ID"
TRACING_ENV = "SLUICE_TRACING"
TRACE_FILE_ENV = "SLUICE_TRACE_FILE"
_OFF = frozenset({"off", "false", "0", "no"})
_XRAY = "xray"
M = TypeVar("M", bound=MutableMapping[str, Any])

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
_otel: dict[str, Tracer] = {}  # by trace file ("" for the OTLP endpoint)


def _mode() -> str:
    return os.environ.get(TRACING_ENV, "").strip().lower()


def tracing_enabled() -> bool:
    """Whether a tracer applies: not "off", and a trace header (or, for OpenTelemetry, a
    trace file) is there."""
    mode = _mode()
    if mode in _OFF:
        return False
    if os.environ.get(TRACE_HEADER_ENV):
        return True
    return mode != _XRAY and bool(os.environ.get(TRACE_FILE_ENV))


def get_tracer() -> Tracer:
    """The tracer given to `set_tracer`, else the one `SLUICE_TRACING` chooses, else the no-op.

    Decided on every call (a few environment lookups), so a change of environment is honoured.
    """
    global _xray
    if _injected is not None:
        return _injected
    if not tracing_enabled():
        return _noop
    with _lock:
        if _mode() == _XRAY:
            if _xray is None:
                _xray = XRayTracer()
            return _xray
        key = os.environ.get(TRACE_FILE_ENV, "")
        tracer = _otel.get(key)
        if tracer is None:
            tracer = _otel[key] = _new_otel_tracer()
        return tracer


def _new_otel_tracer() -> Tracer:
    try:
        from sluice.observability.otel import OTelTracer
    except Exception:
        # Only once per process and trace file: a missing or broken SDK traces nothing.
        log.warning("OpenTelemetry unavailable; continuing without tracing", exc_info=True)
        return _noop
    return OTelTracer()


def set_tracer(tracer: Tracer | None) -> None:
    """Use `tracer` (for instance an OpenTelemetry one) everywhere; None restores the default."""
    global _injected
    _injected = tracer


def invocation_span(
    function_name: str | None = None, request_id: str | None = None
) -> AbstractContextManager[None]:
    """The current tracer's span around one handler call (which then exports the
    invocation's spans), or nothing for a tracer without one. Never raises on its own."""
    try:
        make = getattr(get_tracer(), "invocation_span", None)
        if make is not None:
            span: AbstractContextManager[None] = make(function_name, request_id)
            return span
    except Exception:
        log.warning("tracing setup failed; continuing untraced", exc_info=True)
    return nullcontext()


def inject_trace_context(attributes: M) -> M:
    """Add the current trace context (`traceparent`) to a message's attributes, in place, if
    the tracer propagates one and SQS/SNS's ten attributes leave room; returns `attributes`."""
    _call_optional("inject", "could not add the trace context to a message", attributes)
    return attributes


def record_error(error: BaseException) -> None:
    """Record an error the code caught itself (a failed chunk) on the current span."""
    _call_optional("record_error", "could not record the error on the span", error)


def _call_optional(method: str, failed: str, *args: Any) -> None:
    """The current tracer's `method(*args)`, if it has that method; a failure is logged
    (`failed`, at debug level) and swallowed: tracing never fails the code it traces."""
    try:
        call = getattr(get_tracer(), method, None)
        if call is not None:
            call(*args)
    except Exception:
        log.debug(failed, exc_info=True)


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "inject_trace_context",
]
