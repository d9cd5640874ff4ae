"""The OpenTelemetry backend of the `Tracer` port: spans per invocation and per chunk.

Imported only when tracing is on (`sluice.observability.tracing.get_tracer`), never at an
app's import: the OpenTelemetry SDK costs tens of milliseconds to import.

Spans
- "invocation" (kind SERVER), around each handler call (the Chalice middleware). Its parent
  is the segment Lambda made for the invocation (`_X_AMZN_TRACE_ID`: Root and Parent become
  the W3C trace and parent span ids, Sampled the sampled flag), so it nests under X-Ray's
  Lambda segment; without that header it starts a trace.
- "chunk" (kind CONSUMER), around each chunk a stage handles. If the message carried a W3C
  `traceparent` attribute (see `inject`), the span continues that trace (one landed object
  is one trace across ingest, cleanse, router and the consumers) and links to the
  invocation span; without one, or with a malformed one, it is the invocation span's child.
- Attributes: `sluice.chunk_id`, `sluice.correlation_id`, `sluice.record_type`,
  `faas.name` (the function), `faas.invocation_id` (the request id). An exception leaving a
  span is recorded on it (an "exception" event, `error.type`, `error.message`) and sets its
  status to ERROR.

Propagation: `inject(attributes)` adds `traceparent` (`00-<trace id>-<span id>-<flags>`) to a
message's SQS/SNS attributes, unless it would be the 11th (SQS and SNS raw delivery take
ten; the chunk then starts a new trace downstream rather than fail).

Export: ended spans are kept in memory and exported once, when the invocation span ends
(Lambda freezes the process between invocations, so nothing may be left for later), in one
request bounded by the exporter's timeout. A failed export is logged (a warning the first
time, then at debug level) and the spans are dropped: tracing never fails a handler.
- `SLUICE_TRACE_FILE` set: `JsonLinesExporter` appends the spans to that file (the local
  runtime sets it for its workers). One JSON object per line, per span:
  `{"name": str, "trace_id": 32 hex, "span_id": 16 hex, "parent_span_id": 16 hex | null,
  "start": epoch seconds (float), "end": epoch seconds (float), "duration_ms": float,
  "status": "OK" | "ERROR", "attributes": {str: str | int | float | bool | list}}`.
- Otherwise `OtlpHttpExporter`: OTLP/protobuf to `https://xray.<region>.amazonaws.com/v1/traces`
  (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), SigV4-signed for `xray` (docs/decisions.md:
  needs Transaction Search and `xray:PutSpans`).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from sluice.observability.logs import get_logger
from sluice.observability.otlp import JsonLinesExporter, OtlpHttpExporter

log = get_logger(__name__)

TRACEPARENT = "traceparent"
TRACE_FILE_ENV = "SLUICE_TRACE_FILE"
XRAY_HEADER_ENV = "_X_AMZN_TRACE_ID"
MAX_MESSAGE_ATTRIBUTES = 10
# Spans held for one invocation at most (a runaway loop must not grow memory without end).
MAX_BUFFERED_SPANS = 10_000

_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_XRAY_ROOT_RE = re.compile(r"^1-([0-9a-f]{8})-([0-9a-f]{24})$")
_SPAN_ID_RE = re.compile(r"^[0-9a-f]{16}$")


class SpanExporter(Protocol):
    """Where a flush sends the spans of one invocation; raises if they were not taken."""

    def export(self, spans: list[ReadableSpan]) -> None: ...


class _Invocation:
    """What chunk spans take from the invocation they run in."""

    def __init__(self, attributes: dict[str, str]) -> None:
        self.attributes = attributes


_invocation: ContextVar[_Invocation | None] = ContextVar("sluice_invocation", default=None)


class _Buffer(SpanProcessor):
    """Keeps ended, sampled spans until `take()` (the end of the invocation)."""

    def __init__(self) -> None:
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()
        self.dropped = 0

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None or not span.context.trace_flags.sampled:
            return
        with self._lock:
            if len(self._spans) < MAX_BUFFERED_SPANS:
                self._spans.append(span)
            else:
                self.dropped += 1

    def take(self) -> list[ReadableSpan]:
        with self._lock:
            spans, self._spans = self._spans, []
            return spans

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def default_exporter() -> SpanExporter:
    """The trace file if `SLUICE_TRACE_FILE` is set, else X-Ray's OTLP endpoint."""
    path = os.environ.get(TRACE_FILE_ENV)
    if path:
        return JsonLinesExporter(path)
    return OtlpHttpExporter()


