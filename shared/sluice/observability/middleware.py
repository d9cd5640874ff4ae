"""`install(app, service=...)`: the one line that puts logs, metrics and tracing on a Chalice app.

The Chalice middleware binds the invocation's context, logs one summary line and always
flushes metrics. It never imports chalice: the app is anything with `register_middleware`.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from sluice.observability.logs import configure_logging, get_logger, log_context
from sluice.observability.metrics import Metrics, configure_metrics, default_metrics
from sluice.observability.tracing import get_tracer, invocation_span

log = get_logger(__name__)

Middleware = Callable[[Any, Callable[[Any], Any]], Any]


class MiddlewareHost(Protocol):
    """The part of `chalice.Chalice` that `install` uses."""

    def register_middleware(self, func: Middleware, event_type: str = ...) -> None: ...


def install(app: MiddlewareHost, *, service: str) -> None:
    """Configure JSON logging and metrics for `service` and wrap every handler of `app`.

    Create the app with `Chalice(app_name=..., configure_logs=False)`, so Chalice adds no
    handler of its own. Call once per app; a Lambda process runs one app, so the first
    invocation through this middleware is the process's cold start.
    """
    configure_logging(service)
    configure_metrics(service)
    app.register_middleware(_ObservabilityMiddleware(), "all")


class _ObservabilityMiddleware:
    """Per invocation: bind context, time the handler, log one line, flush metrics."""

    def __init__(self) -> None:
        self._cold = True
        self._lock = threading.Lock()

    def __call__(self, event: Any, get_response: Callable[[Any], Any]) -> Any:
        cold_start = self._take_cold_start()
        context = _lambda_context(event)
        metrics = default_metrics()
        metrics.add("Invocations")
        if cold_start:
            metrics.add("ColdStart")
        _patch_clients()
        # Entering a fresh log_context drops whatever the previous invocation bound
        # (correlation_id, chunk_id, record_id) and restores the outer context afterwards.
        with log_context(
            request_id=getattr(context, "aws_request_id", None),
            function_name=getattr(context, "function_name", None),
            cold_start=cold_start,
            correlation_id=None,
            chunk_id=None,
            record_id=None,
        ):
            started = time.perf_counter()
            try:
                with invocation_span(
                    getattr(context, "function_name", None),
                    getattr(context, "aws_request_id", None),
                ):
                    response = get_response(event)
            except Exception:
                metrics.add("Errors")
                log.error("invocation complete", extra={"duration_ms": _ms(started)}, exc_info=True)
                raise
            else:
                log.info("invocation complete", extra={"duration_ms": _ms(started)})
                return response
            finally:
                _flush(metrics)
                if cold_start:
                    _freeze_long_lived()

    def _take_cold_start(self) -> bool:
        with self._lock:
            cold, self._cold = self._cold, False
            return cold


def _freeze_long_lived() -> None:
    """After the first invocation, keep what is alive out of the garbage collector's scans.

    By then the process holds what lives as long as it does: modules, boto3 clients and
    their service models (~100k objects). CPython's full collections walk all of them again
    and again while records are processed; frozen, they are never walked (nor freed: they
    live until the process ends anyway). Measured on a local run of 100k records: the
    workers spent ~6 s of ~58 CPU-seconds in the collector, ~4.5 s of it in full
    collections (docs/decisions.md). Only in a Lambda instance (`AWS_LAMBDA_FUNCTION_NAME`
    set): a test process running handlers in-process keeps its collector as it is.
    """
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        gc.freeze()


def _lambda_context(event: Any) -> Any:
    # HTTP middleware gets a chalice Request, whose `.context` is API Gateway's request
    # context; the Lambda context is on `.lambda_context`. Other events carry it as `.context`.
    context = getattr(event, "lambda_context", None)
    return context if context is not None else getattr(event, "context", None)


def _patch_clients() -> None:
    try:
        get_tracer().patch_clients()
    except Exception:
        log.warning("tracing setup failed; continuing untraced", exc_info=True)


def _flush(metrics: Metrics) -> None:
    # Losing a metrics line must not fail (and so retry) a batch that was processed.
    try:
        metrics.flush()
    except Exception:
        log.exception("could not write the metrics line")


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
