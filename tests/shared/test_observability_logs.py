"""JSON log lines: fields, context binding, idempotent configuration."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from sluice.errors import ConfigError
from sluice.observability import bind, configure_logging, get_context, get_logger, log_context

TRACE_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


@pytest.fixture(autouse=True)
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo handlers and context the test added; start without Lambda variables."""
    for name in ("LOG_LEVEL", "SLUICE_STAGE", "_X_AMZN_TRACE_ID", "LAMBDA_TASK_ROOT"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with log_context():
        yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_line_is_json_with_fixed_fields(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_STAGE", "dev")
    configure_logging("cleanse")

    get_logger("sluice.test").info("hello %s", "world")

    (line,) = json_lines(capsys.readouterr().out)
    assert line["message"] == "hello world"
    assert line["level"] == "INFO"
    assert line["logger"] == "sluice.test"
    assert line["service"] == "cleanse"
    assert line["stage"] == "dev"
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert list(line)[:4] == ["timestamp", "level", "message", "logger"]


def test_unknown_fields_are_left_out_not_null(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("cleanse")

    get_logger("t").warning("no context", extra={"record_id": None})

    (line,) = json_lines(capsys.readouterr().out)
    for absent in ("stage", "request_id", "correlation_id", "record_id", "xray_trace_id"):
        assert absent not in line
    assert None not in line.values()


def test_bound_and_extra_fields_appear_on_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("router")
    bind(request_id="req-1", function_name="router-dev-route", cold_start=True)

    get_logger("t").info("routed", extra={"record_id": "r-9", "duration_ms": 1.5})

    (line,) = json_lines(capsys.readouterr().out)
    assert line["request_id"] == "req-1"
    assert line["function_name"] == "router-dev-route"
    assert line["cold_start"] is True
    assert line["record_id"] == "r-9"
    assert line["duration_ms"] == 1.5


def test_log_context_restores_previous_values_on_exit(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("router")
    log = get_logger("t")
    bind(correlation_id="outer")

    with log_context(correlation_id="inner", chunk_id="c-1"):
        log.info("inside")
    log.info("after")

    inside, after = json_lines(capsys.readouterr().out)
    assert (inside["correlation_id"], inside["chunk_id"]) == ("inner", "c-1")
    assert after["correlation_id"] == "outer"
    assert "chunk_id" not in after


def test_log_context_restores_even_when_the_block_raises() -> None:
    bind(correlation_id="outer")

    with pytest.raises(KeyError), log_context(correlation_id="inner"):
        raise KeyError("x")

    assert get_context() == {"correlation_id": "outer"}


def test_bind_none_removes_a_field() -> None:
    bind(correlation_id="a", chunk_id="b")

    bind(chunk_id=None)

    assert get_context() == {"correlation_id": "a"}


def test_binding_a_reserved_field_is_rejected() -> None:
    with pytest.raises(ValueError, match="message"):
        bind(message="shadow")


def test_xray_trace_id_is_read_from_the_environment_per_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_logging("ingest")
    log = get_logger("t")

    monkeypatch.setenv("_X_AMZN_TRACE_ID", TRACE_HEADER)
    log.info("first invocation")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-00000000-111111111111111111111111;Sampled=0")
    log.info("second invocation")

    first, second = json_lines(capsys.readouterr().out)
    assert first["xray_trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert second["xray_trace_id"] == "1-00000000-111111111111111111111111"


def test_configuring_twice_keeps_one_handler_and_the_latest_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    before = len(root.handlers)

    configure_logging("first")
    configure_logging("second")
    get_logger("t").info("once")

    assert len(root.handlers) == before + 1
    (line,) = json_lines(capsys.readouterr().out)
    assert line["service"] == "second"


def test_stage_is_read_when_configuring(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_STAGE", "prod")
    configure_logging("cleanse")
    monkeypatch.setenv("SLUICE_STAGE", "other")

    get_logger("t").info("x")

    (line,) = json_lines(capsys.readouterr().out)
    assert line["stage"] == "prod"


def test_level_defaults_to_env_log_level(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "warning")
    configure_logging("cleanse")
    log = get_logger("t")

    log.info("dropped")
    log.warning("kept")

    assert [line["message"] for line in json_lines(capsys.readouterr().out)] == ["kept"]


def test_explicit_level_wins_over_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    configure_logging("cleanse", level="DEBUG")

    get_logger("t").debug("kept")

    assert [line["message"] for line in json_lines(capsys.readouterr().out)] == ["kept"]


def test_invalid_log_level_env_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "LOUD")

    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        configure_logging("cleanse")


def test_exception_lines_carry_exc_info(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("cleanse")

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("t").exception("failed")

    (line,) = json_lines(capsys.readouterr().out)
    assert line["level"] == "ERROR"
    assert "RuntimeError: boom" in line["exc_info"]


def test_in_lambda_the_runtime_handler_is_replaced(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(tmp_path))
    root = logging.getLogger()
    pytest_handlers = list(root.handlers)
    runtime_handler = logging.StreamHandler()
    root.addHandler(runtime_handler)
    try:
        configure_logging("cleanse")
        get_logger("t").info("x")

        assert runtime_handler not in root.handlers
        assert len(root.handlers) == 1
        assert len(json_lines(capsys.readouterr().out)) == 1
    finally:
        for handler in pytest_handlers:
            root.addHandler(handler)
