"""The chaos suite: seeded runs of the whole local pipeline under faults, counted at the sinks.

`python -m sluice_tools.chaos --seeds 3 --records 10000` (or `nox -s chaos -- ...`). Per seed
a fresh local runtime gets N generated orders in several objects, every order id unique, while
it suffers faults outside the functions' code: API faults at the emulator on every function
(throttles, 5xx before and after a write, a SIGKILL after a write: `local/apifaults.py`),
workers SIGKILLed mid-invocation, duplicate S3 notifications sent to ingest's internal queue
inside and well outside the runtime's duplicate window, re-uploads of identical bytes, and one
key overwritten with other bytes 1.5 s after it landed (both versions expected in full).

Then the faults stop, the pipeline drains, and every generated order is counted where it
ends, never through the ledger: curated objects (order ids in the gzip JSON Lines), index
items (`order#<id>` versions) and alerts on a tap queue subscribed to the alerts topic. Per
sink: expected, lost, doubled, dead-lettered (in a DLQ or failures queue); then the ledger's
verdict and whether it agrees with the sinks (balanced iff nothing lost, doubled or dead).
Exit 1 if any seed lost, doubled or dead-lettered a record or the ledger disagreed.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import heapq
import io
import itertools
import json
import logging
import os
import random
import re
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sluice.registry import load_registry
from sluice_tools.lambda_events import s3_event
from sluice_tools.local.apifaults import SERVICES, ApiFaultPlan, ApiFaultRule

log = logging.getLogger("sluice.chaos")

ORDER_TYPE = "order"
VISIBILITY_S = 6  # SQS mappings: a failed batch comes back after this
ASYNC_RETRY_DELAYS_S = (0.5, 1.0)
OVERWRITE_AFTER_S = 1.5
ALERT_TEXT = re.compile(r"High-value order (\S+?)[:\s]")
Say = Callable[[str], None]


# --------------------------------------------------------------------------- what lands


@dataclass
class Landed:
    """One object version to upload: its key, bytes and the orders in it."""

    key: str
    body: bytes
    order_ids: list[str]
    high: set[str]


def high_threshold(root: Path) -> tuple[float, bool]:
    """The router's high-priority rule for orders: (amount, inclusive) from its type.json."""
    rule = load_registry(root / "types").get(ORDER_TYPE).routing["priority"]
    for case in rule["cases"]:
        if case.get("value") == "high":
            if "gt" in case:
                return float(case["gt"]), False
            if "gte" in case:
                return float(case["gte"]), True
    raise LookupError("the order type's routing has no gt/gte case that makes an order 'high'")


def make_orders(
    rng: random.Random, prefix: str, count: int, threshold: tuple[float, bool], high_share: float
) -> list[dict[str, Any]]:
    """`count` valid orders with unique ids `<prefix>-<n>`; about `high_share` of them high."""
    limit, inclusive = threshold
    orders = []
    for n in range(count):
        high = rng.random() < high_share
        if high:
            amount = round(rng.uniform(limit if inclusive else limit + 1, limit * 20), 2)
        else:
            amount = round(rng.uniform(1, max(1.0, limit - 1)), 2)
        stamp = datetime(2026, 11, 27, rng.randrange(24), rng.randrange(60), rng.randrange(60))
        orders.append(
            {
                "order_id": f"{prefix}-{n:06d}",
                "customer_id": f"c-{rng.randrange(100_000):05d}",
                "email": f"buyer{rng.randrange(10_000)}@example.com",
                "amount": amount,
                "currency": rng.choice(["EUR", "USD", "GBP"]),
                "created_at": stamp.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z"),
            }
        )
    return orders


