"""Observability for every Lambda: JSON logs, EMF metrics, tracing, and the Chalice middleware.

Import-light on purpose: the X-Ray SDK is imported only when a trace is actually recorded.
"""

from __future__ import annotations

from sluice.observability.logs import (
    bind,
    configure_logging,
    get_context,
    get_logger,
    log_context,
)
from sluice.observability.metrics import (
    Metrics,
    add_metric,
    configure_metrics,
    default_metrics,
    flush_metrics,
    set_dimensions,
)
from sluice.observability.middleware import install
from sluice.observability.tracing import (
    NoopTracer,
    Tracer,
    XRayTracer,
    get_tracer,
    set_tracer,
    tracing_enabled,
)

__all__ = [
    "Metrics",
    "NoopTracer",
    "Tracer",
    "XRayTracer",
    "add_metric",
    "bind",
    "configure_logging",
    "configure_metrics",
    "default_metrics",
    "flush_metrics",
    "get_context",
    "get_logger",
    "get_tracer",
    "install",
    "log_context",
    "set_dimensions",
    "set_tracer",
    "tracing_enabled",
]
