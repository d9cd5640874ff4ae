"""Requests per 1,000 records and cost per million records, from a metered run and prices.json.

Counted: each function's own calls, and the SQS calls of the event source mapping that feeds
it (receives that returned messages, deletes). Not counted: the runtime's stand-in queues for
S3/SNS → Lambda (free on AWS), empty polls (wall-clock dependent), the harness's own calls.

Lambda GB-seconds, two ways. At the emulator: the invocations' wall time, which on this
machine is mostly moto serving the calls on the same two cores (an upper bound). Modelled:
the worker's measured CPU time plus, for each AWS call the function made, the assumed wait of
`prices.json` `lambda.request_wait_ms`. Totals use the modelled figure; both are reported.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.meter import Tally
from benchmarks.pipeline import INTERNAL_QUEUE_MARK, POLLER_OPERATIONS, RunFigures
from sluice_tools.stages import PIPELINE_STAGES, consumer_stage

PRICES = Path(__file__).resolve().parent / "prices.json"
S3_PUT_CLASS = frozenset(
    {
        "PutObject",
        "CopyObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "PutObjectTagging",
        "ListObjects",
        "ListObjectsV2",
        "ListBuckets",
    }
)
S3_FREE = frozenset({"DeleteObject", "DeleteObjects", "AbortMultipartUpload"})
LANDING_TO_WAREHOUSE = (*PIPELINE_STAGES, consumer_stage("warehouse"))


def worker_caller(caller: str) -> str:
    """`app.handler` for a worker's app id `sluice-fn.<pid>` (the local runtime overrides the
    function's own `AWS_SDK_UA_APP_ID` with it), found by pid in the pool's registry of the
    workers this process started; any other caller as it is."""
    from sluice_tools.local.pool import function_of
    from sluice_tools.local.worker import APP_ID_PREFIX

    pid = caller.removeprefix(APP_ID_PREFIX)
    function = function_of(int(pid)) if caller != pid and pid.isdigit() else None
    if function is None:
        return caller
    # `<prefix>-<app>-<stage>-<handler>`: stages and handler names have no dash.
    app, _stage, handler = function.rsplit("-", 2)
    return f"{app.split('-', 1)[1]}.{handler}"


def load_prices(path: Path = PRICES) -> dict[str, Any]:
    prices: dict[str, Any] = json.loads(path.read_text())
    return prices


@dataclass
class StageCost:
    """One app's (stage's) requests and money for a run."""

    app: str
    requests: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # svc:op
    dollars: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # by item
    invocations: int = 0
    gb_seconds: float = 0.0  # modelled: CPU + calls x assumed wait
    gb_seconds_at_emulator: float = 0.0  # wall time against moto
    gb_seconds_cpu: float = 0.0  # CPU time alone (a lower bound)

    @property
    def total_requests(self) -> float:
        return sum(self.requests.values())

    @property
    def total_dollars(self) -> float:
        return sum(self.dollars.values())

    def total_dollars_with(self, gb_seconds: float, per_gb_second: float, per_m: float) -> float:
        """The total with GB-seconds priced from another measure (e.g. wall time at moto)."""
        return self.total_dollars - self.dollars["lambda GB-s"] + gb_seconds * per_gb_second * per_m


@dataclass
class Excluded:
    empty_polls: int = 0
    emulation: int = 0  # stand-in queues for S3/SNS → Lambda
    harness: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def attribute(figures: RunFigures) -> tuple[dict[str, dict[str, Tally]], Excluded]:
    """Tallies by app then `service:Operation`; what is left out, apart."""
    by_app: dict[str, dict[str, Tally]] = defaultdict(dict)
    excluded = Excluded()
    for (caller, service, operation, resource), tally in figures.tallies.items():
        owner: str | None = None
        if caller != "runtime":
            owner = worker_caller(caller)
        elif service == "sqs" and operation in POLLER_OPERATIONS and resource in figures.pollers:
            if INTERNAL_QUEUE_MARK in resource:
                excluded.emulation += tally.requests
                continue
            owner = figures.pollers[resource]
            if tally.empty:
                excluded.empty_polls += tally.empty
                tally = Tally(
                    requests=tally.requests - tally.empty,
                    units=max(0, tally.units - tally.empty),
                )
        if owner is None:
            excluded.harness[f"{service}:{operation}"] += tally.requests
            continue
        app = owner.split(".", 1)[0]
        by_app[app].setdefault(f"{service}:{operation}", Tally()).add(tally)
    return by_app, excluded


def memory_mb(root: Path, app: str, handler: str, stage: str) -> int | None:
    """lambda_memory_size for `handler` of `app` in `stage`, from the app's deploy.yaml."""
    from sluice_tools.deploy.declaration import DeclarationError, load_declaration

    folder = root / (
        f"consumers/{app.removeprefix('consumer-')}" if app.startswith("consumer-") else app
    )
    try:
        return load_declaration(folder).settings(stage, handler).memory
    except (OSError, DeclarationError):
        return None


