"""Where OpenTelemetry spans go: X-Ray's OTLP endpoint (SigV4), or a JSON-lines file.

`encode_spans` writes an OTLP `ExportTraceServiceRequest` in protobuf's wire format by hand:
the part of the schema spans need is small, and this keeps protobuf and opentelemetry-proto
(and their megabytes) out of the Lambda zips. `OtlpHttpExporter` POSTs it to
`https://xray.<region>.amazonaws.com/v1/traces`, signed with botocore's SigV4 signer for the
service `xray` (botocore is in the Lambda runtime). `JsonLinesExporter` appends one JSON
object per span to a file (the local runtime's `SLUICE_TRACE_FILE`; format in
`sluice.observability.otel`).

Nothing here imports OpenTelemetry: a span is read through the SDK's `ReadableSpan`
attributes (name, context, parent, start_time, end_time, status, attributes, kind, links,
events, resource, instrumentation_scope).
"""

from __future__ import annotations

import http.client
import json
import os
import struct
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

XRAY_OTLP_URL = "https://xray.{region}.amazonaws.com/v1/traces"
CONTENT_TYPE = "application/x-protobuf"
DEFAULT_TIMEOUT_S = 2.0

# ---------------------------------------------------------------- protobuf wire format

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64: negatives as two's complement, 10 bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _len(field: int, payload: bytes) -> bytes:
    return _tag(field, _LEN) + _varint(len(payload)) + payload


def _str(field: int, text: str) -> bytes:
    return _len(field, text.encode("utf-8")) if text else b""


def _fixed64(field: int, value: int) -> bytes:
    return _tag(field, _I64) + struct.pack("<Q", value)


def _fixed32(field: int, value: int) -> bytes:
    return _tag(field, _I32) + struct.pack("<I", value)


def _uint(field: int, value: int) -> bytes:
    return _tag(field, _VARINT) + _varint(value) if value else b""


def _any_value(value: Any) -> bytes:
    # AnyValue: 1 string, 2 bool, 3 int64, 4 double, 5 ArrayValue.
    if isinstance(value, bool):
        return _tag(2, _VARINT) + _varint(int(value))
    if isinstance(value, int):
        return _tag(3, _VARINT) + _varint(value)
    if isinstance(value, float):
        return _tag(4, _I64) + struct.pack("<d", value)
    if isinstance(value, list | tuple):
        return _len(5, b"".join(_len(1, _any_value(v)) for v in value))
    return _len(1, str(value).encode("utf-8"))


def _attributes(field: int, attributes: Mapping[str, Any] | None) -> bytes:
    # KeyValue: 1 key, 2 AnyValue.
    out = b""
    for key, value in (attributes or {}).items():
        out += _len(field, _str(1, str(key)) + _len(2, _any_value(value)))
    return out


def _span(span: Any) -> bytes:
    ctx = span.context
    body = _len(1, ctx.trace_id.to_bytes(16, "big")) + _len(2, ctx.span_id.to_bytes(8, "big"))
    if span.parent is not None:
        body += _len(4, span.parent.span_id.to_bytes(8, "big"))
    body += _str(5, span.name)
    body += _uint(6, int(span.kind.value) + 1)  # the SDK's SpanKind is OTLP's minus one
    body += _fixed64(7, int(span.start_time or 0)) + _fixed64(8, int(span.end_time or 0))
    body += _attributes(9, span.attributes)
    for event in span.events or ():
        body += _len(
            11,
            _fixed64(1, int(event.timestamp))
            + _str(2, event.name)
            + _attributes(3, event.attributes),
        )
    for link in span.links or ():
        linked = link.context
        body += _len(
            13,
            _len(1, linked.trace_id.to_bytes(16, "big"))
            + _len(2, linked.span_id.to_bytes(8, "big"))
            + _attributes(4, link.attributes),
        )
    status = span.status
    code = {"UNSET": 0, "OK": 1, "ERROR": 2}.get(status.status_code.name, 0)
    body += _len(15, _str(2, status.description or "") + _uint(3, code))
    body += _fixed32(16, int(ctx.trace_flags))  # W3C trace flags (the sampled bit)
    return body


