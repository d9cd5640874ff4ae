"""Tracing: X-Ray subsegments reach a fake daemon over UDP; elsewhere tracing is a silent no-op."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import botocore.client
import botocore.endpoint
import pytest

from sluice.observability import NoopTracer, Tracer, XRayTracer, get_tracer, set_tracer

TRACE_ID = "1-5759e988-bd862e3fe1be46a994272793"
PARENT_ID = "53995c3f42cd8ad8"
TRACE_HEADER = f"Root={TRACE_ID};Parent={PARENT_ID};Sampled=1"


@pytest.fixture(autouse=True)
def default_tracer() -> Iterator[None]:
    set_tracer(None)
    yield
    set_tracer(None)


@pytest.fixture
def daemon() -> Iterator[socket.socket]:
    """A UDP socket standing in for the X-Ray daemon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


@pytest.fixture
def lambda_env(
    monkeypatch: pytest.MonkeyPatch, daemon: socket.socket, tmp_path: Any
) -> Iterator[None]:
    """Environment variables of a traced Lambda invocation, with a fresh global recorder.

    The SDK's recorder is a process-wide object configured once; give it a plain
    (non-Lambda) context, a new emitter and new streaming state, as if imported outside
    Lambda, and put the originals back afterwards.
    """
    from aws_xray_sdk.core import xray_recorder
    from aws_xray_sdk.core.context import Context
    from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter
    from aws_xray_sdk.core.streaming.default_streaming import DefaultStreaming

    host, port = daemon.getsockname()
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(tmp_path))
    monkeypatch.setenv("_X_AMZN_TRACE_ID", TRACE_HEADER)
    monkeypatch.setenv("AWS_XRAY_DAEMON_ADDRESS", f"{host}:{port}")
    for name in ("AWS_XRAY_CONTEXT_MISSING", "AWS_XRAY_SDK_ENABLED", "SLUICE_TRACE_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLUICE_TRACING", "xray")  # the X-Ray SDK option (OpenTelemetry is default)
    emitter = UDPEmitter()
    monkeypatch.setattr(xray_recorder, "_context", Context())
    monkeypatch.setattr(xray_recorder, "_emitter", emitter)
    monkeypatch.setattr(xray_recorder, "_streaming", DefaultStreaming())
    yield
    emitter._socket.close()


