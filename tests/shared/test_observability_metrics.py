"""EMF metric lines: structure per the CloudWatch specification, limits, validation."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sluice.errors import ConfigError
from sluice.observability import (
    Metrics,
    add_metric,
    configure_metrics,
    default_metrics,
    flush_metrics,
    set_dimensions,
)
from sluice.observability.metrics import UNITS

STARTED_MS = int(time.time() * 1000)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SLUICE_STAGE", "dev")
    monkeypatch.delenv("SLUICE_METRICS_NAMESPACE", raising=False)
    default = default_metrics()
    monkeypatch.setattr(default, "service", default.service)
    monkeypatch.setattr(default, "namespace", default.namespace)
    default.clear()
    yield
    default.clear()


def assert_valid_emf(doc: dict[str, Any]) -> None:
    """The rules of the EMF specification that a document can break."""
    aws = doc["_aws"]
    assert isinstance(aws["Timestamp"], int)
    # Milliseconds since the epoch, taken while the tests ran (not seconds, not a constant).
    assert STARTED_MS <= aws["Timestamp"] <= time.time() * 1000
    assert aws["CloudWatchMetrics"]
    for directive in aws["CloudWatchMetrics"]:
        assert isinstance(directive["Namespace"], str)
        assert 1 <= len(directive["Namespace"]) <= 255
        assert isinstance(directive["Dimensions"], list)
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 30
            for key in dimension_set:
                assert isinstance(doc[key], str)
        assert 1 <= len(directive["Metrics"]) <= 100
        for definition in directive["Metrics"]:
            assert set(definition) <= {"Name", "Unit", "StorageResolution"}
            assert definition["Unit"] in UNITS
            value = doc[definition["Name"]]
            values = value if isinstance(value, list) else [value]
            assert 1 <= len(values) <= 100
            assert all(isinstance(v, int | float) for v in values)


def emitted(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_flush_writes_one_valid_emf_line_aggregated_by_name() -> None:
    out = io.StringIO()
    metrics = Metrics(service="cleanse", stream=out)

    metrics.add("RecordsCleansed", 3)
    metrics.add("RecordsCleansed", 2)
    metrics.add("ChunkLatency", 12.5, unit="Milliseconds")
    assert metrics.flush() == 1

    (doc,) = emitted(out)
    assert_valid_emf(doc)
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Sluice"
    assert directive["Dimensions"] == [["service", "stage"]]
    assert directive["Metrics"] == [
        {"Name": "RecordsCleansed", "Unit": "Count"},
        {"Name": "ChunkLatency", "Unit": "Milliseconds"},
    ]
    assert (doc["service"], doc["stage"]) == ("cleanse", "dev")
    assert doc["RecordsCleansed"] == [3, 2]
    assert doc["ChunkLatency"] == 12.5


def test_nothing_is_written_when_nothing_was_added() -> None:
    out = io.StringIO()

    assert Metrics(service="cleanse", stream=out).flush() == 0
    assert out.getvalue() == ""


def test_flush_starts_a_new_invocation() -> None:
    out = io.StringIO()
    metrics = Metrics(service="cleanse", stream=out)
    metrics.add("A")
    metrics.set_dimensions({"record_type": "order"})
    metrics.flush()

    metrics.add("B")
    metrics.flush()

    first, second = emitted(out)
    assert ("A" in first, "A" in second) == (True, False)
    assert ("record_type" in first, "record_type" in second) == (True, False)


def test_more_than_100_metric_names_are_split_into_valid_blobs() -> None:
    out = io.StringIO()
    metrics = Metrics(service="cleanse", stream=out)
    names = [f"Metric{i:03d}" for i in range(250)]
    for name in names:
        metrics.add(name)

    assert metrics.flush() == 3

    docs = emitted(out)
    for doc in docs:
        assert_valid_emf(doc)
    per_blob = [len(doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]) for doc in docs]
    assert per_blob == [100, 100, 50]
    seen = [m["Name"] for doc in docs for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert seen == names


def test_more_than_100_values_of_one_metric_are_split_without_loss() -> None:
    out = io.StringIO()
    metrics = Metrics(service="cleanse", stream=out)
    for i in range(250):
        metrics.add("RecordBytes", i, unit="Bytes")
    metrics.add("Chunks")

    metrics.flush()

    docs = emitted(out)
    for doc in docs:
        assert_valid_emf(doc)
    values = [v for doc in docs for v in doc["RecordBytes"]]
    assert values == list(range(250))
    assert sum("Chunks" in doc for doc in docs) == 1


def test_extra_dimensions_are_in_the_set_and_at_top_level() -> None:
    out = io.StringIO()
    metrics = Metrics(service="router", stream=out)
    metrics.set_dimensions({"record_type": "order"})
    metrics.add("Routed")

    metrics.flush()

    (doc,) = emitted(out)
    assert_valid_emf(doc)
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["service", "stage", "record_type"]
    ]
    assert doc["record_type"] == "order"


def test_thirty_dimensions_in_a_set_are_accepted_and_more_are_rejected() -> None:
    metrics = Metrics(service="router", stream=io.StringIO())
    metrics.set_dimensions({f"d{i}": "v" for i in range(28)})  # 30 with service and stage

    with pytest.raises(ValueError, match="30"):
        metrics.set_dimensions({f"d{i}": "v" for i in range(29)})


@pytest.mark.parametrize("unit", ["count", "Furlongs", "ms", ""])
def test_unknown_unit_is_rejected(unit: str) -> None:
    with pytest.raises(ValueError, match="unit"):
        Metrics().add("X", 1, unit=unit)


def test_one_name_cannot_change_unit() -> None:
    metrics = Metrics()
    metrics.add("Latency", 1, unit="Milliseconds")

    with pytest.raises(ValueError, match="Milliseconds"):
        metrics.add("Latency", 1, unit="Seconds")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "3"])
def test_non_numeric_or_non_finite_values_are_rejected(value: Any) -> None:
    with pytest.raises(ValueError, match="finite number"):
        Metrics().add("X", value)


def test_a_metric_cannot_share_a_name_with_a_dimension() -> None:
    metrics = Metrics()
    metrics.set_dimensions({"record_type": "order"})

    with pytest.raises(ValueError, match="dimension"):
        metrics.add("record_type")
    with pytest.raises(ValueError, match="dimension"):
        metrics.add("service")


def test_namespace_comes_from_the_environment_at_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    metrics = Metrics(service="cleanse", stream=out)
    metrics.add("A")
    monkeypatch.setenv("SLUICE_METRICS_NAMESPACE", "Sluice/Test")

    metrics.flush()

    (doc,) = emitted(out)
    assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Sluice/Test"


def test_invalid_namespace_in_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = Metrics(stream=io.StringIO())
    metrics.add("A")
    monkeypatch.setenv("SLUICE_METRICS_NAMESPACE", "x" * 256)

    with pytest.raises(ConfigError, match="SLUICE_METRICS_NAMESPACE"):
        metrics.flush()


def test_unknown_service_and_stage_are_left_out_of_the_dimensions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SLUICE_STAGE")
    out = io.StringIO()
    metrics = Metrics(stream=out)
    metrics.add("A")

    metrics.flush()

    (doc,) = emitted(out)
    assert_valid_emf(doc)
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]


def test_module_functions_write_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    configure_metrics("ingest")
    set_dimensions({"source": "s3"})
    add_metric("FilesLanded")
    add_metric("BytesLanded", 2048, unit="Bytes")

    assert flush_metrics() == 1

    (doc,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert_valid_emf(doc)
    assert (doc["service"], doc["source"]) == ("ingest", "s3")
    assert (doc["FilesLanded"], doc["BytesLanded"]) == (1, 2048)
