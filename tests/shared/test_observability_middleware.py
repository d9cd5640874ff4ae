"""The Chalice middleware, driven through `chalice.test.Client` as Lambda would call it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
from chalice import Chalice
from chalice.test import Client

from sluice.observability import (
    add_metric,
    bind,
    default_metrics,
    get_logger,
    install,
    log_context,
    set_tracer,
)

log = get_logger("tests.observability")


@pytest.fixture(autouse=True)
def clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SLUICE_STAGE", "test")
    for name in ("_X_AMZN_TRACE_ID", "LAMBDA_TASK_ROOT", "LOG_LEVEL", "SLUICE_METRICS_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    set_tracer(None)
    default = default_metrics()
    monkeypatch.setattr(default, "service", default.service)
    default.clear()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with log_context():
        yield
    default.clear()
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def client() -> Client:
    app = Chalice(app_name="obs-test", configure_logs=False)

    @app.lambda_function(name="work")
    def work(event: dict[str, Any], context: Any) -> dict[str, Any]:
        add_metric("Processed", 2)
        with log_context(correlation_id=event.get("correlation_id")):
            log.info("working")
        if event.get("leak"):
            bind(correlation_id="leaked", chunk_id="c-leaked")
        if event.get("fail"):
            raise RuntimeError("boom")
        return {"ok": True}

    @app.on_sqs_message(queue="q")
    def on_sqs(event: Any) -> None:
        for record in event:
            with log_context(record_id=record.to_dict()["messageId"]):
                log.info("record")

    install(app, service="obs-test")
    return Client(app)


def parse(stdout: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split stdout into (log lines, EMF blobs); every line must be JSON."""
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return [x for x in lines if "_aws" not in x], [x for x in lines if "_aws" in x]


def test_lines_carry_the_invocation_context(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()
    client.lambda_.invoke("work", {"correlation_id": "corr-1"})
    elapsed_ms = (time.perf_counter() - started) * 1000
    first, _ = parse(capsys.readouterr().out)
    client.lambda_.invoke("work", {})
    second, _ = parse(capsys.readouterr().out)

    working, done = first
    assert working["message"] == "working"
    assert working["correlation_id"] == "corr-1"
    assert done["message"] == "invocation complete"
    assert "correlation_id" not in done
    for line in (working, done):
        assert line["service"] == "obs-test"
        assert line["stage"] == "test"
        assert line["function_name"] == "work"
        assert line["cold_start"] is True
        assert line["request_id"]
        assert line["timestamp"]
    assert isinstance(done["duration_ms"], int | float)
    assert 0 <= done["duration_ms"] <= elapsed_ms  # milliseconds of this invocation
    assert "duration_ms" not in working

    assert [line["cold_start"] for line in second] == [False, False]
    assert second[0]["request_id"] != working["request_id"]
    assert all("correlation_id" not in line for line in second)


def test_context_bound_by_one_invocation_does_not_reach_the_next(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    client.lambda_.invoke("work", {"leak": True})
    first, _ = parse(capsys.readouterr().out)
    client.lambda_.invoke("work", {})
    second, _ = parse(capsys.readouterr().out)

    assert first[-1]["correlation_id"] == "leaked"
    for line in second:
        assert "correlation_id" not in line
        assert "chunk_id" not in line


def test_one_emf_blob_per_invocation(client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    client.lambda_.invoke("work", {})
    _, first = parse(capsys.readouterr().out)
    client.lambda_.invoke("work", {})
    _, second = parse(capsys.readouterr().out)

    (cold,) = first
    (warm,) = second
    (directive,) = cold["_aws"]["CloudWatchMetrics"]
    assert isinstance(cold["_aws"]["Timestamp"], int)
    assert directive["Namespace"] == "Sluice"
    assert directive["Dimensions"] == [["service", "stage"]]
    assert (cold["service"], cold["stage"]) == ("obs-test", "test")
    names = {m["Name"] for m in directive["Metrics"]}
    assert names == {"Invocations", "ColdStart", "Processed"}
    assert (cold["Invocations"], cold["ColdStart"], cold["Processed"]) == (1, 1, 2)
    assert "ColdStart" not in warm
    assert warm["Invocations"] == 1


def test_a_failing_handler_still_logs_and_flushes_once_then_reraises(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        client.lambda_.invoke("work", {"fail": True})

    logs, blobs = parse(capsys.readouterr().out)
    (blob,) = blobs
    assert blob["Errors"] == 1
    assert blob["Invocations"] == 1
    done = logs[-1]
    assert done["message"] == "invocation complete"
    assert done["level"] == "ERROR"
    assert "RuntimeError: boom" in done["exc_info"]
    assert isinstance(done["duration_ms"], int | float)


def test_sqs_handlers_are_wrapped_too(client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    event = client.events.generate_sqs_event(message_bodies=["a", "b"], queue_name="q")

    client.lambda_.invoke("on_sqs", event)

    logs, blobs = parse(capsys.readouterr().out)
    assert [line["message"] for line in logs] == ["record", "record", "invocation complete"]
    assert [line.get("record_id") for line in logs] == ["message-id", "message-id", None]
    assert {line["function_name"] for line in logs} == {"on_sqs"}
    assert len(blobs) == 1


class FailingTracer:
    def chunk_span(
        self, chunk_id: str, correlation_id: str | None = None, record_type: str | None = None
    ) -> AbstractContextManager[None]:
        return nullcontext()

    def patch_clients(self) -> None:
        raise RuntimeError("xray sdk broken")


def test_a_tracer_failure_does_not_fail_the_invocation(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    set_tracer(FailingTracer())

    response = client.lambda_.invoke("work", {})

    assert response.payload == {"ok": True}
    logs, blobs = parse(capsys.readouterr().out)
    assert [line["level"] for line in logs if "xray sdk broken" in line.get("exc_info", "")] == [
        "WARNING"
    ]
    assert logs[-1]["message"] == "invocation complete"
    assert len(blobs) == 1


class FakeCollector:
    def __init__(self) -> None:
        self.freezes = 0

    def freeze(self) -> None:
        self.freezes += 1


@pytest.mark.parametrize("on_lambda", [True, False])
def test_long_lived_objects_are_frozen_once_after_the_first_invocation(
    client: Client,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    on_lambda: bool,
) -> None:
    from sluice.observability import middleware

    collector = FakeCollector()
    monkeypatch.setattr(middleware, "gc", collector)
    if on_lambda:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "work")
    else:
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    client.lambda_.invoke("work", {})
    assert collector.freezes == (1 if on_lambda else 0)
    client.lambda_.invoke("work", {})
    with pytest.raises(RuntimeError):
        client.lambda_.invoke("work", {"fail": True})
    assert collector.freezes == (1 if on_lambda else 0)  # warm invocations leave it alone
    capsys.readouterr()
