"""The whole pipeline on the local runtime: the samples, then injected faults.

One runtime for the module (deploying the stage takes about a minute): the samples go
through first; each fault test then uploads a small file of its own, so its records and its
ledger flow are told apart from the rest by their source key.

It runs as a real account would: a resource prefix of its own (`acme-data`), a region other
than us-east-1, and the emulator enforcing each function's IAM policy. The deploy is of a
copy of the tree whose one pull source is a local HTTP server that wants a bearer token from
SSM, so the scheduled pull goes the whole way too.
"""

from __future__ import annotations

import fnmatch
import functools
import gzip
import http.server
import json
import os
import re
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.waiting import HANG_S, wait_until

from sluice.progress import OPEN, OPEN_DEADLINE, OPEN_SHARD, PROGRESS_ENTRY
from sluice.registry import load_registry
from sluice_tools.deploy.apps import discover_apps
from sluice_tools.deploy.render import Placement, render_app
from sluice_tools.dlq import redrive
from sluice_tools.ledger import Exit, ledger_report
from sluice_tools.ledger.command import repo_sinks
from sluice_tools.local import iam
from sluice_tools.local.apifaults import ApiFaultRule
from sluice_tools.local.commands import landing_key, sample_files
from sluice_tools.local.emulator import ACCOUNT_ID
from sluice_tools.local.faults import FaultRule
from sluice_tools.local.runtime import LocalRuntime, Options
from sluice_tools.trace.tracer import item_payload

from .conftest import ROOT, depth, queue, repo_tree

pytestmark = pytest.mark.slow

VISIBILITY_S = 6  # SQS mappings only; the queues' own are 6 x the function timeout
PREFIX, REGION = "acme-data", "eu-west-1"  # what an account of its own would choose
PULL_TOKEN = "e2e-pull-token"
PULL_SECRET = "pull/e2e-orders/token"
PULLED_ORDERS = ["o-pull-1", "o-pull-2", "o-pull-3"]
README = (ROOT / "samples" / "README.md").read_text(encoding="utf-8")
REJECT_RE = re.compile(r"^- `([^`]+)`: `(.+?)`", re.M)
GOOD, QUARANTINED_BY_CLEANSE, UNPARSEABLE, HIGH_PRIORITY = 34, 16, 1, 10


ALERTED_ORDER = re.compile(r"^High-value order (\S+):")


@dataclass
class Pipeline:
    runtime: LocalRuntime
    alerts_tap: str
    alert_log: list[str] = field(default_factory=list)  # every alert read from the tap
    samples: dict[str, Any] = field(default_factory=dict)  # the sinks after the samples

    def client(self, service: str) -> Any:
        return self.runtime.client(service)

    def upload_orders(self, tmp_path: Path, name: str, order_ids: list[str]) -> str:
        """A small JSON Lines file of good orders under incoming/order/; returns its key."""
        path = tmp_path / "incoming" / "order" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        # amount 5000: high priority, so every sink sees each order
        self.upload_records(tmp_path, name, [_order(oid) for oid in order_ids])
        return landing_key(path)

    def upload_records(self, tmp_path: Path, name: str, orders: list[dict[str, Any]]) -> str:
        """A JSON Lines file of these orders under incoming/order/; returns its key."""
        path = tmp_path / "incoming" / "order" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(o) + "\n" for o in orders), encoding="utf-8")
        key = landing_key(path)
        self.runtime.upload([(path, key)])
        return key

    def report(self) -> Any:
        return ledger_report(
            self.runtime.names,
            sinks=repo_sinks(ROOT),
            dynamodb=self.client("dynamodb"),
            sqs=self.client("sqs"),
        )

    def flow(self, key: str) -> Any:
        (flow,) = [f for f in self.report().flows if f.source.endswith(key)]
        return flow

    def curated_payloads(self) -> list[dict[str, Any]]:
        s3 = self.client("s3")
        bucket = self.runtime.names.curated_bucket
        lines: list[dict[str, Any]] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents") or []:
                data = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                text = gzip.decompress(data).decode("utf-8")
                lines += [json.loads(line) for line in text.splitlines()]
        return lines

    def delivered_orders(self, prefix: str) -> Counter[str]:
        """How many times each order id starting with `prefix` is in the curated bucket."""
        return Counter(
            str(line["order_id"])
            for line in self.curated_payloads()
            if str(line.get("order_id", "")).startswith(prefix)
        )

    def index_items(self) -> list[dict[str, Any]]:
        """Every record version in the records table (sort key `v#<time>#<record id>`)."""
        ddb = self.client("dynamodb")
        table = self.runtime.names.records_table
        items: list[dict[str, Any]] = []
        for page in ddb.get_paginator("scan").paginate(TableName=table):
            items += page["Items"]
        assert all(item["sk"]["S"].startswith("v#") for item in items), "not a version item"
        return items

    def indexed_orders(self, prefix: str) -> Counter[str]:
        """How many versions each order id starting with `prefix` has in the records table."""
        keys = (str(item["pk"]["S"]).partition("#") for item in self.index_items())
        return Counter(key for kind, _, key in keys if kind == "order" and key.startswith(prefix))

    def alerts(self) -> list[str]:
        """Every alert published so far. Call it drained (`wait_drained`): an alert is on the
        tap once its invocation is over."""
        sqs = self.client("sqs")
        while page := sqs.receive_message(QueueUrl=self.alerts_tap, MaxNumberOfMessages=10).get(
            "Messages"
        ):
            for message in page:
                self.alert_log.append(message["Body"])
                sqs.delete_message(QueueUrl=self.alerts_tap, ReceiptHandle=message["ReceiptHandle"])
        return list(self.alert_log)

    def alerted_orders(self, prefix: str) -> Counter[str]:
        """How many alerts each order id starting with `prefix` raised."""
        found = (ALERTED_ORDER.match(alert) for alert in self.alerts())
        return Counter(m.group(1) for m in found if m and m.group(1).startswith(prefix))

    def quarantined(self) -> list[dict[str, Any]]:
        s3 = self.client("s3")
        bucket = self.runtime.names.quarantine_bucket
        docs = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents") or []:
                if obj["Key"].endswith(".payload.json"):
                    continue
                docs.append(json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()))
        return docs


