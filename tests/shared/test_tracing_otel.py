"""OpenTelemetry tracing: spans per invocation and chunk, trace context across hops, the file.

Each test runs the real wiring: `get_tracer()` picks the OpenTelemetry tracer from the
environment (`SLUICE_TRACE_FILE` here), `invocation_span` wraps a handler as the middleware
does, `process_sqs_batch` opens the chunk spans, and `inject_trace_context` is what the
senders call. Spans are read back from the JSON-lines file, as `sluice trace` reads them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from sluice.batch import ChunkOutcome, SQSMessage, process_sqs_batch
from sluice.envelope import Chunk, Record
from sluice.errors import PermanentError
from sluice.observability import NoopTracer, XRayTracer, get_tracer, set_tracer
from sluice.observability.tracing import inject_trace_context, invocation_span
from sluice_tools import lambda_events

TRACE_ID = "5759e988bd862e3fe1be46a994272793"
PARENT = "53995c3f42cd8ad8"
XRAY_HEADER = f"Root=1-5759e988-bd862e3fe1be46a994272793;Parent={PARENT};Sampled=1"
SPAN_KEYS = {
    "name",
    "trace_id",
    "span_id",
    "parent_span_id",
    "start",
    "end",
    "duration_ms",
    "status",
    "attributes",
}


@pytest.fixture
def trace_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "spans.jsonl"
    for name in ("_X_AMZN_TRACE_ID", "SLUICE_TRACING", "LAMBDA_TASK_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLUICE_TRACE_FILE", str(path))
    set_tracer(None)
    yield path
    set_tracer(None)


def keep(message: SQSMessage, error: PermanentError) -> None:
    """No message here is malformed; a rejected one would fail the test."""
    raise AssertionError(f"message {message.message_id} rejected: {error}")


def spans_in(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def chunk(cid: str, n: int = 2) -> Chunk:
    at = "2026-12-04T06:00:00.000Z"
    records = tuple(Record(f"{cid}-r{i}", i, at, {"n": i}) for i in range(n))
    return Chunk(cid, "order", "s3://landing/k", f"corr-{cid}", records)


def message(
    c: Chunk, message_id: str, attributes: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An SQS → Lambda record with the chunk's message attributes (plus `attributes`)."""
    sent = {**c.message_attributes(), **(attributes or {})}
    return lambda_events.sqs_record(
        c,
        message_id,
        source_arn=lambda_events.queue_arn("q", "eu-west-1"),
        message_attributes={k: v["StringValue"] for k, v in sent.items()},
    )


def traceparent(value: str) -> dict[str, Any]:
    return {"traceparent": {"DataType": "String", "StringValue": value}}


def ok(c: Chunk) -> ChunkOutcome:
    return ChunkOutcome(records_in=len(c.records), out=len(c.records))


def test_one_span_per_invocation_and_per_chunk_with_the_attributes(trace_file: Path) -> None:
    event = {"Records": [message(chunk("c-1"), "m-1"), message(chunk("c-2"), "m-2")]}

    with invocation_span("sluice-cleanse", "req-1"):
        response = process_sqs_batch(event, ok, reject_message=keep)

    assert response == {"batchItemFailures": []}
    spans = spans_in(trace_file)
    assert [s["name"] for s in spans] == ["chunk", "chunk", "invocation"]
    assert all(set(s) == SPAN_KEYS for s in spans)
    invocation = spans[-1]
    assert invocation["parent_span_id"] is None
    assert invocation["attributes"] == {
        "faas.name": "sluice-cleanse",
        "faas.invocation_id": "req-1",
    }
    for span, cid in zip(spans[:2], ["c-1", "c-2"], strict=True):
        assert span["trace_id"] == invocation["trace_id"]
        assert span["parent_span_id"] == invocation["span_id"]
        assert span["status"] == "OK"
        assert span["attributes"] == {
            "sluice.chunk_id": cid,
            "sluice.correlation_id": f"corr-{cid}",
            "sluice.record_type": "order",
            "faas.name": "sluice-cleanse",
            "faas.invocation_id": "req-1",
        }
        assert invocation["start"] <= span["start"] <= span["end"] <= invocation["end"]
        assert span["duration_ms"] == pytest.approx((span["end"] - span["start"]) * 1000, abs=0.01)
    assert len({s["span_id"] for s in spans}) == 3


