"""CloudWatch metrics as Embedded Metric Format (EMF) lines on stdout, one per invocation.

Owns a per-invocation accumulator and the EMF limits; it never calls CloudWatch itself.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from sluice.errors import ConfigError

DEFAULT_NAMESPACE = "Sluice"
NAMESPACE_ENV = "SLUICE_METRICS_NAMESPACE"

# Limits from the EMF specification: a MetricDirective holds at most 100 MetricDefinitions,
# a DimensionSet at most 30 keys, and a metric's value array at most 100 values.
MAX_METRICS_PER_BLOB = 100
MAX_DIMENSIONS = 30
MAX_VALUES_PER_METRIC = 100

# The CloudWatch StandardUnit list, which EMF's `Unit` must come from.
UNITS = frozenset(
    {
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    }
)

_DEFAULT_DIMENSION_KEYS = ("service", "stage")


@dataclass
class _Metric:
    unit: str
    values: list[float] = field(default_factory=list)


class Metrics:
    """Collects metrics for one invocation and writes them as EMF on `flush`.

    Values added under one name are kept as a list (CloudWatch computes the statistics).
    Dimensions are `service` and `stage` (each only when known) plus `set_dimensions`.

    `flush` normally writes one line. EMF caps a blob at 100 metric names and a metric at
    100 values, so beyond either it writes further blobs (the 101st name onwards, or values
    101 onwards), each a complete, valid document; CloudWatch aggregates them as one.
    """

    def __init__(
        self,
        *,
        service: str | None = None,
        stage: str | None = None,
        namespace: str | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.service = service
        self.stage = stage
        self.namespace = _validate_namespace(namespace) if namespace is not None else None
        self._stream = stream
        self._metrics: dict[str, _Metric] = {}
        self._dimensions: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, name: str, value: float = 1.0, unit: str = "Count") -> None:
        """Record `value` for metric `name`. Raises ValueError on an invalid name/unit/value."""
        if unit not in UNITS:
            raise ValueError(f"unknown metric unit {unit!r}: use a CloudWatch unit such as Count")
        if not isinstance(name, str) or not 1 <= len(name) <= 255 or name == "_aws":
            raise ValueError(f"invalid metric name {name!r}: use 1-255 characters")
        finite = isinstance(value, int | float) and math.isfinite(value)
        if isinstance(value, bool) or not finite:
            raise ValueError(f"metric {name!r} needs a finite number, got {value!r}")
        with self._lock:
            if name in _DEFAULT_DIMENSION_KEYS or name in self._dimensions:
                raise ValueError(f"metric name {name!r} is already a dimension name")
            metric = self._metrics.get(name)
            if metric is None:
                metric = self._metrics[name] = _Metric(unit)
            elif metric.unit != unit:
                raise ValueError(f"metric {name!r} was added as {metric.unit}, not {unit}")
            metric.values.append(value)

    def set_dimensions(self, dimensions: Mapping[str, str]) -> None:
        """Replace the extra dimensions (added to service and stage) until the next flush.

        Raises `ValueError` for too many dimensions, an invalid or reserved name, a blank
        or non-ASCII value, or a name already a metric's.
        """
        if len(dimensions) + len(_DEFAULT_DIMENSION_KEYS) > MAX_DIMENSIONS:
            raise ValueError(
                f"{len(dimensions)} dimensions given: EMF allows {MAX_DIMENSIONS} per set, "
                f"including {', '.join(_DEFAULT_DIMENSION_KEYS)}"
            )
        for key, value in dimensions.items():
            if not _is_cloudwatch_text(key, 255) or key.startswith(":"):
                raise ValueError(f"invalid dimension name {key!r}")
            if key in _DEFAULT_DIMENSION_KEYS or key == "_aws":
                raise ValueError(f"dimension name {key!r} is reserved")
            if not _is_cloudwatch_text(value, 1024):
                raise ValueError(f"dimension {key!r} needs a non-blank ASCII string value")
        with self._lock:
            clashes = set(dimensions).intersection(self._metrics)
            if clashes:
                raise ValueError(f"dimension name(s) already metric names: {sorted(clashes)}")
            self._dimensions = dict(dimensions)

    def blobs(self, timestamp_ms: int | None = None) -> list[dict[str, Any]]:
        """The EMF documents `flush` would write, without clearing anything."""
        with self._lock:
            metrics = {name: _Metric(m.unit, list(m.values)) for name, m in self._metrics.items()}
            extra = dict(self._dimensions)
        if not metrics:
            return []
        if timestamp_ms is None:
            timestamp_ms = int(time.time() * 1000)
        dimensions = self._dimension_values(extra)
        directive_base = {"Namespace": self._namespace(), "Dimensions": [list(dimensions)]}
        blobs: list[dict[str, Any]] = []
        for names in _chunks(list(metrics), MAX_METRICS_PER_BLOB):
            longest = max(len(metrics[name].values) for name in names)
            for start in range(0, longest, MAX_VALUES_PER_METRIC):
                members: dict[str, Any] = {}
                definitions = []
                for name in names:
                    values = metrics[name].values[start : start + MAX_VALUES_PER_METRIC]
                    if values:
                        members[name] = values[0] if len(values) == 1 else values
                        definitions.append({"Name": name, "Unit": metrics[name].unit})
                directive = {**directive_base, "Metrics": definitions}
                aws = {"Timestamp": timestamp_ms, "CloudWatchMetrics": [directive]}
                blobs.append({"_aws": aws, **dimensions, **members})
        return blobs

    def flush(self) -> int:
        """Write the EMF line(s) to stdout and start afresh. Returns the number of lines."""
        documents = self.blobs()
        self.clear()
        if not documents:
            return 0
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write("".join(json.dumps(doc, separators=(",", ":")) + "\n" for doc in documents))
        stream.flush()
        return len(documents)

    def clear(self) -> None:
        """Forget the metrics and extra dimensions collected so far."""
        with self._lock:
            self._metrics = {}
            self._dimensions = {}

    def _namespace(self) -> str:
        if self.namespace is not None:
            return self.namespace
        from_env = os.environ.get(NAMESPACE_ENV)
        if not from_env:
            return DEFAULT_NAMESPACE
        try:
            return _validate_namespace(from_env)
        except ValueError as exc:
            raise ConfigError(f"invalid {NAMESPACE_ENV}: {exc}") from exc

    def _dimension_values(self, extra: Mapping[str, str]) -> dict[str, str]:
        stage = self.stage or os.environ.get("SLUICE_STAGE")
        defaults = {k: v for k, v in (("service", self.service), ("stage", stage)) if v}
        return {**defaults, **extra}


_default = Metrics()


def default_metrics() -> Metrics:
    """The process-wide accumulator that the middleware flushes after every invocation."""
    return _default


def configure_metrics(service: str, *, namespace: str | None = None) -> None:
    """Set the `service` dimension (and optionally the namespace) of the default accumulator."""
    _default.service = service
    if namespace is not None:
        _default.namespace = _validate_namespace(namespace)


def add_metric(name: str, value: float = 1, unit: str = "Count") -> None:
    """Record a value on the default accumulator; see `Metrics.add`."""
    _default.add(name, value, unit)


def set_dimensions(dimensions: Mapping[str, str]) -> None:
    """Set extra dimensions on the default accumulator for this invocation.

    Raises `ValueError` for too many dimensions, an invalid or reserved name, a blank
    or non-ASCII value, or a name already a metric's.
    """
    _default.set_dimensions(dimensions)


def flush_metrics() -> int:
    """Write the default accumulator's EMF line(s) to stdout; nothing if nothing was added."""
    return _default.flush()


def _is_cloudwatch_text(text: object, max_length: int) -> bool:
    # CloudWatch names and values: ASCII, at least one non-blank character, bounded length.
    return (
        isinstance(text, str)
        and text.isascii()
        and bool(text.strip())
        and len(text) <= max_length
        and text.isprintable()
    )


def _validate_namespace(namespace: str) -> str:
    if not _is_cloudwatch_text(namespace, 255) or namespace.startswith(":"):
        raise ValueError(f"invalid metrics namespace {namespace!r}")
    return namespace


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