def costs(
    figures: RunFigures, prices: dict[str, Any], root: Path, memory_stage: str
) -> tuple[dict[str, StageCost], Excluded, dict[str, int]]:
    """Per app: requests per 1,000 records and dollars per million records."""
    per_k = 1000 / figures.records
    per_m = 1_000_000 / figures.records
    by_app, excluded = attribute(figures)
    result: dict[str, StageCost] = {}
    memories: dict[str, int] = {}
    for app, tallies in by_app.items():
        stage = result.setdefault(app, StageCost(app))
        for key, tally in tallies.items():
            service, operation = key.split(":", 1)
            stage.requests[key] += tally.requests * per_k
            stage.dollars[service] += _dollars(service, operation, tally, prices) * per_m
    waits = call_wait_ms(figures, prices)
    for caller, use in figures.functions.items():
        app, _, handler = caller.partition(".")
        stage = result.setdefault(app, StageCost(app))
        memory = memory_mb(root, app, handler, memory_stage) or use.memory_mb
        memories[caller] = memory
        gb = memory / 1024
        gb_s = (use.cpu_ms + waits.get(caller, 0.0)) / 1000 * gb
        stage.invocations += use.invocations
        stage.gb_seconds += gb_s
        stage.gb_seconds_at_emulator += use.duration_ms / 1000 * gb
        stage.gb_seconds_cpu += use.cpu_ms / 1000 * gb
        stage.requests["lambda:Invoke"] += use.invocations * per_k
        lam = prices["lambda"]
        stage.dollars["lambda requests"] += (
            use.invocations * lam["per_million_requests"] / 1e6 * per_m
        )
        stage.dollars["lambda GB-s"] += gb_s * lam["per_gb_second"] * per_m
    return result, excluded, memories


def call_wait_ms(figures: RunFigures, prices: dict[str, Any]) -> dict[str, float]:
    """Per function (caller id): its own AWS calls times the assumed wait per call."""
    table = prices["lambda"]["request_wait_ms"]
    waits: dict[str, float] = defaultdict(float)
    for (caller, service, _operation, _resource), tally in figures.tallies.items():
        if caller in figures.functions:
            waits[caller] += tally.requests * float(table.get(service, table["default"]))
    return waits


def _dollars(service: str, operation: str, tally: Tally, prices: dict[str, Any]) -> float:
    if service == "sqs":
        return float(tally.units * prices["sqs"]["per_million_requests"] / 1e6)
    if service == "sns":
        return float(tally.units * prices["sns"]["per_million_publishes"] / 1e6)
    if service == "dynamodb":
        ddb = prices["dynamodb"]
        return float(
            tally.wru * ddb["per_million_write_request_units"] / 1e6
            + tally.rru * ddb["per_million_read_request_units"] / 1e6
        )
    if service == "events":
        return float(tally.units * prices["events"]["per_million_events"] / 1e6)
    if service == "s3":
        if operation in S3_FREE:
            return 0.0
        s3 = prices["s3"]
        rate = (
            s3["per_thousand_put_copy_post_list"]
            if operation in S3_PUT_CLASS
            else s3["per_thousand_get_and_other"]
        )
        return float(tally.requests * rate / 1000)
    return 0.0


def path_total(stages: dict[str, StageCost], apps: tuple[str, ...] | None) -> tuple[float, float]:
    """(requests per 1,000 records, dollars per million records) over `apps` (None: all)."""
    chosen = [s for a, s in stages.items() if apps is None or a in apps]
    return sum(s.total_requests for s in chosen), sum(s.total_dollars for s in chosen)


def path_total_at_emulator(
    stages: dict[str, StageCost],
    apps: tuple[str, ...] | None,
    prices: dict[str, Any],
    records: int,
) -> float:
    """Dollars per million records over `apps` with GB-seconds from wall time at moto."""
    per_m = 1_000_000 / records
    rate = prices["lambda"]["per_gb_second"]
    return sum(
        s.total_dollars_with(s.gb_seconds_at_emulator, rate, per_m)
        for a, s in stages.items()
        if apps is None or a in apps
    )