def test_a_chunk_sent_with_its_context_continues_the_same_trace_on_the_next_stage(
    trace_file: Path,
) -> None:
    sent: list[dict[str, Any]] = []

    def stage_one(c: Chunk) -> ChunkOutcome:
        # What every sender does: the chunk's attributes, plus the trace context.
        sent.append(inject_trace_context(chunk("next").message_attributes()))
        return ok(c)

    with invocation_span("sluice-cleanse", "req-1"):
        process_sqs_batch(
            {"Records": [message(chunk("c-1"), "m-1")]}, stage_one, reject_message=keep
        )
    with invocation_span("sluice-router", "req-2"):
        process_sqs_batch(
            {"Records": [message(chunk("next"), "m-2", sent[0])]}, ok, reject_message=keep
        )

    first_chunk, first_invocation, second_chunk, second_invocation = spans_in(trace_file)
    assert sent[0]["traceparent"]["StringValue"] == (
        f"00-{first_chunk['trace_id']}-{first_chunk['span_id']}-01"
    )
    assert second_chunk["trace_id"] == first_chunk["trace_id"]
    assert second_chunk["parent_span_id"] == first_chunk["span_id"]
    # The next invocation itself is a trace of its own (Lambda's); its chunk links to it.
    assert second_invocation["trace_id"] != first_invocation["trace_id"]
    assert second_chunk["attributes"]["faas.invocation_id"] == "req-2"


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "00-xyz-abc-01",
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id: invalid
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero span id: invalid
        f"00-{TRACE_ID}-{PARENT}",  # no flags
        "",
    ],
)
def test_a_missing_or_malformed_traceparent_starts_a_new_trace_and_never_fails(
    trace_file: Path, value: str
) -> None:
    event = {"Records": [message(chunk("c-1"), "m-1", traceparent(value))]}

    with invocation_span("sluice-router", "req-1"):
        response = process_sqs_batch(event, ok, reject_message=keep)

    assert response == {"batchItemFailures": []}
    span, invocation = spans_in(trace_file)
    assert span["trace_id"] == invocation["trace_id"] != TRACE_ID
    assert span["parent_span_id"] == invocation["span_id"]


def test_a_failing_chunk_is_recorded_on_its_span(trace_file: Path) -> None:
    def boom(c: Chunk) -> ChunkOutcome:
        raise ValueError("broken handler")

    with invocation_span("sluice-router", "req-1"):
        response = process_sqs_batch(
            {"Records": [message(chunk("c-1"), "m-1")]}, boom, reject_message=keep
        )

    assert response == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    span, invocation = spans_in(trace_file)
    assert span["status"] == "ERROR"
    assert span["attributes"]["error.type"] == "ValueError"
    assert span["attributes"]["error.message"] == "broken handler"
    assert invocation["status"] == "OK"  # the batch reported the failure; the handler did not raise


def test_an_exception_leaving_the_handler_is_recorded_and_propagates(trace_file: Path) -> None:
    with pytest.raises(KeyError), invocation_span("sluice-ingest", "req-1"):
        raise KeyError("lost")

    (invocation,) = spans_in(trace_file)
    assert invocation["status"] == "ERROR"
    assert invocation["attributes"]["error.type"] == "KeyError"


