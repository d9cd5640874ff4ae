"""Whole-pipeline runs on the local runtime, metered: throughput, requests, handler time.

Uses `sluice_tools.local.runtime.LocalRuntime` as `sluice local run` does (deploy, upload,
wait until drained). Before the data plane starts, each deployed function gets
`AWS_SDK_UA_APP_ID=<app>.<handler>` on the emulator, so its requests can be told apart.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.meter import Meter, Tally
from benchmarks.synthetic import write_orders

# Requests the event source mapping (Lambda's poller) makes on the queue it reads.
POLLER_OPERATIONS = frozenset(
    {
        "ReceiveMessage",
        "DeleteMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibility",
        "ChangeMessageVisibilityBatch",
    }
)
INTERNAL_QUEUE_MARK = "-rt-"  # the runtime's own queues standing in for S3/SNS → Lambda


@dataclass
class FunctionUse:
    """Invocations and handler time of one function in one window."""

    invocations: int = 0
    failures: int = 0
    duration_ms: float = 0.0  # wall time at the emulator
    cpu_ms: float = 0.0  # CPU time of the function's worker process
    memory_mb: int = 128  # as deployed


@dataclass
class RunFigures:
    """One metered window: `records` uploaded, drained (or not) after `seconds`."""

    label: str
    records: int
    file_bytes: int
    seconds: float
    drained: bool
    chunk_max_records: int | None
    functions: dict[str, FunctionUse] = field(default_factory=dict)  # caller id → use
    tallies: dict[tuple[str, str, str, str], Tally] = field(default_factory=dict)
    pollers: dict[str, str] = field(default_factory=dict)  # queue name → caller id
    ledger_status: str = "unknown"
    runtime_cpu_s: float = 0.0  # CPU of this process: moto, the pollers (and the meter)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def caller_id(function_name: str, stage: str) -> str:
    """`sluice-consumer-warehouse-local-consume` → `consumer-warehouse.consume`."""
    app, _, handler = function_name.partition(f"-{stage}-")
    return f"{app.removeprefix('sluice-')}.{handler}"


def make_runtime(state_dir: Path, root: Path, extra_env: dict[str, str], say: Any) -> Any:
    """A LocalRuntime whose functions announce themselves and whose invocations are timed."""
    from sluice_tools.local.runtime import LocalRuntime, Options

    class MeteredRuntime(LocalRuntime):
        uses: dict[str, FunctionUse]
        _uses_lock: threading.Lock

        def take_over(self) -> list[str]:
            self.uses = {}
            self._uses_lock = threading.Lock()
            lam = self.client("lambda")
            stage = self.options.stage
            for page in lam.get_paginator("list_functions").paginate():
                for fn in page["Functions"]:
                    variables = dict((fn.get("Environment") or {}).get("Variables") or {})
                    variables["AWS_SDK_UA_APP_ID"] = caller_id(fn["FunctionName"], stage)
                    lam.update_function_configuration(
                        FunctionName=fn["FunctionName"], Environment={"Variables": variables}
                    )
            return super().take_over()

        def _build_pools(self) -> None:
            super()._build_pools()
            for name, pool in self.pools.items():
                pool.invoke = self._timed(name, pool.invoke)  # type: ignore[method-assign,assignment]

        def _timed(self, name: str, invoke: Callable[[Any], Any]) -> Callable[[Any], Any]:
            caller = caller_id(name, self.options.stage)
            memory = self.topology.functions[name].memory_mb

            def timed(event: Any) -> Any:
                outcome = invoke(event)
                with self._uses_lock:
                    use = self.uses.setdefault(caller, FunctionUse(memory_mb=memory))
                    use.invocations += 1
                    use.failures += 0 if outcome.ok else 1
                    use.duration_ms += outcome.duration_ms
                    use.cpu_ms += outcome.cpu_ms
                return outcome

            return timed

        def take_uses(self) -> dict[str, FunctionUse]:
            with self._uses_lock:
                uses, self.uses = self.uses, {}
            return uses

    options = Options(
        state_dir=state_dir, root=root, console=False, schedules=False, extra_env=extra_env
    )
    return MeteredRuntime(options, say=say)


def poller_queues(runtime: Any) -> dict[str, str]:
    """Queue name → the caller id of the function whose mapping (or stand-in) polls it."""
    stage = runtime.options.stage
    return {
        url.rsplit("/", 1)[-1]: caller_id(function, stage)
        for url, function in runtime.watched.items()
    }


def metered_run(
    runtime: Any,
    meter: Meter | None,
    records: int,
    label: str,
    chunk_max_records: int | None,
    timeout_s: float,
    say: Callable[[str], None],
) -> RunFigures:
    """Upload `records` synthetic orders as one object and wait until the pipeline drains.

    With a `meter` (installed), the window's requests are counted; without, none are.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"bench-{label}.jsonl"
        size = write_orders(path, records)
        runtime.take_uses()
        if meter is not None:
            meter.reset()
        say(f"  {label}: {records:,} records ({size / 1e6:.1f} MB) uploading ...")
        started, cpu_started = time.monotonic(), time.process_time()
        runtime.upload([(path, f"incoming/order/{path.name}")])
        drained = runtime.wait_drained(timeout_s)
        seconds = time.monotonic() - started
        runtime_cpu_s = time.process_time() - cpu_started
    figures = RunFigures(
        label=label,
        records=records,
        file_bytes=size,
        seconds=seconds,
        drained=drained,
        chunk_max_records=chunk_max_records,
        functions=runtime.take_uses(),
        tallies=meter.snapshot() if meter is not None else {},
        pollers=poller_queues(runtime),
        runtime_cpu_s=runtime_cpu_s,
    )
    state = "drained" if drained else "NOT drained"
    say(f"  {label}: {state} after {seconds:.1f} s ({figures.records_per_second:,.0f} records/s)")
    return figures


def ledger_statuses(runtime: Any, root: Path) -> dict[str, str]:
    """Ledger status per uploaded source (object key's file name) → balanced, ..."""
    from sluice_tools.ledger import ledger_report
    from sluice_tools.ledger.command import repo_sinks

    report = ledger_report(
        runtime.names,
        sinks=repo_sinks(root),
        dynamodb=runtime.client("dynamodb"),
        sqs=runtime.client("sqs"),
    )
    statuses: dict[str, str] = {}
    for flow in report.to_dict()["correlations"]:
        name = str(flow.get("source") or "").rsplit("/", 1)[-1]
        statuses[name] = f"{flow['status']} (read {flow['read']})"
    return statuses