@pytest.fixture
def restore_botocore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo `patch(["botocore"])` so later tests talk to an untraced botocore."""
    from aws_xray_sdk.core import patcher

    monkeypatch.setattr(patcher, "_PATCHED_MODULES", set())
    for owner, name in (
        (botocore.client.BaseClient, "_make_api_call"),
        (botocore.endpoint.Endpoint, "prepare_request"),
    ):
        monkeypatch.setattr(owner, name, owner.__dict__[name])
    yield
    if hasattr(botocore.client, "_xray_enabled"):
        delattr(botocore.client, "_xray_enabled")


def receive_documents(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    documents = []
    for _ in range(count):
        header, _, body = sock.recv(65536).decode("utf-8").partition("\n")
        assert json.loads(header) == {"format": "json", "version": 1}
        documents.append(json.loads(body))
    return documents


def assert_nothing_received(sock: socket.socket) -> None:
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(65536)


@pytest.mark.usefixtures("lambda_env")
def test_chunk_span_sends_a_subsegment_with_annotations(daemon: socket.socket) -> None:
    tracer = get_tracer()
    assert isinstance(tracer, XRayTracer)

    with XRayTracer().chunk_span("chunk-7", "corr-1", "order"):
        pass

    (doc,) = receive_documents(daemon, 1)
    assert doc["name"] == "chunk"
    assert doc["type"] == "subsegment"
    assert doc["trace_id"] == TRACE_ID
    assert doc["parent_id"] == PARENT_ID
    assert doc["annotations"] == {
        "chunk_id": "chunk-7",
        "correlation_id": "corr-1",
        "record_type": "order",
    }
    assert doc["end_time"] >= doc["start_time"]


@pytest.mark.usefixtures("lambda_env")
def test_chunk_span_records_the_exception_and_reraises_it(daemon: socket.socket) -> None:
    with pytest.raises(RuntimeError, match="boom"), XRayTracer().chunk_span("chunk-8", None, None):
        raise RuntimeError("boom")

    (doc,) = receive_documents(daemon, 1)
    assert doc["fault"] is True
    (exception,) = doc["cause"]["exceptions"]
    assert (exception["type"], exception["message"]) == ("RuntimeError", "boom")
    assert doc["annotations"] == {"chunk_id": "chunk-8"}


@pytest.mark.usefixtures("lambda_env", "restore_botocore")
def test_patched_botocore_calls_are_subsegments_of_the_chunk(daemon: socket.socket) -> None:
    import boto3
    from botocore.stub import Stubber

    tracer = XRayTracer()
    tracer.patch_clients()
    tracer.patch_clients()  # idempotent
    sqs = boto3.client(
        "sqs", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(sqs) as stub:
        stub.add_response("send_message", {"MessageId": "m-1"})
        with tracer.chunk_span("chunk-9", "corr-9", "order"):
            sqs.send_message(QueueUrl="https://sqs.eu-west-1.amazonaws.com/1/q", MessageBody="b")

    call, chunk = receive_documents(daemon, 2)
    assert chunk["name"] == "chunk"
    assert call["parent_id"] == chunk["id"]
    assert call["trace_id"] == TRACE_ID
    assert call["namespace"] == "aws"
    assert call["aws"]["operation"] == "SendMessage"


@pytest.mark.usefixtures("lambda_env")
def test_a_trace_header_without_sampling_decision_sends_nothing_and_says_nothing(
    daemon: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", f"Root={TRACE_ID}")
    caplog.set_level(logging.DEBUG, logger="aws_xray_sdk")

    with XRayTracer().chunk_span("chunk-1", "corr-1", "order"):
        pass

    assert_nothing_received(daemon)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["off", "OFF", "false"])
def test_sluice_tracing_off_disables_xray(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", TRACE_HEADER)
    monkeypatch.setenv("SLUICE_TRACING", value)

    assert isinstance(get_tracer(), NoopTracer)


def test_without_a_trace_header_the_tracer_is_the_silent_no_op(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    caplog.set_level(logging.DEBUG)

    tracer = get_tracer()
    tracer.patch_clients()
    with pytest.raises(KeyError), tracer.chunk_span("chunk-1", "corr-1", "order"):
        raise KeyError("propagates")

    assert isinstance(tracer, NoopTracer)
    assert caplog.records == []
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")


def test_without_a_trace_header_the_xray_sdk_is_never_imported() -> None:
    script = textwrap.dedent(
        """
        import sys
        from sluice.observability import get_tracer, install
        tracer = get_tracer()
        tracer.patch_clients()
        with tracer.chunk_span("c", "corr", "order"):
            pass
        heavy = [m for m in ("aws_xray_sdk", "boto3", "botocore", "chalice") if m in sys.modules]
        assert heavy == [], heavy
        print(type(tracer).__name__)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("_X_AMZN_TRACE_ID", "LAMBDA_TASK_ROOT")}

    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "NoopTracer"
    assert result.stderr == ""


class RecordingTracer:
    """What an OpenTelemetry backend would look like: anything with the two methods."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str | None, str | None]] = []
        self.patched = 0

    @contextmanager
    def chunk_span(
        self, chunk_id: str, correlation_id: str | None = None, record_type: str | None = None
    ) -> Iterator[None]:
        self.spans.append((chunk_id, correlation_id, record_type))
        yield

    def patch_clients(self) -> None:
        self.patched += 1


def test_another_tracer_plugs_in_through_set_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", TRACE_HEADER)
    monkeypatch.setenv("SLUICE_TRACING", "xray")
    custom = RecordingTracer()
    assert isinstance(custom, Tracer)

    set_tracer(custom)
    with get_tracer().chunk_span("c-1", "corr-1", "order"):
        pass

    assert get_tracer() is custom
    assert custom.spans == [("c-1", "corr-1", "order")]
    set_tracer(None)
    assert isinstance(get_tracer(), XRayTracer)


class BrokenRecorder:
    max_trace_back = 10

    def begin_subsegment(self, name: str) -> Any:
        raise RuntimeError("daemon config broken")

    def end_subsegment(self) -> None:
        raise RuntimeError("end broken")


class BrokenSubsegment:
    def put_annotation(self, key: str, value: Any) -> None:
        raise RuntimeError("annotation broken")


class HalfBrokenRecorder(BrokenRecorder):
    def begin_subsegment(self, name: str) -> Any:
        return BrokenSubsegment()


@pytest.mark.parametrize("recorder", [BrokenRecorder(), HalfBrokenRecorder()])
def test_a_tracing_failure_never_breaks_the_handler(recorder: Any) -> None:
    span: AbstractContextManager[None] = XRayTracer(recorder=recorder).chunk_span("c", "i", "t")
    ran = []

    with span:
        ran.append(True)
    with pytest.raises(ValueError, match="handler's own"), XRayTracer(recorder).chunk_span("c"):
        raise ValueError("handler's own error")

    assert ran == [True]