def test_the_invocation_continues_the_lambda_segment_of_the_xray_header(
    trace_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY_HEADER)

    with invocation_span("sluice-ingest", "req-1"):
        sent: dict[str, Any] = inject_trace_context({})

    (invocation,) = spans_in(trace_file)
    assert (invocation["trace_id"], invocation["parent_span_id"]) == (TRACE_ID, PARENT)
    assert sent["traceparent"]["StringValue"] == f"00-{TRACE_ID}-{invocation['span_id']}-01"


def test_an_unsampled_xray_header_records_nothing(
    trace_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY_HEADER.replace("Sampled=1", "Sampled=0"))

    with invocation_span("sluice-ingest", "req-1"):
        process_sqs_batch({"Records": [message(chunk("c-1"), "m-1")]}, ok, reject_message=keep)

    assert spans_in(trace_file) == []


def test_no_traceparent_where_it_would_be_the_eleventh_attribute(trace_file: Path) -> None:
    full = {f"a{i}": {"DataType": "String", "StringValue": "x"} for i in range(10)}
    roomy = {f"a{i}": {"DataType": "String", "StringValue": "x"} for i in range(9)}

    with invocation_span("sluice-router", "req-1"):
        inject_trace_context(full)
        inject_trace_context(roomy)

    assert "traceparent" not in full
    assert len(full) == 10
    assert "traceparent" in roomy


def test_outside_a_span_nothing_is_injected(trace_file: Path) -> None:
    assert inject_trace_context({}) == {}


def test_an_export_failure_is_logged_once_and_never_fails_the_handler(
    trace_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sluice.observability.otel import OTelTracer

    class Unreachable:
        calls = 0

        def export(self, spans: list[Any]) -> None:
            self.calls += 1
            raise OSError("endpoint unreachable")

    exporter = Unreachable()
    set_tracer(OTelTracer(exporter))
    caplog.set_level(logging.WARNING)

    for request in ("req-1", "req-2"):
        with invocation_span("sluice-router", request):
            response = process_sqs_batch(
                {"Records": [message(chunk("c-1"), "m-1")]}, ok, reject_message=keep
            )
        assert response == {"batchItemFailures": []}

    assert exporter.calls == 2  # one export per invocation, not one per span
    warnings = [r for r in caplog.records if "could not export spans" in r.getMessage()]
    assert len(warnings) == 1


def test_sluice_tracing_chooses_the_backend(
    trace_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.observability.otel import OTelTracer

    assert isinstance(get_tracer(), OTelTracer)  # the trace file alone turns it on
    monkeypatch.setenv("SLUICE_TRACING", "off")
    assert isinstance(get_tracer(), NoopTracer)
    monkeypatch.setenv("SLUICE_TRACING", "xray")
    assert isinstance(get_tracer(), NoopTracer)  # X-Ray needs Lambda's trace header
    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY_HEADER)
    assert isinstance(get_tracer(), XRayTracer)
    monkeypatch.delenv("SLUICE_TRACING")
    monkeypatch.delenv("SLUICE_TRACE_FILE")
    assert isinstance(get_tracer(), OTelTracer)  # on AWS: the trace header


def test_off_writes_no_spans(trace_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TRACING", "off")

    with invocation_span("sluice-router", "req-1"):
        process_sqs_batch({"Records": [message(chunk("c-1"), "m-1")]}, ok, reject_message=keep)

    assert not trace_file.exists()


def test_opentelemetry_is_imported_on_first_use_only(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from sluice import batch, stage
        from sluice.observability import install
        from sluice.observability.tracing import get_tracer
        assert "opentelemetry" not in sys.modules, "imported at module import"
        with get_tracer().chunk_span("c", "corr", "order"):
            pass
        assert "opentelemetry" in sys.modules, "the trace file did not turn tracing on"
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("_X_AMZN_TRACE_ID", "SLUICE_TRACING")}
    env["SLUICE_TRACE_FILE"] = str(tmp_path / "spans.jsonl")

    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    (span,) = spans_in(tmp_path / "spans.jsonl")  # no invocation: the chunk span flushed itself
    assert span["attributes"]["sluice.chunk_id"] == "c"