class OTelTracer:
    """OpenTelemetry spans with their own `TracerProvider` (the global one is left alone).

    `exporter` defaults to `default_exporter()`, chosen on first use.
    """

    def __init__(self, exporter: SpanExporter | None = None, *, service: str | None = None) -> None:
        self._exporter = exporter
        self._service = service
        self._lock = threading.Lock()
        self._tracer: Any = None
        self._buffer = _Buffer()
        self._export_failed = False

    @property
    def exporter(self) -> SpanExporter:
        if self._exporter is None:
            self._exporter = default_exporter()
        return self._exporter

    def _get(self) -> Any:
        if self._tracer is None:
            with self._lock:
                if self._tracer is None:
                    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
                    resource = Resource.create(
                        {
                            "service.name": self._service or function or "sluice",
                            "cloud.provider": "aws",
                            "cloud.platform": "aws_lambda",
                            **({"faas.name": function} if function else {}),
                        }
                    )
                    provider = TracerProvider(resource=resource)
                    provider.add_span_processor(self._buffer)
                    self._tracer = provider.get_tracer("sluice")
        return self._tracer

    # ------------------------------------------------------------------ the port

    @contextmanager
    def invocation_span(
        self, function_name: str | None = None, request_id: str | None = None
    ) -> Iterator[None]:
        """The handler's span; the invocation's spans are exported when it ends."""
        attributes = {
            k: v for k, v in (("faas.name", function_name), ("faas.invocation_id", request_id)) if v
        }
        parent = _xray_parent(os.environ.get(XRAY_HEADER_ENV))
        token = _invocation.set(_Invocation(attributes))
        try:
            with self._span("invocation", parent, SpanKind.SERVER, attributes, ()):
                yield
        finally:
            _invocation.reset(token)
            self.flush()

    @contextmanager
    def chunk_span(
        self, chunk_id: str, correlation_id: str | None = None, record_type: str | None = None
    ) -> Iterator[None]:
        invocation = _invocation.get()
        attributes = {
            **(invocation.attributes if invocation is not None else {}),
            "sluice.chunk_id": chunk_id,
        }
        if correlation_id is not None:
            attributes["sluice.correlation_id"] = correlation_id
        if record_type is not None:
            attributes["sluice.record_type"] = record_type
        parent, links = self._chunk_parent()
        try:
            with self._span("chunk", parent, SpanKind.CONSUMER, attributes, links):
                yield
        finally:
            if invocation is None:
                self.flush()  # no invocation span will flush this one

    def patch_clients(self) -> None:
        """AWS calls are not traced by this backend (the X-Ray SDK option does that)."""
        return None

    def inject(self, attributes: MutableMapping[str, Any]) -> None:
        """Add the current span's `traceparent` to a message's attributes, if there is room."""
        try:
            sc = trace.get_current_span().get_span_context()
            if not sc.is_valid or TRACEPARENT in attributes:
                return
            if len(attributes) >= MAX_MESSAGE_ATTRIBUTES:
                log.debug("no room for traceparent; the next stage starts a new trace")
                return
            sampled = int(sc.trace_flags) & 0x01  # the one flag every W3C level knows
            value = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sampled:02x}"
            attributes[TRACEPARENT] = {"DataType": "String", "StringValue": value}
        except Exception:
            log.debug("could not add the trace context to a message", exc_info=True)

    def record_error(self, error: BaseException) -> None:
        """Mark the current span failed with `error` (for errors its code catches itself)."""
        span = trace.get_current_span()
        if span.is_recording():
            _record(span, error)

    def flush(self) -> None:
        """Export the spans ended so far, once; a failure is logged and the spans dropped."""
        spans = self._buffer.take()
        if not spans:
            return
        try:
            self.exporter.export(spans)
        except Exception as exc:
            if not self._export_failed:
                self._export_failed = True
                log.warning(
                    "could not export spans; tracing goes on without them",
                    extra={"spans": len(spans), "error": str(exc)},
                )
            else:
                log.debug("could not export spans", extra={"spans": len(spans), "error": str(exc)})

    # ------------------------------------------------------------------ helpers

    def _chunk_parent(self) -> tuple[Any, list[Any]]:
        """(parent context, links): the message's traceparent if valid, else the current span."""
        remote = _remote_parent(_delivery_attributes())
        if remote is None:
            return None, []
        current = trace.get_current_span().get_span_context()
        links = [Link(current)] if current.is_valid else []
        return trace.set_span_in_context(NonRecordingSpan(remote)), links

    @contextmanager
    def _span(
        self, name: str, parent: Any, kind: SpanKind, attributes: Mapping[str, str], links: Any
    ) -> Iterator[None]:
        """A current span around the body; an exception is recorded and re-raised. A failure
        of OpenTelemetry itself is logged at debug level and the body runs untraced."""
        try:
            span = self._get().start_span(
                name, context=parent, kind=kind, attributes=dict(attributes), links=links
            )
            token = otel_context.attach(trace.set_span_in_context(span))
        except Exception:
            log.debug("could not start the %s span", name, exc_info=True)
            yield
            return
        try:
            yield
        except BaseException as exc:
            _record(span, exc)
            raise
        finally:
            try:
                otel_context.detach(token)
                span.end()
            except Exception:
                log.debug("could not end the %s span", name, exc_info=True)


def _record(span: Any, exc: BaseException) -> None:
    try:
        span.record_exception(exc)
        span.set_attribute("error.type", type(exc).__name__)
        span.set_attribute("error.message", str(exc)[:1000])
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:1000]))
    except Exception:
        log.debug("could not record the exception on the span", exc_info=True)


def _delivery_attributes() -> Mapping[str, str]:
    from sluice.delivery import current_delivery  # the stage runtime sets it per chunk

    delivery = current_delivery()
    return delivery.attributes if delivery is not None else {}


def _remote_parent(attributes: Mapping[str, str]) -> SpanContext | None:
    """The span context of a `traceparent` attribute; None if absent or malformed."""
    value = str(attributes.get(TRACEPARENT) or "").strip().lower()
    match = _TRACEPARENT_RE.match(value)
    if match is None:
        if value:
            log.debug("malformed traceparent ignored; the chunk starts a new trace")
        return None
    trace_id, span_id, flags = (int(g, 16) for g in match.groups())
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 0x01))


def _xray_parent(header: str | None) -> Any:
    """A context whose parent is the Lambda segment of an X-Ray trace header, or None."""
    if not header:
        return None
    parts = dict(p.strip().split("=", 1) for p in header.split(";") if "=" in p)
    root = _XRAY_ROOT_RE.match(parts.get("Root", "").lower())
    parent = parts.get("Parent", "").lower()
    if root is None or not _SPAN_ID_RE.match(parent) or not int(parent, 16):
        return None
    flags = TraceFlags(0 if parts.get("Sampled") == "0" else 1)
    span_context = SpanContext(
        int(root.group(1) + root.group(2), 16), int(parent, 16), is_remote=True, trace_flags=flags
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))