class PullSource(http.server.BaseHTTPRequestHandler):
    """An HTTP source of orders that answers only with the right bearer token."""

    seen: list[str | None] = []  # the Authorization header of every request

    def do_GET(self) -> None:
        PullSource.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != f"Bearer {PULL_TOKEN}":
            self.send_error(401)
            return
        done = "since=" in self.path  # the second pull, from the cursor, finds nothing new
        records = [] if done else [_order(oid, amount=5000) for oid in PULLED_ORDERS]
        body = json.dumps({"records": records, "next_cursor": "c-1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def _order(order_id: str, amount: float = 5000, **extra: Any) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "c-001",
        "email": "ada@example.com",
        "amount": amount,
        "currency": "EUR",
        "created_at": "2026-11-27T08:15:00Z",
        **extra,
    }


def _tree_with_pull_source(dest: Path, url: str) -> Path:
    """A copy of the repository whose ingest pulls from `url` (the checkout is untouched)."""
    repo_tree(dest)
    source = {
        "name": "e2e-orders",
        "url": url,
        "type": "order",
        "cursor_param": "since",
        "secret_parameter": PULL_SECRET,
        "format": "json",
    }
    (dest / "ingest" / "chalicelib" / "sources.json").write_text(json.dumps([source]))
    return dest


@pytest.fixture(scope="module")
def pipeline(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PullSource)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/orders"
    tree = _tree_with_pull_source(tmp_path_factory.mktemp("e2e") / "repo", url)
    options = Options(
        # Under the repo (git-ignored): the deploy's chalice zip cache survives between runs.
        state_dir=ROOT / ".sluice" / "tests-local",
        root=tree,
        console=False,
        visibility_timeout_s=VISIBILITY_S,
        async_retry_delays_s=(0.5, 1.0),
        schedules=False,
        # The test source is plain http on loopback: allowed only by this opt-in.
        extra_env={"SLUICE_INGEST_PULL_ALLOW_HTTP_LOOPBACK": "true"},
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("SLUICE_RESOURCE_PREFIX", PREFIX)
    mp.setenv("AWS_REGION", REGION)
    mp.setenv("AWS_DEFAULT_REGION", REGION)
    runtime = LocalRuntime(options)
    runtime.start()
    try:
        assert runtime.names.prefix == PREFIX
        sqs, sns = runtime.client("sqs"), runtime.client("sns")
        ssm = runtime.client("ssm")
        ssm.put_parameter(
            Name=f"/{PREFIX}/{runtime.names.stage}/{PULL_SECRET}",
            Value=PULL_TOKEN,
            Type="SecureString",
        )
        tap_url, tap_arn = queue(sqs, "test-alerts-tap")
        (topic,) = [
            t["TopicArn"]
            for t in sns.list_topics()["Topics"]
            if t["TopicArn"].endswith(f":{runtime.names.alerts_topic}")
        ]
        assert f":{REGION}:" in topic
        sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=tap_arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        runtime.upload([(p, landing_key(p)) for p in sample_files(ROOT)])
        assert runtime.wait_drained(240), runtime.depths()
        pipeline = Pipeline(runtime, tap_url)
        # What the samples left in the sinks, read before any fault test adds its own.
        pipeline.samples = {
            "curated": pipeline.curated_payloads(),
            "index": pipeline.index_items(),
            "alerts": pipeline.alerts(),
            "quarantine": pipeline.quarantined(),
            "report": pipeline.report(),
        }
        yield pipeline
    finally:
        runtime.stop()
        server.shutdown()
        mp.undo()


@pytest.fixture
def sample_sinks(pipeline: Pipeline) -> dict[str, Any]:
    """What the samples left in the sinks, whatever ran before the test."""
    return pipeline.samples


@pytest.fixture(autouse=True)
def _no_faults(pipeline: Pipeline) -> Iterator[None]:
    yield
    pipeline.runtime.options.faults.clear()


def test_every_good_sample_record_lands_in_the_curated_bucket_exactly_once(sample_sinks):
    ids = Counter(line["_record_id"] for line in sample_sinks["curated"])
    assert len(ids) == GOOD
    assert set(ids.values()) == {1}


def test_every_good_sample_record_is_indexed_once_as_a_version(sample_sinks):
    items = sample_sinks["index"]
    record_ids = Counter(item["sk"]["S"].rsplit("#", 1)[-1] for item in items)  # v#<at>#<id>
    assert len(record_ids) == GOOD
    assert set(record_ids.values()) == {1}
    assert all(rid.startswith("r-") for rid in record_ids)
    # One version per entity: every good sample order and customer id is its own entity.
    entities = Counter(item["pk"]["S"] for item in items)
    assert len(entities) == GOOD


def test_every_high_priority_order_raises_exactly_one_alert(sample_sinks):
    alerts = sample_sinks["alerts"]
    assert len(alerts) == HIGH_PRIORITY
    assert len(set(alerts)) == HIGH_PRIORITY


def test_every_bad_sample_record_is_in_quarantine_with_its_reason(sample_sinks):
    docs = sample_sinks["quarantine"]
    by_stage = Counter(doc["stage"] for doc in docs)
    assert by_stage == {"ingest": UNPARSEABLE, "cleanse": QUARANTINED_BY_CLEANSE}
    expected = dict(REJECT_RE.findall(README))
    assert len(expected) == QUARANTINED_BY_CLEANSE
    found = {}
    for doc in docs:
        if doc["stage"] == "cleanse":
            payload = doc["record"]["payload"]
            found[payload.get("order_id") or payload.get("customer_id")] = doc["reason"]
    assert found == expected


def test_the_ledger_of_the_samples_balances(sample_sinks):
    report = sample_sinks["report"]
    assert report.exit_code == 0, [p.message for f in report.flows for p in f.problems]
    assert len(report.flows) == 3
    assert sum(flow.read for flow in report.flows) == 51  # 50 records + 1 unparseable line


def test_a_transient_fault_recovers_through_redelivery(pipeline: Pipeline, tmp_path: Path):
    failures_before = pipeline.runtime.activity.failures
    pipeline.runtime.options.faults.add(
        FaultRule(function="-cleanse", kind="error", times=2, match="transient-fault")
    )
    key = pipeline.upload_orders(tmp_path, "transient-fault", ["o-9101", "o-9102"])
    assert pipeline.runtime.wait_drained(120), pipeline.runtime.depths()
    assert pipeline.runtime.activity.failures - failures_before == 2
    flow = pipeline.flow(key)
    assert flow.exit == 0, [p.message for p in flow.problems]
    assert pipeline.delivered_orders("o-91") == {"o-9101": 1, "o-9102": 1}
    assert pipeline.indexed_orders("o-91") == {"o-9101": 1, "o-9102": 1}
    assert pipeline.alerted_orders("o-91") == {"o-9101": 1, "o-9102": 1}


def test_a_worker_killed_mid_batch_loses_nothing(pipeline: Pipeline, tmp_path: Path):
    runtime = pipeline.runtime
    runtime.options.faults.add(FaultRule(function="-route", kind="hang", times=1, match="killed"))
    key = pipeline.upload_orders(tmp_path, "killed-worker", ["o-9201"])
    (pid,) = wait_until(lambda: runtime.busy_workers("-route"), what="the router busy")
    os.kill(pid, signal.SIGKILL)
    assert runtime.wait_drained(HANG_S), runtime.depths()
    assert pipeline.flow(key).exit == 0
    assert pipeline.delivered_orders("o-92") == {"o-9201": 1}
    assert pipeline.indexed_orders("o-92") == {"o-9201": 1}
    assert pipeline.alerted_orders("o-92") == {"o-9201": 1}


def test_a_chunk_that_always_fails_is_dead_lettered_then_redriven_once(
    pipeline: Pipeline, tmp_path: Path
):
    runtime = pipeline.runtime
    names = runtime.names
    sqs = pipeline.client("sqs")
    runtime.options.faults.add(FaultRule(function="-route", kind="error", match="always-fails"))
    key = pipeline.upload_orders(tmp_path, "always-fails", ["o-9301", "o-9302"])
    assert runtime.wait_drained(180), runtime.depths()
    dlq_url = sqs.get_queue_url(QueueName=names.dlq_of(names.clean_queue))["QueueUrl"]
    assert depth(sqs, dlq_url) == 1
    assert not pipeline.delivered_orders("o-93")
    dead = pipeline.flow(key)
    # Accounted for: the ledger finds both records in the DLQ (and says so: never balanced).
    assert (dead.exit, dead.dead_records) == (Exit.DEAD_LETTERS, 2), [
        p.message for p in dead.problems
    ]

    runtime.options.faults.clear()  # the fault is fixed
    clean_url = sqs.get_queue_url(QueueName=names.clean_queue)["QueueUrl"]
    result = redrive(sqs, dlq_url, clean_url)
    assert result.moved == 1
    assert runtime.wait_drained(120), runtime.depths()
    assert depth(sqs, dlq_url) == 0
    flow = pipeline.flow(key)
    assert flow.exit == 0, [p.message for p in flow.problems]
    assert pipeline.delivered_orders("o-93") == {"o-9301": 1, "o-9302": 1}
    assert pipeline.indexed_orders("o-93") == {"o-9301": 1, "o-9302": 1}
    assert pipeline.alerted_orders("o-93") == {"o-9301": 1, "o-9302": 1}


# A worker SIGKILLed by the emulator right after one of its calls took effect: in the middle of
# real work, never in a hook before the handler. Each function kind, S3-triggered ingest too.
KILLS = {
    "ingest-after-its-send-before-its-ledger-entry": (
        "-on_object_created",
        "sqs",
        "SendMessageBatch",
    ),
    "cleanse-after-its-claim-before-its-send": ("-cleanse", "dynamodb", "PutItem"),
    "router-after-its-publish-before-its-ledger-entry": ("-route", "sns", "PublishBatch"),
    "warehouse-after-its-object-before-its-ledger-entry": (
        "warehouse-local-consume",
        "s3",
        "PutObject",
    ),
    "index-after-its-write-before-its-ledger-entry": (
        "index-local-consume",
        "dynamodb",
        "BatchWriteItem",
    ),
    "alerts-after-publishing-before-completing-its-claims": (
        "alerts-local-consume",
        "sns",
        "PublishBatch",
    ),
}


def test_workers_killed_in_the_middle_of_real_work_lose_and_double_nothing(
    pipeline: Pipeline, tmp_path: Path
):
    # All six at once, each with its own file and orders: their waits for lapsed claims overlap.
    runtime = pipeline.runtime
    cases = []
    for n, where in enumerate(sorted(KILLS)):
        function, service, operation = KILLS[where]
        rule = runtime.options.api_faults.add(
            ApiFaultRule("kill_after", service, (operation,), function=function, times=1)
        )
        cases.append((where, rule, f"o-k{n}-", [f"o-k{n}-{i}" for i in range(3)]))
    keys = [pipeline.upload_orders(tmp_path, f"killed-{c[0]}", c[3]) for c in cases]

    for where, rule, _, _ in cases:
        wait_until(functools.partial(getattr, rule, "fired"), what=f"the kill of {where}")
    assert runtime.wait_drained(HANG_S * 2), runtime.depths()

    for (where, _, prefix, orders), key in zip(cases, keys, strict=True):
        once = dict.fromkeys(orders, 1)
        assert pipeline.delivered_orders(prefix) == once, where
        assert pipeline.indexed_orders(prefix) == once, where
        # At least once (README's delivery contract): every order alerted, repeats allowed.
        assert set(pipeline.alerted_orders(prefix)) == set(orders), where
        flow = pipeline.flow(key)
        assert flow.exit == Exit.BALANCED, (where, [p.message for p in flow.problems])


def test_a_scheduled_pull_lands_its_records_with_the_token_from_ssm(pipeline: Pipeline):
    runtime = pipeline.runtime
    PullSource.seen.clear()
    runtime.fire("-pull_sources")
    assert runtime.wait_drained(120), runtime.depths()
    once = dict.fromkeys(PULLED_ORDERS, 1)
    assert pipeline.delivered_orders("o-pull-") == once
    assert pipeline.indexed_orders("o-pull-") == once
    assert pipeline.alerted_orders("o-pull-") == once
    assert PullSource.seen == [f"Bearer {PULL_TOKEN}"]  # read from SSM under the prefix
    (flow,) = [f for f in pipeline.report().flows if "/pulls/e2e-orders/" in f.source]
    assert flow.exit == Exit.BALANCED, [p.message for p in flow.problems]

    runtime.fire("-pull_sources")  # from the stored cursor: nothing new, nothing doubled
    assert runtime.wait_drained(120), runtime.depths()
    assert PullSource.seen[-1] == f"Bearer {PULL_TOKEN}"
    assert pipeline.delivered_orders("o-pull-") == once


def test_a_record_too_large_for_a_message_travels_by_claim_check(
    pipeline: Pipeline, tmp_path: Path
):
    # ~330 KB of line items: more than an SNS message holds, so each hop passes a reference.
    items = [{"sku": f"sku-{n:06d}", "quantity": 1, "unit_price": 1.5} for n in range(6000)]
    big = _order("o-big-1", items=items)
    small = _order("o-big-2")
    key = pipeline.upload_records(tmp_path, "claim-check", [big, small])
    assert len(json.dumps(big)) > 256 * 1024
    assert pipeline.runtime.wait_drained(180), pipeline.runtime.depths()

    curated = [line for line in pipeline.curated_payloads() if line.get("order_id") == "o-big-1"]
    assert len(curated) == 1
    assert len(curated[0]["items"]) == len(items)
    assert pipeline.delivered_orders("o-big-") == {"o-big-1": 1, "o-big-2": 1}
    assert pipeline.indexed_orders("o-big-") == {"o-big-1": 1, "o-big-2": 1}
    s3 = pipeline.client("s3")
    held = s3.list_objects_v2(Bucket=pipeline.runtime.names.payload_bucket).get("KeyCount", 0)
    assert held > 0, "no payload went by claim check"
    flow = pipeline.flow(key)
    assert flow.exit == Exit.BALANCED, [p.message for p in flow.problems]


def test_the_index_answers_the_latest_version_of_an_order(pipeline: Pipeline, tmp_path: Path):
    pipeline.upload_records(tmp_path, "versions-1", [_order("o-ver-1", amount=10)])
    assert pipeline.runtime.wait_drained(120), pipeline.runtime.depths()
    pipeline.upload_records(tmp_path, "versions-2", [_order("o-ver-1", amount=20)])
    assert pipeline.runtime.wait_drained(120), pipeline.runtime.depths()

    ddb = pipeline.client("dynamodb")
    table = pipeline.runtime.names.records_table
    query = {"KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {}}
    query["ExpressionAttributeValues"] = {":pk": {"S": "order#o-ver-1"}}
    versions = ddb.query(TableName=table, **query)["Items"]
    assert len(versions) == 2
    (latest,) = ddb.query(TableName=table, ScanIndexForward=False, Limit=1, **query)["Items"]
    assert latest["sk"]["S"] == max(v["sk"]["S"] for v in versions)
    assert item_payload(latest)["amount"] == 20  # in whatever layout the index stores it


def test_one_landed_object_is_one_trace_from_ingest_to_the_consumers(
    pipeline: Pipeline, tmp_path: Path
):
    """The workers append spans to the runtime's trace file; the W3C traceparent carried in
    the raw queue, clean queue and SNS (raw delivery) message attributes keeps every hop of
    one object in the trace its ingest invocation started."""
    spans_file = pipeline.runtime.options.state_dir / "spans.jsonl"
    before = spans_file.stat().st_size if spans_file.exists() else 0
    pipeline.upload_records(tmp_path, "traced", [_order("o-traced-1", amount=9000)])
    assert pipeline.runtime.wait_drained(120), pipeline.runtime.depths()

    with spans_file.open("rb") as f:
        f.seek(before)
        spans = [json.loads(line) for line in f.read().decode().splitlines()]
    by_trace: dict[str, set[str]] = {}
    for span in spans:
        by_trace.setdefault(span["trace_id"], set()).add(span["attributes"].get("faas.name", ""))
    ingests = [
        s
        for s in spans
        if s["name"] == "invocation" and "ingest" in s["attributes"].get("faas.name", "")
    ]
    assert len(ingests) == 1, ingests
    functions = by_trace[ingests[0]["trace_id"]]
    for stage in ("cleanse", "router"):
        assert any(stage in f for f in functions), (stage, functions)
    consumers = {c for c in ("warehouse", "index", "alerts") if any(c in f for f in functions)}
    assert consumers == {"warehouse", "index", "alerts"}, functions  # a 9000 order reaches all
    chunks = [s for s in spans if s["name"] == "chunk" and s["trace_id"] == ingests[0]["trace_id"]]
    assert {s["attributes"]["sluice.record_type"] for s in chunks} == {"order"}
    assert all(s["parent_span_id"] for s in chunks)  # each continues the hop before it


# ---------------------------------------------------------------- IAM as on AWS
RECEIVING = {  # what the event source mapping does with the role, not the function's code
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ChangeMessageVisibility",
}


def _rendered_policies(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """Each deployed function's policy, rendered from its app's deploy.yaml as the deploy did."""
    runtime = pipeline.runtime
    place = Placement(PREFIX, runtime.names.stage, REGION, ACCOUNT_ID, emulator=True)
    policies = {}
    assert runtime.options.root is not None
    for app in discover_apps(runtime.options.root):
        rendered = render_app(app, place)
        for handler, policy in rendered.policies.items():
            policies[rendered.function_name(handler)] = policy
    return policies


def _used_actions(function: str) -> Counter[str]:
    """How often the function's role was allowed each action (its mapping's receives aside)."""
    used: Counter[str] = Counter()
    for (arn, action), count in iam.enforcer().calls.items():
        if arn.endswith(f"/{function}") and action not in RECEIVING:
            used[action] += count
    return used


def _logged_denial(log_file: Path) -> bool:
    text = log_file.read_text(encoding="utf-8") if log_file.exists() else ""
    return "AccessDenied" in text or "AuthorizationError" in text


def _denied(function: str, actions: list[str]) -> list[tuple[str, str]]:
    return [
        (action, resource)
        for arn, action, resource in iam.enforcer().denied
        if arn.endswith(f"/{function}") and action in actions
    ]


def _telling_grant(policy: dict[str, Any], used: Counter[str]) -> dict[str, Any]:
    """The statement whose own actions (granted by no other statement) the function called
    most often: taking it away must be what denies its next call."""
    statements = policy["Statement"]
    best, best_count = None, 0
    for statement in statements:
        others = {a for s in statements if s is not statement for a in s["Action"]}
        count = max((used[a] for a in statement["Action"] if a not in others), default=0)
        if count > best_count:
            best, best_count = statement, count
    assert best is not None, f"no statement alone grants one of {sorted(used)}: {statements}"
    return dict(best)


def _give_work(pipeline: Pipeline, tmp_path: Path, function: str, n: int) -> None:
    """Work that reaches `function`: an upload goes through every stage and consumer."""
    runtime = pipeline.runtime
    if function.endswith("-pull_sources"):
        # Forget the pull cursors, so the pull lands its source's records again (from its
        # cursor it finds nothing new, and would make none of the calls a landing makes).
        ddb = pipeline.client("dynamodb")
        table = runtime.names.cursor_table
        for item in ddb.scan(
            TableName=table, ProjectionExpression="#s", ExpressionAttributeNames={"#s": "source"}
        )["Items"]:
            ddb.delete_item(TableName=table, Key=item)
        runtime.fire("-pull_sources")
        return
    if function.endswith("-check_objects"):  # the scheduled check of open objects
        # An object open past its deadline, so the check has one to read and report (every
        # object the uploads opened may be delivered and closed by now).
        pipeline.client("dynamodb").put_item(
            TableName=runtime.names.ledger_table,
            Item={
                "correlation_id": {"S": f"grants-open-{n}"},
                "entry": {"S": PROGRESS_ENTRY},
                OPEN_SHARD: {"S": OPEN},
                OPEN_DEADLINE: {"S": "2026-01-01T00:00:00.000Z"},
                "source": {"S": f"s3://{runtime.names.landing_bucket}/incoming/order/open-{n}"},
                "type": {"S": "order"},
            },
        )
        runtime.fire("-check_objects")
        return
    key = pipeline.upload_orders(tmp_path, f"grants-{n}", [f"o-g{n}-1"])
    # ... and every registered type's samples, so a consumer whose policy wants another type
    # gets work too (derived from the registry: a new type or consumer needs no edit here).
    for spec in load_registry(ROOT / "types"):
        path = tmp_path / "incoming" / spec.name / f"grants-{n}-sample.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((spec.path / "sample.jsonl").read_bytes())
        runtime.upload([(path, landing_key(path))])
    if not function.endswith("-on_continue"):
        return
    # A continuation of that object from its start, as ingest hands one on.
    assert runtime.wait_drained(120), runtime.depths()
    s3, sqs = pipeline.client("s3"), pipeline.client("sqs")
    head = s3.head_object(Bucket=runtime.names.landing_bucket, Key=key)
    checkpoint = {
        "bucket": runtime.names.landing_bucket,
        "key": key,
        "etag": head["ETag"].strip('"'),
        "version_id": head.get("VersionId"),
        "record_type": "order",
        "format": "jsonl",
        "gzip": False,
        "correlation_id": f"grants-{n}",
        "ingested_at": "2026-11-27T06:00:00.000Z",
        "v": 1,
    }
    url = sqs.get_queue_url(QueueName=runtime.names.ingest_continue_queue)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(checkpoint))


def test_every_function_without_one_of_its_grants_fails_with_access_denied(
    pipeline: Pipeline, tmp_path: Path
):
    runtime = pipeline.runtime
    iam_client = pipeline.client("iam")
    lam = pipeline.client("lambda")
    policies = _rendered_policies(pipeline)
    assert set(policies) == set(runtime.topology.functions), "a deployed function not declared"
    for n, (function, policy) in enumerate(sorted(policies.items())):
        if not _used_actions(function):
            _give_work(pipeline, tmp_path, function, 100 + n)  # learn what its work calls
            assert runtime.wait_drained(120), runtime.depths()
        grant = _telling_grant(policy, _used_actions(function))
        role = lam.get_function_configuration(FunctionName=function)["Role"].rsplit("/", 1)[1]
        (name,) = iam_client.list_role_policies(RoleName=role)["PolicyNames"]
        kept = [s for s in policy["Statement"] if s["Sid"] != grant["Sid"]]
        without = {**policy, "Statement": kept}
        iam_client.put_role_policy(
            RoleName=role, PolicyName=name, PolicyDocument=json.dumps(without)
        )
        try:
            _give_work(pipeline, tmp_path, function, n)
            denied = wait_until(
                functools.partial(_denied, function, grant["Action"]),
                what=f"{function} denied {grant['Sid']}",
            )
        finally:
            iam_client.put_role_policy(
                RoleName=role, PolicyName=name, PolicyDocument=json.dumps(policy)
            )
        resources = (
            grant["Resource"] if isinstance(grant["Resource"], list) else [grant["Resource"]]
        )
        assert all(
            any(fnmatch.fnmatchcase(resource, pattern) for pattern in resources)
            for _, resource in denied
        ), (function, denied)
        # The function logs the error once the denial's answer reaches it: after the
        # emulator has recorded the denial, so the log is waited for, not read at once.
        log_file = runtime.options.state_dir / "logs" / f"{function}.log"
        wait_until(
            functools.partial(_logged_denial, log_file),
            what=f"{function} logging the AccessDenied it got",
        )
    assert runtime.wait_drained(180), runtime.depths()
