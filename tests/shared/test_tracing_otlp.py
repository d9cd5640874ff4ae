"""The AWS path: spans go to X-Ray's OTLP endpoint as a SigV4-signed OTLP/protobuf request.

A local HTTP server stands in for `https://xray.<region>.amazonaws.com/v1/traces`; the body
is decoded with opentelemetry-proto (not with the code under test) and the signature is
computed again with botocore at the request's own timestamp.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sluice.batch import ChunkOutcome, SQSMessage, process_sqs_batch
from sluice.envelope import Chunk, Record
from sluice.errors import PermanentError
from sluice.observability import set_tracer
from sluice.observability.otel import OTelTracer
from sluice.observability.otlp import ExportFailedError, OtlpHttpExporter
from sluice.observability.tracing import invocation_span
from sluice_tools import lambda_events

CREDENTIALS = Credentials("AKIDEXAMPLE", "secret-example", "session-token")
REGION = "eu-west-1"


class Endpoint(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class Handler(BaseHTTPRequestHandler):
    server: Endpoint

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.requests.append((self.path, dict(self.headers.items()), body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    set_tracer(None)


def keep(message: SQSMessage, error: PermanentError) -> None:
    """No message here is malformed; a rejected one would fail the test."""
    raise AssertionError(f"message {message.message_id} rejected: {error}")


def exporter(endpoint: Endpoint) -> OtlpHttpExporter:
    return OtlpHttpExporter(
        region=REGION, endpoint=endpoint.url, credentials=CREDENTIALS, timeout_s=2.0
    )


def sqs_record(c: Chunk) -> dict[str, Any]:
    return lambda_events.sqs_record(c, "m-1", source_arn=lambda_events.queue_arn("q", "eu-west-1"))


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: kv.value.string_value for kv in kvs}


def test_spans_reach_the_endpoint_signed_for_xray_as_an_otlp_request(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "sluice-router")
    set_tracer(OTelTracer(exporter(endpoint)))
    c = Chunk("c-9", "order", "s3://landing/k", "corr-9", (Record("r", 0, "t", {"n": 1}),))

    def fail(chunk: Chunk) -> ChunkOutcome:
        raise RuntimeError("sink down")

    with invocation_span("sluice-router", "req-9"):
        process_sqs_batch({"Records": [sqs_record(c)]}, fail, reject_message=keep)

    assert len(endpoint.requests) == 1  # one request for the whole invocation
    path, headers, body = endpoint.requests[0]
    assert path == "/v1/traces"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["X-Amz-Security-Token"] == "session-token"
    stamp = headers["X-Amz-Date"]
    assert headers["Authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{stamp[:8]}/{REGION}/xray/aws4_request, "
    )
    assert headers["Authorization"] == resigned(endpoint.url, body, stamp, monkeypatch)

    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    resource = attrs(resource_spans.resource.attributes)
    assert resource["service.name"] == "sluice-router"
    assert resource["cloud.provider"] == "aws"
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "sluice"
    chunk_span, invocation = scope_spans.spans
    assert (chunk_span.name, invocation.name) == ("chunk", "invocation")
    assert chunk_span.trace_id == invocation.trace_id
    assert len(chunk_span.trace_id) == 16
    assert chunk_span.parent_span_id == invocation.span_id
    assert invocation.parent_span_id == b""
    assert chunk_span.kind == 5  # SPAN_KIND_CONSUMER
    assert invocation.kind == 2  # SPAN_KIND_SERVER
    assert (
        invocation.start_time_unix_nano
        <= chunk_span.start_time_unix_nano
        < chunk_span.end_time_unix_nano
        <= invocation.end_time_unix_nano
    )
    assert attrs(chunk_span.attributes) == {
        "sluice.chunk_id": "c-9",
        "sluice.correlation_id": "corr-9",
        "sluice.record_type": "order",
        "faas.name": "sluice-router",
        "faas.invocation_id": "req-9",
        "error.type": "RuntimeError",
        "error.message": "sink down",
    }
    assert chunk_span.status.code == 2  # STATUS_CODE_ERROR
    assert "sink down" in chunk_span.status.message
    assert [e.name for e in chunk_span.events] == ["exception"]
    assert invocation.status.code == 0
    assert chunk_span.flags & 0x01  # sampled


def resigned(url: str, body: bytes, stamp: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Authorization botocore computes for the same request at the same time."""
    at = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *a, **k: at)
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": "application/x-protobuf"}
    )
    SigV4Auth(CREDENTIALS, "xray", REGION).add_auth(request)
    return str(request.headers["Authorization"])


def test_a_refusing_endpoint_is_an_export_error(endpoint: Endpoint) -> None:
    endpoint.status = 403
    tracer = OTelTracer(exporter(endpoint))
    with tracer.chunk_span("c-1", "corr", "order"):
        pass  # no invocation: the chunk span is flushed on its own, and the failure swallowed

    assert len(endpoint.requests) == 1
    with pytest.raises(ExportFailedError, match="answered 403"):
        exporter(endpoint).export(list(_one_span()))


def test_an_unreachable_endpoint_fails_within_the_timeout_and_the_handler_goes_on() -> None:
    dead = OtlpHttpExporter(
        region=REGION, endpoint="http://127.0.0.1:9/v1/traces", credentials=CREDENTIALS
    )
    set_tracer(OTelTracer(dead))
    try:
        with invocation_span("sluice-router", "req-1"):
            result = "handled"
    finally:
        set_tracer(None)

    assert result == "handled"
    with pytest.raises(ExportFailedError, match="failed"):
        dead.export(list(_one_span()))


def test_the_default_endpoint_is_xray_in_the_functions_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")

    assert OtlpHttpExporter().endpoint == "https://xray.ap-southeast-2.amazonaws.com/v1/traces"


def _one_span() -> Iterator[Any]:
    spans: list[Any] = []

    class Keep:
        def export(self, batch: list[Any]) -> None:
            spans.extend(batch)

    tracer = OTelTracer(Keep())
    with tracer.chunk_span("c", "corr", "order"):
        pass
    yield from spans