def encode(orders: list[dict[str, Any]], form: str) -> bytes:
    """The orders as one object: JSON Lines, a JSON array or CSV; `.gz` forms gzipped."""
    base = form.removesuffix(".gz")
    if base == "jsonl":
        data = "".join(json.dumps(o) + "\n" for o in orders).encode("utf-8")
    elif base == "json":
        data = json.dumps(orders, indent=1).encode("utf-8")
    elif base == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(orders[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(orders)
        data = out.getvalue().encode("utf-8")
    else:
        raise ValueError(f"unknown form {form!r}")
    return gzip.compress(data, mtime=0) if form.endswith(".gz") else data


FORMS = ("jsonl", "json", "csv", "jsonl.gz")


def landing_plan(
    seed: int, records: int, objects: int, threshold: tuple[float, bool], high_share: float
) -> tuple[list[Landed], Landed, Landed]:
    """The objects of a seed's run, then the overwritten key's two versions.

    The overwritten key holds about one object's share in each version; the rest is spread
    over `objects` objects of the forms above.
    """
    rng = random.Random(seed)
    share = max(1, records // (objects + 2))
    plain_total = records - 2 * share
    prefix = f"ch{seed}"
    orders = make_orders(rng, prefix, records, threshold, high_share)
    plain, first, second = orders[:plain_total], orders[plain_total:-share], orders[-share:]
    landed = []
    for i in range(objects):
        part = plain[i * len(plain) // objects : (i + 1) * len(plain) // objects]
        form = FORMS[i % len(FORMS)]
        key = f"incoming/{ORDER_TYPE}/chaos-{seed}-{i:02d}.{form}"
        landed.append(_landed(key, part, encode(part, form), threshold))
    key = f"incoming/{ORDER_TYPE}/chaos-{seed}-overwritten.jsonl"
    return (
        landed,
        _landed(key, first, encode(first, "jsonl"), threshold),
        _landed(key, second, encode(second, "jsonl"), threshold),
    )


def _landed(
    key: str, orders: list[dict[str, Any]], body: bytes, threshold: tuple[float, bool]
) -> Landed:
    limit, inclusive = threshold
    high = {
        o["order_id"] for o in orders if o["amount"] > limit or (inclusive and o["amount"] == limit)
    }
    return Landed(key, body, [o["order_id"] for o in orders], high)


# --------------------------------------------------------------------------- the faults


# Faults that end an invocation outright (kill_after, a SIGKILL) per async function per run:
# Lambda tries an async event 3 times, so at most 2 can never exhaust an event's attempts.
ASYNC_KILLS = 1  # by kill_after, and as many again by the killer
NON_FATAL = ("throttle", "error_before", "error_after")


def fault_plan(
    seed: int,
    rate: float,
    kill_rate: float,
    sqs_functions: Iterable[str],
    async_functions: Iterable[str],
    async_rate: float,
) -> ApiFaultPlan:
    """What the emulator does to the functions' calls during a run.

    throttle, error_before and error_after on every service at `rate` per kind per call (the
    SDK retries them: they fail an invocation only when every attempt meets one).
    kill_after at `kill_rate` per call for the SQS-triggered functions (SQS redelivers up to
    the queue's maxReceiveCount): a consumer's invocation makes up to a hundred calls (a
    BatchWriteItem per 25 records), so a per-call rate like the others' would kill most of
    its invocations and exhaust maxReceiveCount. The async functions (S3- and SNS-triggered:
    ingest, alerts) make a few dozen calls where the others make hundreds, so they get
    `async_rate` for every kind, with kill_after limited to ASYNC_KILLS each: Lambda retries
    an async event only twice.
    """
    asynchronous = sorted(async_functions)
    rules = [
        ApiFaultRule(kind=kind, service=service, function=function, rate=async_rate)
        for function in asynchronous
        for kind in NON_FATAL
        for service in SERVICES
    ]
    rules += [
        ApiFaultRule(kind="kill_after", function=function, rate=async_rate, times=ASYNC_KILLS)
        for function in asynchronous
    ]
    rules += [
        ApiFaultRule(kind=kind, service=service, rate=rate)
        for kind in NON_FATAL
        for service in SERVICES
    ]
    rules += [
        ApiFaultRule(kind="kill_after", function=function, rate=kill_rate)
        for function in sorted(sqs_functions)
    ]
    plan = ApiFaultPlan(rules, seed=seed)
    plan.stop()  # on once the uploads start
    return plan


class Timeline:
    """Actions at given times (seconds from its start), run in order by one thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-timeline", daemon=True)
        self._closed = False
        self.errors: list[str] = []

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def at(self, delay_s: float, action: Callable[[], None]) -> None:
        """Run `action` `delay_s` seconds from now."""
        with self._lock:
            when = time.monotonic() + delay_s
            heapq.heappush(self._heap, (when, next(self._order), action))
        self._wake.set()

    def close_and_wait(self) -> None:
        """No new actions; returns when every scheduled one has run."""
        with self._lock:
            self._closed = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._heap:
                    if self._closed:
                        return
                    when = None
                else:
                    when = self._heap[0][0]
            wait = None if when is None else max(0.0, when - time.monotonic())
            if wait is None or wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
                continue
            with self._lock:
                _, _, action = heapq.heappop(self._heap)
            try:
                action()
            except Exception as exc:  # a fault action failing is reported, not fatal
                log.exception("chaos action failed")
                self.errors.append(f"{type(exc).__name__}: {exc}")


class Killer:
    """SIGKILLs a busy worker every 2-5 s until stopped: a function with a busy worker picked
    at random, then one of its busy workers (seeded choices; which are busy is timing).

    A function in `limits` is killed at most that many times (async functions: see
    ASYNC_KILLS); the others without limit.
    """

    def __init__(self, runtime: Any, rng: random.Random, limits: Mapping[str, int]) -> None:
        self.runtime = runtime
        self.rng = rng
        self.limits = dict(limits)
        self.killed: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-killer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(2.0, 5.0)):
            busy = {
                name: sorted(pool.busy_pids())
                for name, pool in self.runtime.pools.items()
                if self.killed[name] < self.limits.get(name, sys.maxsize)
            }
            candidates = sorted(name for name, pids in busy.items() if pids)
            if not candidates:
                continue
            name = self.rng.choice(candidates)
            pid = self.rng.choice(busy[name])
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.killed[name] += 1
            log.info("chaos: SIGKILL worker %d of %s", pid, name)


# --------------------------------------------------------------------------- one seed


@dataclass
class SinkCount:
    sink: str
    expected: int
    delivered: int  # distinct expected ids found
    lost: int  # expected, not found, not in a dead letter
    doubled: int  # found more than once
    dead: int  # expected, in a DLQ or failures queue (delivered or not: "0 in DLQs")
    unexpected: int = 0  # found though not expected (an alert for a normal order, ...)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.dead or self.unexpected)


@dataclass
class SeedResult:
    seed: int
    records: int
    objects: int
    sinks: list[SinkCount] = field(default_factory=list)
    dead_letters: dict[str, tuple[int, int]] = field(default_factory=dict)  # messages, records
    faults: list[str] = field(default_factory=list)
    fault_counts: dict[str, int] = field(default_factory=dict)
    faults_by_function: dict[str, int] = field(default_factory=dict)
    kills: Counter[str] = field(default_factory=Counter)
    notifications: Counter[str] = field(default_factory=Counter)  # duplicates sent, by kind
    uploads: Counter[str] = field(default_factory=Counter)
    ledger_status: str = "?"
    ledger_exit: int = -1
    ledger_problems: list[str] = field(default_factory=list)
    drained: bool = False
    seconds: float = 0.0
    action_errors: list[str] = field(default_factory=list)
    alerts_doubled_fail: bool = False  # alerts doubles count against the run
    logs: str = ""  # where the function logs of the run were kept
    fired: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (kind, service, op)
    # Pipeline events (issue 22): Object Delivered messages per correlation id, as a rule on
    # the stage's bus delivered them; the flows the ledger says balanced.
    delivered_events: Counter[str] = field(default_factory=Counter)
    delivered_event_ids: dict[str, set[str]] = field(default_factory=dict)
    balanced_flows: list[str] = field(default_factory=list)

    @property
    def lost_put_events(self) -> int:
        """PutEvents calls whose events were taken but whose answer never reached the function
        (a 5xx after the write, or the worker killed right after it): each may repeat one
        emission, with the same event_id (the bound the README states)."""
        return sum(
            n
            for (kind, service, operation), n in self.fired.items()
            if service == "events"
            and operation == "PutEvents"
            and kind in ("error_after", "kill_after")
        )

    @property
    def events_repeated(self) -> int:
        return sum(n - 1 for n in self.delivered_events.values() if n > 1)

    @property
    def events_ok(self) -> bool:
        """Each balanced object emitted Object Delivered, no other object did, every object's
        messages carry one event_id, and a repeat was caused by a lost PutEvents answer."""
        return (
            set(self.delivered_events) == set(self.balanced_flows)
            and all(len(ids) == 1 for ids in self.delivered_event_ids.values())
            and self.events_repeated <= self.lost_put_events
        )

    def sink_ok(self, sink: SinkCount) -> bool:
        """Alerts are at least once unless asked otherwise: a doubled alert is then no fault."""
        if sink.sink == "alerts" and not self.alerts_doubled_fail:
            return not (sink.lost or sink.dead or sink.unexpected)
        return sink.ok

    @property
    def sinks_balanced(self) -> bool:
        return all(self.sink_ok(s) for s in self.sinks)

    @property
    def ledger_agrees(self) -> bool:
        return (self.ledger_exit == 0) == self.sinks_balanced

    @property
    def ok(self) -> bool:
        return self.drained and self.sinks_balanced and self.ledger_agrees and self.events_ok


@dataclass
class ChaosOptions:
    records: int = 10_000
    objects: int = 8
    rate: float = 0.01  # per kind, per worker call
    kill_rate: float = 0.002  # kill_after per call of the SQS-triggered functions
    async_rate: float = 0.05  # per kind, per call of the S3- and SNS-triggered functions
    high_share: float = 0.05
    kills: bool = True
    drain_timeout_s: float = 900
    alerts_exactly_once: bool = False
    state_dir: Path | None = None
    root: Path | None = None


def run_seed(seed: int, options: ChaosOptions, say: Say) -> SeedResult:
    """One chaos run: a fresh runtime, the landing plan under faults, then the counts."""
    from sluice_tools.deploy.target import repo_root
    from sluice_tools.local.delivery import S3_DUPLICATE_WINDOW_S
    from sluice_tools.local.runtime import LocalRuntime, Options

    root = options.root or repo_root()
    rng = random.Random(seed)
    threshold = high_threshold(root)
    landed, first, second = landing_plan(
        seed, options.records, options.objects, threshold, options.high_share
    )
    result = SeedResult(seed, options.records, len(landed) + 2)
    result.alerts_doubled_fail = options.alerts_exactly_once
    plan = ApiFaultPlan(seed=seed)
    plan.stop()
    runtime = LocalRuntime(
        Options(
            state_dir=options.state_dir or root / ".sluice" / "chaos",
            root=root,
            console=False,
            visibility_timeout_s=VISIBILITY_S,
            async_retry_delays_s=ASYNC_RETRY_DELAYS_S,
            schedules=False,
            api_faults=plan,
        ),
        say=lambda line: log.info("runtime: %s", line),
    )
    started = time.monotonic()
    say(f"seed {seed}: starting the runtime and deploying (about a minute) ...")
    runtime.start()
    try:
        topology = runtime.topology
        ingest = sorted({t.function for t in topology.s3})
        asynchronous = {*ingest, *(t.function for t in topology.sns)}
        sqs_triggered = {m.function for m in topology.sqs} - asynchronous
        made = fault_plan(
            seed, options.rate, options.kill_rate, sqs_triggered, asynchronous, options.async_rate
        )
        for rule in made.rules:
            plan.add(rule)
        tap = _alerts_tap(runtime)
        events_tap = _events_tap(runtime)
        notify = _notifier(runtime, ingest)
        s3 = runtime.client("s3")
        bucket = runtime.names.landing_bucket
        window = S3_DUPLICATE_WINDOW_S
        timeline = Timeline()
        killer = Killer(
            runtime, random.Random(rng.random()), {f: ASYNC_KILLS for f in asynchronous}
        )

        def put(obj: Landed, why: str) -> None:
            response = s3.put_object(Bucket=bucket, Key=obj.key, Body=obj.body)
            result.uploads[why] += 1
            version = response.get("VersionId")
            # Duplicates of this very notification: one inside the window, one well outside.
            if rng.random() < 0.5:
                timeline.at(
                    rng.uniform(0.1, window * 0.6),
                    lambda: _count(result.notifications, "inside window", notify(obj, version)),
                )
            if rng.random() < 0.5:
                timeline.at(
                    window * 4 + rng.uniform(0, window),
                    lambda: _count(result.notifications, "outside window", notify(obj, version)),
                )

        say(
            f"seed {seed}: {options.records} orders in {result.objects} object versions, "
            f"faults on (rate {options.rate}/kind, async functions {options.async_rate}/kind)"
        )
        plan.start()
        timeline.start()
        if options.kills:
            killer.start()
        reuploaded = rng.sample(range(len(landed)), k=min(2, len(landed)))
        for i, obj in enumerate(landed):
            put(obj, "first")
            if i == len(landed) // 2:
                put(first, "first")
                timeline.at(OVERWRITE_AFTER_S, partial(put, second, "overwrite"))
            if i == reuploaded[0]:
                timeline.at(rng.uniform(0.5, 3.0), partial(put, obj, "identical re-upload"))
            if len(reuploaded) > 1 and i == reuploaded[1]:
                timeline.at(window * 4, partial(put, obj, "identical re-upload"))
            time.sleep(rng.uniform(0.0, 0.3))
        timeline.close_and_wait()
        result.action_errors = timeline.errors
        say(f"seed {seed}: every upload and duplicate sent; draining with faults on ...")
        runtime.wait_drained(options.drain_timeout_s)
        plan.stop()
        killer.stop()
        say(f"seed {seed}: faults stopped; draining ...")
        result.drained = runtime.wait_drained(options.drain_timeout_s)
        # The scheduled check once (schedules are off): the backstop for an emission a fault
        # stopped. An object counted twice here was emitted twice.
        runtime.fire("-check_objects")
        result.drained = runtime.wait_drained(options.drain_timeout_s) and result.drained
        result.seconds = time.monotonic() - started
        result.faults = plan.summary()
        result.fault_counts = plan.counts()
        result.faults_by_function = dict(plan.fired_in)
        result.fired = Counter(plan.fired)
        result.kills = killer.killed
        _count_sinks(runtime, result, [*landed, first, second], tap, root)
        _ledger(runtime, result, root)
        result.delivered_events, result.delivered_event_ids = delivered_events(runtime, events_tap)
    finally:
        runtime.stop()
        # The next seed's runtime starts its logs afresh: keep this one's for diagnosis.
        state = runtime.options.state_dir
        shutil.rmtree(state / f"seed-{seed}", ignore_errors=True)
        if (state / "logs").is_dir():
            shutil.copytree(state / "logs", state / f"seed-{seed}" / "logs")
            result.logs = str(state / f"seed-{seed}" / "logs")
    return result


def _count(counter: Counter[str], what: str, sent: bool) -> None:
    if sent:
        counter[what] += 1


def _alerts_tap(runtime: Any) -> str:
    """A queue subscribed (raw delivery) to the alerts topic: every alert lands there."""
    sqs, sns = runtime.client("sqs"), runtime.client("sns")
    url = sqs.create_queue(QueueName=runtime.names.name("chaos-alerts-tap"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic = next(
        t["TopicArn"]
        for t in sns.list_topics()["Topics"]
        if t["TopicArn"].endswith(f":{runtime.names.alerts_topic}")
    )
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    return str(url)


def _events_tap(runtime: Any) -> str:
    """A queue every pipeline event of the stage's bus lands in (a rule, an SQS target)."""
    sqs, events = runtime.client("sqs"), runtime.client("events")
    url = sqs.create_queue(QueueName=runtime.names.name("chaos-events-tap"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    bus, rule = runtime.names.events_bus, "chaos-events-tap"
    pattern = {"source": [f"sluice.{runtime.names.stage}"]}
    events.put_rule(Name=rule, EventBusName=bus, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "tap", "Arn": arn}])
    return str(url)


def delivered_events(runtime: Any, tap: str) -> tuple[Counter[str], dict[str, set[str]]]:
    """Object Delivered messages on the tap per correlation id (every one, not deduped), and
    the event ids they carried."""
    sqs = runtime.client("sqs")
    found: Counter[str] = Counter()
    ids: dict[str, set[str]] = {}
    while page := sqs.receive_message(QueueUrl=tap, MaxNumberOfMessages=10).get("Messages"):
        for message in page:
            event = json.loads(message["Body"])
            if event.get("detail-type") == "Object Delivered":
                correlation_id = str(event["detail"]["correlation_id"])
                found[correlation_id] += 1
                ids.setdefault(correlation_id, set()).add(str(event["detail"].get("event_id")))
            sqs.delete_message(QueueUrl=tap, ReceiptHandle=message["ReceiptHandle"])
    return found, ids


def _notifier(runtime: Any, ingest: list[str]) -> Callable[[Landed, str | None], bool]:
    """Sends ingest's internal S3 queue the notification S3 sent for an object version."""
    from sluice_tools.local.runtime import INTERNAL_ID_PREFIX

    s3, sqs = runtime.client("s3"), runtime.client("sqs")
    bucket = runtime.names.landing_bucket
    targets: list[tuple[str, str]] = []  # (queue url, configuration id)
    config = s3.get_bucket_notification_configuration(Bucket=bucket)
    for function in ingest:
        url = runtime.internal[(function, "s3")]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        for entry in config.get("QueueConfigurations") or []:
            if entry["QueueArn"] == arn and str(entry.get("Id", "")).startswith(INTERNAL_ID_PREFIX):
                targets.append((url, entry["Id"]))

    def notify(obj: Landed, version: str | None) -> bool:
        head: dict[str, Any] = {"Bucket": bucket, "Key": obj.key}
        if version:
            head["VersionId"] = version
        found = s3.head_object(**head)
        for url, config_id in targets:
            body = s3_event(
                bucket,
                obj.key,
                found["ETag"].strip('"'),
                size=found["ContentLength"],
                version_id=version if version and version != "null" else None,
                configuration_id=config_id,
                event_time=datetime.now(UTC).isoformat(timespec="milliseconds"),
                region=runtime.emulator.region,
                key_safe="",
            )
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
        return bool(targets)

    return notify


# --------------------------------------------------------------------------- counting


def curated_order_ids(runtime: Any) -> Counter[str]:
    """Every order id in the curated bucket's objects, with how many times it is there."""
    s3 = runtime.client("s3")
    bucket = runtime.names.curated_bucket
    found: Counter[str] = Counter()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents") or []:
            data = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            for line in gzip.decompress(data).decode("utf-8").splitlines():
                if line.strip():
                    found[str(json.loads(line).get("order_id"))] += 1
    return found


def indexed_order_ids(runtime: Any) -> Counter[str]:
    """Every `order#<id>` item of the records table (one per version), counted per id."""
    ddb = runtime.client("dynamodb")
    found: Counter[str] = Counter()
    for page in ddb.get_paginator("scan").paginate(
        TableName=runtime.names.records_table, ProjectionExpression="pk"
    ):
        for item in page["Items"]:
            kind, _, key = str(item["pk"]["S"]).partition("#")
            if kind == ORDER_TYPE:
                found[key] += 1
    return found


def alerted_order_ids(runtime: Any, tap: str) -> tuple[Counter[str], Counter[str]]:
    """Alerts on the tap (consumed): per order id (from the text) and per record id."""
    sqs = runtime.client("sqs")
    by_order: Counter[str] = Counter()
    by_record: Counter[str] = Counter()
    empty = 0
    while empty < 2:
        page = sqs.receive_message(
            QueueUrl=tap, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        ).get("Messages")
        if not page:
            empty += 1
            continue
        empty = 0
        for message in page:
            match = ALERT_TEXT.search(message["Body"])
            by_order[match.group(1) if match else "?"] += 1
            attrs = message.get("MessageAttributes") or {}
            by_record[str((attrs.get("record_id") or {}).get("StringValue", "?"))] += 1
        sqs.delete_message_batch(
            QueueUrl=tap,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(page)
            ],
        )
    return by_order, by_record


def dead_letters(
    runtime: Any, landed: list[Landed]
) -> tuple[dict[str, tuple[int, int]], dict[str, set[str]]]:
    """Messages and records in every DLQ and failures queue, and the order ids they hold.

    Ids are read from the dead chunks' records; a dead S3 event (ingest's failures queue)
    stands for every order of that object.
    """
    from sluice_tools.dlq.queues import decode, is_dead_letter, peek, queue_name, stage_queue_urls

    sqs = runtime.client("sqs")
    by_key: dict[str, list[str]] = {}
    for obj in landed:
        by_key.setdefault(obj.key, []).extend(obj.order_ids)
    counts: dict[str, tuple[int, int]] = {}
    ids: dict[str, set[str]] = {}
    for url in stage_queue_urls(sqs, runtime.names):
        name = queue_name(url)
        if not is_dead_letter(name):
            continue
        messages = peek(sqs, url)
        found: set[str] = set()
        records = 0
        for message in messages:
            decoded = decode(message)
            for chunk in decoded.chunks:
                records += len(chunk.records)
                for record in chunk.records:
                    payload = record.payload if isinstance(record.payload, dict) else {}
                    found.add(str(payload.get("order_id") or record.id))
            for uri in decoded.objects:
                key = uri.split("/", 3)[-1] if uri.startswith("s3://") else uri
                found.update(by_key.get(key, []))
                records += len(by_key.get(key, []))
        if messages:
            counts[name] = (len(messages), records)
            ids[name] = found
    return counts, ids


def sink_count(
    sink: str, expected: set[str], found: Counter[str], dead: set[str], ours: Callable[[str], bool]
) -> SinkCount:
    missing = {i for i in expected if not found.get(i)}
    return SinkCount(
        sink=sink,
        expected=len(expected),
        delivered=len(expected) - len(missing),
        lost=len(missing - dead),
        doubled=sum(1 for i in expected if found.get(i, 0) > 1),
        dead=len(expected & dead),
        unexpected=sum(1 for i in found if ours(i) and i not in expected),
    )


def _count_sinks(
    runtime: Any, result: SeedResult, landed: list[Landed], tap: str, root: Path
) -> None:
    prefix = f"ch{result.seed}-"

    def ours(order_id: str) -> bool:
        return order_id.startswith(prefix)

    expected = {i for obj in landed for i in obj.order_ids}
    high = {i for obj in landed for i in obj.high}
    result.dead_letters, dead_ids = dead_letters(runtime, landed)
    dead = set().union(*dead_ids.values()) if dead_ids else set()
    by_order, _by_record = alerted_order_ids(runtime, tap)
    result.sinks = [
        sink_count("warehouse", expected, curated_order_ids(runtime), dead, ours),
        sink_count("index", expected, indexed_order_ids(runtime), dead, ours),
        sink_count("alerts", high, by_order, dead, ours),
    ]


def _ledger(runtime: Any, result: SeedResult, root: Path) -> None:
    from sluice_tools.ledger import ledger_report
    from sluice_tools.ledger.command import repo_sinks

    try:
        report = ledger_report(
            runtime.names,
            sinks=repo_sinks(root),
            dynamodb=runtime.client("dynamodb"),
            sqs=runtime.client("sqs"),
        )
    except Exception as exc:  # the ledger failing is a verdict too
        result.ledger_status, result.ledger_exit = f"error: {type(exc).__name__}: {exc}", 99
        return
    result.ledger_status, result.ledger_exit = str(report.status), int(report.exit_code)
    result.balanced_flows = [f.correlation_id for f in report.flows if f.exit == 0]
    problems = [p for f in report.flows for p in f.problems] + list(report.problems)
    result.ledger_problems = [f"{p.kind}: {p.where}: {p.message}" for p in problems][:20]


# --------------------------------------------------------------------------- report


def format_result(result: SeedResult) -> str:
    lines = [
        f"seed {result.seed}: {result.records} records, {result.objects} object versions, "
        f"{result.seconds:.0f} s, {'drained' if result.drained else 'NOT DRAINED'}"
    ]
    lines.append(
        f"  {'sink':<10} {'expected':>8} {'delivered':>9} {'lost':>6} {'doubled':>7} "
        f"{'dead':>6} {'unexpected':>10}"
    )
    for s in result.sinks:
        lines.append(
            f"  {s.sink:<10} {s.expected:>8} {s.delivered:>9} {s.lost:>6} {s.doubled:>7} "
            f"{s.dead:>6} {s.unexpected:>10}"
        )
    dead = ", ".join(f"{q} {m} msg / {r} rec" for q, (m, r) in sorted(result.dead_letters.items()))
    lines.append(f"  dead letters: {dead or 'none'}")
    lines.append(f"  API faults fired: {sum(result.fault_counts.values())}")
    lines += [f"    {line}" for line in result.faults]
    per = ", ".join(f"{f} {n}" for f, n in sorted(result.faults_by_function.items()))
    lines.append(f"    by function: {per or 'none'}")
    kills = ", ".join(f"{f} {n}" for f, n in sorted(result.kills.items()))
    lines.append(f"  workers SIGKILLed: {sum(result.kills.values())} ({kills or 'none'})")
    sent = ", ".join(f"{k} {n}" for k, n in sorted(result.notifications.items()))
    lines.append(f"  duplicate S3 notifications sent: {sent or 'none'}")
    ups = ", ".join(f"{k} {n}" for k, n in sorted(result.uploads.items()))
    lines.append(f"  uploads: {ups}")
    for error in result.action_errors:
        lines.append(f"  chaos action failed: {error}")
    verdict = "balanced" if result.sinks_balanced else "NOT balanced"
    lines.append(
        f"  ledger: {result.ledger_status} (exit {result.ledger_exit}); sinks: {verdict}; "
        f"ledger {'agrees' if result.ledger_agrees else 'DISAGREES'}"
    )
    lines += [f"    {p}" for p in result.ledger_problems]
    twice = sorted(c for c, n in result.delivered_events.items() if n > 1)
    missing = sorted(set(result.balanced_flows) - set(result.delivered_events))
    stray = sorted(set(result.delivered_events) - set(result.balanced_flows))
    lines.append(
        f"  Object Delivered: {sum(result.delivered_events.values())} for "
        f"{len(result.balanced_flows)} balanced objects; twice {twice or 'none'} "
        f"({result.events_repeated} repeats, {result.lost_put_events} PutEvents answers "
        f"lost), missing {missing or 'none'}, not balanced {stray or 'none'}"
    )
    lines.append(f"  function logs: {result.logs}")
    lines.append(f"  seed {result.seed}: {'PASS' if result.ok else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice_tools.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seeds", type=int, default=3, help="how many random seeds (default 3)")
    parser.add_argument(
        "--seed",
        type=int,
        action="append",
        default=[],
        help="run this seed (repeatable; replaces --seeds)",
    )
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument(
        "--rate", type=float, default=0.01, help="API fault probability per kind per call"
    )
    parser.add_argument(
        "--kill-rate",
        type=float,
        default=0.002,
        help="kill_after probability per call of the SQS-triggered functions",
    )
    parser.add_argument(
        "--async-rate",
        type=float,
        default=0.05,
        help="fault probability per kind per call of the S3- and SNS-triggered functions",
    )
    parser.add_argument("--no-kills", action="store_true", help="no SIGKILLs of busy workers")
    parser.add_argument(
        "--alerts-exactly-once", action="store_true", help="a doubled alert fails the run"
    )
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    seeds = args.seed or [random.SystemRandom().randrange(1, 1_000_000) for _ in range(args.seeds)]
    options = ChaosOptions(
        records=args.records,
        objects=args.objects,
        rate=args.rate,
        kill_rate=args.kill_rate,
        async_rate=args.async_rate,
        kills=not args.no_kills,
        alerts_exactly_once=args.alerts_exactly_once,
        state_dir=args.state_dir,
    )

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    from sluice_tools.deploy.target import repo_root

    options.root = repo_root()
    state = options.state_dir = options.state_dir or options.root / ".sluice" / "chaos"
    _log_to(state)
    say(
        f"chaos: seeds {' '.join(map(str, seeds))} (repeat a run with --seed N ...); "
        f"log {state / 'chaos.log'}"
    )
    results = []
    for seed in seeds:
        result = run_seed(seed, options, say)
        results.append(result)
        print(format_result(result), flush=True)
    failed = [r.seed for r in results if not r.ok]
    print(
        f"chaos: {len(results) - len(failed)} of {len(results)} seeds passed"
        + (f"; failed: {failed}" if failed else "")
    )
    return 1 if failed else 0


def _log_to(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(state / "chaos.log", mode="w", encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")
    )
    for name in ("sluice.local", "sluice.chaos"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