def encode_spans(spans: Sequence[Any]) -> bytes:
    """An OTLP `ExportTraceServiceRequest`: spans grouped by resource and scope."""
    groups: dict[tuple[int, int], tuple[Any, Any, list[Any]]] = {}
    for span in spans:
        key = (id(span.resource), id(span.instrumentation_scope))
        groups.setdefault(key, (span.resource, span.instrumentation_scope, []))[2].append(span)
    by_resource: dict[int, tuple[Any, list[bytes]]] = {}
    for resource, scope, members in groups.values():
        scope_msg = b""
        if scope is not None:
            scope_msg = _str(1, scope.name) + _str(2, scope.version or "")
        scope_spans = _len(1, scope_msg) + b"".join(_len(2, _span(s)) for s in members)
        by_resource.setdefault(id(resource), (resource, []))[1].append(scope_spans)
    out = b""
    for resource, scope_spans_list in by_resource.values():
        attrs = dict(resource.attributes) if resource is not None else {}
        rs = _len(1, _attributes(1, attrs)) + b"".join(_len(2, s) for s in scope_spans_list)
        out += _len(1, rs)
    return out


# ---------------------------------------------------------------- exporters


class ExportFailedError(Exception):
    """The endpoint refused the spans or could not be reached."""


class OtlpHttpExporter:
    """POST spans as OTLP/protobuf to X-Ray's endpoint, SigV4-signed for service `xray`.

    `endpoint` defaults to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else the X-Ray endpoint of
    `region` (AWS_REGION). Credentials come from botocore's default chain (in Lambda: the
    execution role's, from the environment). One request per `export`, bounded by `timeout_s`.
    """

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint: str | None = None,
        credentials: Any | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.region = (
            region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        )
        self.endpoint = (
            endpoint
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or XRAY_OTLP_URL.format(region=self.region)
        )
        self._credentials = credentials
        self.timeout_s = timeout_s

    def _get_credentials(self) -> Any:
        if self._credentials is None:
            import botocore.session

            self._credentials = botocore.session.get_session().get_credentials()
            if self._credentials is None:
                raise ExportFailedError("no AWS credentials to sign the OTLP request with")
        return self._credentials

    def export(self, spans: Sequence[Any]) -> None:
        """Send `spans`; `ExportFailedError` if the endpoint did not take them."""
        if not spans:
            return
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        body = encode_spans(spans)
        request = AWSRequest(
            method="POST", url=self.endpoint, data=body, headers={"Content-Type": CONTENT_TYPE}
        )
        SigV4Auth(self._get_credentials(), "xray", self.region).add_auth(request)
        try:
            status, answer = _post(
                self.endpoint, body, dict(request.headers.items()), self.timeout_s
            )
        except OSError as exc:  # refused, reset, timed out, TLS
            raise ExportFailedError(f"OTLP export to {self.endpoint} failed: {exc}") from exc
        if not 200 <= status < 300:
            detail = answer[:200].decode("utf-8", "replace")
            raise ExportFailedError(f"OTLP export to {self.endpoint} answered {status}: {detail}")


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ExportFailedError(f"not an http(s) endpoint: {url!r}")
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.hostname, parts.port, timeout=timeout_s)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def span_record(span: Any) -> dict[str, Any]:
    """One span as a line of the trace file (see `sluice.observability.otel`)."""
    start = int(span.start_time or 0)
    end = int(span.end_time or start)
    return {
        "name": span.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "start": start / 1e9,
        "end": end / 1e9,
        "duration_ms": round((end - start) / 1e6, 3),
        "status": "ERROR" if span.status.status_code.name == "ERROR" else "OK",
        "attributes": _plain(span.attributes),
    }


def _plain(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (attributes or {}).items()}


class JsonLinesExporter:
    """Append one JSON object per span to `path`, all of a flush in one `write` (O_APPEND:
    several worker processes can share the file without interleaving lines)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def export(self, spans: Iterable[Any]) -> None:
        data = "".join(json.dumps(span_record(s), separators=(",", ":")) + "\n" for s in spans)
        if not data:
            return
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data.encode("utf-8"))
        finally:
            os.close(fd)
