"""CPU per record of each stage's own work, AWS calls faked, next to the msgspec floor.

Each stage's real Lambda handler (the function its app registers, called as Lambda calls it)
runs on 10,000 synthetic orders in a process of its own (each app imports `chalicelib`),
with `sluice.aws`'s boto3 clients replaced by in-process stubs that answer at once and keep
what was sent. So the figure is the stage's own CPU: parsing, normalising, routing, building
requests, compressing; not botocore, not moto. The stages run in pipeline order and each one
is fed what the one before sent (ingest's raw-queue chunks → cleanse → router's SNS
messages → the consumers, alerts only those its filter policy lets through).

The floor is msgspec decoding and encoding one record's JSON line, measured in the same run:
no stage can do less than read and write its records once.

    .venv/bin/python -m benchmarks.stage_cpu                  # 10,000 records
    .venv/bin/python -m benchmarks.run --only stages          # the same, in `nox -s bench`
    STAGE_CPU_PARTS=1 .venv/bin/python -m benchmarks.stage_cpu  # + the shared steps, timed apart

Figures only; nothing passes or fails.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGE = "bench"
REGION = "us-east-1"
ACCOUNT = "123456789012"
REPEAT = 3  # timed passes per stage (the best is kept); one untimed pass warms up first


@dataclass(frozen=True)
class StageSpec:
    """One stage: its app folder, the attribute Lambda calls, the event it takes."""

    name: str
    app_dir: str
    handler: str
    feed: str  # what it reads: "s3", "raw", "clean", "records", "records-high"
    batch: int  # messages per event (the app's batch_size)


STAGES = (
    StageSpec("ingest", "ingest", "on_object_created", "s3", 1),
    StageSpec("cleanse", "cleanse", "cleanse", "raw", 5),
    StageSpec("router", "router", "route", "clean", 5),
    StageSpec("warehouse", "consumers/warehouse", "consume", "records", 10),
    StageSpec("index", "consumers/index", "consume", "records", 5),
    StageSpec("alerts", "consumers/alerts", "consume", "records-high", 1),
)


# ---------------------------------------------------------------------- stubs


class StubClient:
    """A boto3 client stand-in: every call answers at once, as AWS would on success.

    Messages sent (SQS, SNS) are kept in `sent` as (operation, kwargs) for the next stage.
    """

    def __init__(self, service: str, objects: dict[tuple[str, str], bytes]) -> None:
        self.service = service
        self.objects = objects
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.calls: dict[str, int] = {}
        self._n = 0

    def _id(self) -> str:
        self._n += 1
        return f"{self.service}-{self._n:08d}"

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        if operation.startswith("_"):
            raise AttributeError(operation)

        def call(**kwargs: Any) -> Any:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            return self._answer(operation, kwargs)

        return call

    def _answer(self, operation: str, kw: dict[str, Any]) -> Any:
        if operation in ("send_message", "publish"):
            self.sent.append((operation, kw))
            return {"MessageId": self._id()}
        if operation in ("send_message_batch", "publish_batch"):
            self.sent.append((operation, kw))
            entries = kw.get("Entries") or kw.get("PublishBatchRequestEntries") or []
            return {
                "Successful": [{"Id": e["Id"], "MessageId": self._id()} for e in entries],
                "Failed": [],
            }
        if operation == "get_queue_url":
            return {"QueueUrl": queue_url(kw["QueueName"])}
        if operation == "get_caller_identity":
            return {"Account": ACCOUNT, "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/bench/bench"}
        if operation == "batch_write_item":
            return {"UnprocessedItems": {}}
        if operation in ("get_item",):
            return {}
        if operation == "query":
            return {"Items": [], "Count": 0}
        if operation in ("get_object", "head_object"):
            data = self.objects[(kw["Bucket"], kw["Key"])]
            answer: dict[str, Any] = {
                "ContentLength": len(data),
                "ETag": '"bench"',
                "LastModified": datetime(2026, 12, 4, tzinfo=UTC),
            }
            if operation == "get_object":
                answer["Body"] = io.BytesIO(data)
            return answer
        if operation in ("put_object", "copy_object"):
            return {"ETag": '"stub"'}
        return {}  # put_item, update_item, transact_write_items, delete_item, ...

    # botocore's client has `exceptions` and `meta`; handlers that look at them get enough.
    @property
    def exceptions(self) -> Any:
        from botocore.exceptions import ClientError

        class _Errors:
            def __getattr__(self, name: str) -> type[Exception]:
                return ClientError

        return _Errors()


def queue_url(name: str) -> str:
    return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"


def queue_arn(name: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"


# ---------------------------------------------------------------------- events


class Context:
    """What handlers use of Lambda's context object."""

    def __init__(self, function: str) -> None:
        self.aws_request_id = "bench"
        self.function_name = function
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"
        self.memory_limit_in_mb = 512
        self.log_group_name = f"/aws/lambda/{function}"
        self.log_stream_name = "bench"
        self.identity = None
        self.client_context = None

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def sqs_events(messages: list[dict[str, Any]], queue: str, batch: int) -> list[dict[str, Any]]:
    """Lambda SQS events of `batch` messages each; a message is (body, string attributes)."""
    records = []
    for n, m in enumerate(messages):
        records.append(
            {
                "messageId": f"m-{n:08d}",
                "receiptHandle": f"rh-{n:08d}",
                "body": m["body"],
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1796428800000",
                    "ApproximateFirstReceiveTimestamp": "1796428800000",
                },
                "messageAttributes": {
                    k: {"stringValue": v, "dataType": "String"} for k, v in m["attributes"].items()
                },
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn(queue),
                "awsRegion": REGION,
            }
        )
    return [{"Records": records[i : i + batch]} for i in range(0, len(records), batch)]


def sns_events(messages: list[dict[str, Any]], topic: str) -> list[dict[str, Any]]:
    arn = f"arn:aws:sns:{REGION}:{ACCOUNT}:{topic}"
    return [
        {
            "Records": [
                {
                    "EventSource": "aws:sns",
                    "EventVersion": "1.0",
                    "EventSubscriptionArn": f"{arn}:bench",
                    "Sns": {
                        "Type": "Notification",
                        "MessageId": f"n-{n:08d}",
                        "TopicArn": arn,
                        "Message": m["body"],
                        "Subject": None,
                        "Timestamp": "2026-12-04T00:00:00.000Z",
                        "MessageAttributes": {
                            k: {"Type": "String", "Value": v} for k, v in m["attributes"].items()
                        },
                    },
                }
            ]
        }
        for n, m in enumerate(messages)
    ]


def s3_event(bucket: str, key: str, size: int) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventTime": "2026-12-04T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": key, "size": size, "eTag": "bench", "sequencer": "01"},
                },
            }
        ]
    }


def sent_messages(clients: dict[str, StubClient]) -> list[dict[str, Any]]:
    """Every SQS/SNS message the stage sent: body, string attributes, destination."""
    out: list[dict[str, Any]] = []
    for service in ("sqs", "sns"):
        client = clients.get(service)
        for operation, kw in client.sent if client else []:
            where = str(kw.get("QueueUrl") or kw.get("TopicArn") or "")
            if operation in ("send_message", "publish"):
                entries = [kw]
            else:
                entries = kw.get("Entries") or kw.get("PublishBatchRequestEntries") or []
            for e in entries:
                body = e.get("MessageBody", e.get("Message"))
                attributes = {
                    k: str(v.get("StringValue", ""))
                    for k, v in (e.get("MessageAttributes") or {}).items()
                }
                out.append({"to": where, "body": body, "attributes": attributes})
    return out


# ---------------------------------------------------------------------- one stage (child)


def run_stage(spec: StageSpec, feed: Any, repeat: int) -> dict[str, Any]:
    """In this process: import the app with stub clients, run its handler on `feed`."""
    app_dir = ROOT / spec.app_dir
    sys.path[:0] = [str(app_dir), str(ROOT / "shared")]
    from sluice import aws
    from sluice.config import names

    objects: dict[tuple[str, str], bytes] = {}
    clients: dict[str, StubClient] = {}

    def make_client(service: str, region: str | None, endpoint: str | None) -> Any:
        clients[service] = StubClient(service, objects)
        return clients[service]

    aws._make_client = make_client
    aws.reset_clients()
    import importlib

    app = importlib.import_module("app")
    handler = getattr(app, spec.handler)
    n = names()
    if spec.feed == "s3":
        bucket, key, data = feed
        objects[(bucket, key)] = data
        records = data.count(b"\n")
    else:
        from sluice.envelope import Chunk

        records = sum(len(Chunk.decode(m["body"]).records) for m in feed)
    if spec.feed == "s3":
        events = [s3_event(bucket, key, len(data))]
    elif spec.feed == "raw":
        events = sqs_events(feed, n.raw_queue, spec.batch)
    elif spec.feed == "clean":
        events = sqs_events(feed, n.clean_queue, spec.batch)
    elif spec.feed == "records":
        queue = n.consumer_queue(spec.name)
        events = sqs_events(feed, queue, spec.batch)
    else:
        events = sns_events(feed, n.records_topic)
    context = Context(f"sluice-{spec.name}-{STAGE}-{spec.handler}")

    def one_pass() -> float:
        for client in clients.values():
            client.sent.clear()
        started = time.process_time()
        for event in events:
            answer = handler(event, context)
            if isinstance(answer, dict) and answer.get("batchItemFailures"):
                raise RuntimeError(f"{spec.name}: failures {answer['batchItemFailures'][:3]}")
        return time.process_time() - started

    one_pass()  # warm: validators compiled, clients made, modules imported
    best = min(one_pass() for _ in range(repeat))
    own = own_work(spec.name, one_pass)
    parts = shared_parts(one_pass) if os.environ.get("STAGE_CPU_PARTS") else {}
    if os.environ.get("STAGE_CPU_PROFILE") == spec.name:  # where a stage's time goes
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(one_pass)
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return {
        "cpu_s": best,
        "own_s": own,
        "parts": parts,
        "records": records,
        "events": len(events),
        "sent": sent_messages(clients),
        "calls": {s: dict(c.calls) for s, c in clients.items()},
    }


# The stage's own per-record step, apart from what every stage shares (decoding, the claim's
# hash, encoding and compressing chunks, the ledger): (module, class, method) of each part.
# Cleanse's: the test that a payload passes as it is, and cleansing one that does not.
OWN_WORK = {
    "cleanse": (
        ("chalicelib.catalogue", "RecordType", "clean_as_is"),
        ("chalicelib.catalogue", "RecordType", "cleanse"),
    ),
    "router": (("chalicelib.service", "Router", "route_record"),),
}


def own_work(stage: str, one_pass: Callable[[], float]) -> float | None:
    """CPU seconds inside the stage's own step during one more pass (None: not split out)."""
    found = OWN_WORK.get(stage)
    if found is None:
        return None
    import importlib

    spent = [0.0]
    clock = time.process_time
    restore = []
    for module, cls_name, method in found:
        cls = getattr(importlib.import_module(module), cls_name)
        real = getattr(cls, method)

        def timed(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            started = clock()
            try:
                return _real(*args, **kwargs)
            finally:
                spent[0] += clock() - started

        restore.append((cls, method, real))
        setattr(cls, method, timed)
    try:
        one_pass()
    finally:
        for cls, method, real in restore:
            setattr(cls, method, real)
    return spent[0]


# The shared runtime's per-chunk steps, timed apart with `STAGE_CPU_PARTS=1` (label, module,
# attribute path). Each is called once or twice a chunk, so timing them costs nothing a record;
# a step nested in another is counted in both (the labels say so).
SHARED_PARTS = (
    ("decode chunk (SQS body)", "sluice.batch", "chunk_from_sqs_body"),
    ("decode chunk (SNS record)", "sluice.stage", "chunk_from_sns_record"),
    ("  of it base64 + inflate", "sluice.envelope", "_records_of"),
    ("  of it records -> Record rows", "sluice.envelope", "_records_from_json"),
    ("claim's payload hash", "sluice.stage", "chunk_payload_hash"),
    ("record loop (run_records)", "sluice.stage", "StageRuntime.run_records"),
    ("encode chunks", "sluice.envelope", "Chunk.encode"),
    ("  of it compress + base64", "sluice.envelope", "_compress"),
)


def shared_parts(one_pass: Callable[[], float]) -> dict[str, float]:
    """CPU seconds in each of `SHARED_PARTS` during one more pass (those the code has)."""
    import importlib

    spent: dict[str, float] = {}
    restore: list[tuple[Any, str, Any]] = []
    clock = time.process_time
    for label, module_name, path in SHARED_PARTS:
        owner: Any = importlib.import_module(module_name)
        *outer, name = path.split(".")
        for part in outer:
            owner = getattr(owner, part)
        real = getattr(owner, name, None)
        if real is None:
            continue

        def timed(*args: Any, _real: Any = real, _label: str = label, **kwargs: Any) -> Any:
            started = clock()
            try:
                return _real(*args, **kwargs)
            finally:
                spent[_label] = spent.get(_label, 0.0) + clock() - started

        restore.append((owner, name, owner.__dict__.get(name, real)))
        setattr(owner, name, timed)
    try:
        one_pass()
    finally:
        for owner, name, real in reversed(restore):
            setattr(owner, name, real)
    return {label: spent[label] for label, _, _ in SHARED_PARTS if label in spent}


def child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", required=True)
    parser.add_argument("--feed", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--repeat", type=int, default=REPEAT)
    args = parser.parse_args(argv)
    spec = next(s for s in STAGES if s.name == args.stage)
    feed = pickle.loads(args.feed.read_bytes())
    result = run_stage(spec, feed, args.repeat)
    args.out.write_bytes(pickle.dumps(result))
    return 0


# ---------------------------------------------------------------------- the run (parent)


def stage_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    env.update(
        SLUICE_STAGE=STAGE,
        SLUICE_INGEST_TYPES="order,customer",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        LOG_LEVEL="WARNING",
        POWERTOOLS_METRICS_NAMESPACE="bench",
        SLUICE_METRICS="off",
    )
    return env


def floor_us(lines: list[bytes], repeat: int = REPEAT) -> float:
    """µs per record to decode one record's JSON with msgspec and encode it again."""
    import msgspec

    decode, encode = msgspec.json.Decoder().decode, msgspec.json.Encoder().encode
    best = float("inf")
    for _ in range(repeat + 1):
        started = time.process_time()
        for line in lines:
            encode(decode(line))
        best = min(best, time.process_time() - started)
    return best * 1e6 / len(lines)


def run(records: int = 10_000, repeat: int = REPEAT, say: Callable[[str], None] = print) -> Any:
    """Every stage in pipeline order; returns (floor µs, rows of per-stage figures)."""
    from benchmarks.synthetic import write_orders

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "orders.jsonl"
        write_orders(path, records)
        data = path.read_bytes()
        floor = floor_us(data.splitlines(), repeat)
        say(f"[stages] msgspec floor {floor:.1f} us per record")
        feeds: dict[str, Any] = {"s3": (f"sluice-{STAGE}-landing", "incoming/order/b.jsonl", data)}
        rows: list[dict[str, Any]] = []
        for spec in STAGES:
            feed = feeds[spec.feed]
            (work / "feed").write_bytes(pickle.dumps(feed))
            out = work / f"{spec.name}.out"
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.stage_cpu",
                    "--child",
                    "--stage",
                    spec.name,
                    "--feed",
                    str(work / "feed"),
                    "--out",
                    str(out),
                    "--repeat",
                    str(repeat),
                ],
                cwd=ROOT,
                env=stage_env(),
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                say(f"[stages] {spec.name} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
                break
            if os.environ.get("STAGE_CPU_PROFILE") == spec.name:
                say(done.stderr[-20000:])
            result = pickle.loads(out.read_bytes())
            sent = result["sent"]
            if spec.name == "ingest":
                feeds["raw"] = [m for m in sent if m["to"].endswith("-raw")]
            elif spec.name == "cleanse":
                feeds["clean"] = [m for m in sent if m["to"].endswith("-clean")]
            elif spec.name == "router":
                feeds["records"] = sent
                feeds["records-high"] = [
                    m for m in sent if m["attributes"].get("priority") == "high"
                ]
            us = result["cpu_s"] * 1e6 / max(result["records"], 1)
            own = result["own_s"]
            rows.append(
                {
                    "stage": spec.name,
                    "own_us_per_record": None
                    if own is None
                    else round(own * 1e6 / max(result["records"], 1), 2),
                    "records": result["records"],
                    "events": result["events"],
                    "us_per_record": round(us, 2),
                    "ratio_to_floor": round(us / floor, 2),
                    "messages_out": len(sent),
                    "calls": result["calls"],
                }
            )
            say(f"[stages] {spec.name}: {us:.1f} us per record ({us / floor:.1f}x the floor)")
            for label, seconds in result.get("parts", {}).items():
                say(f"[stages]   {label}: {seconds * 1e6 / max(result['records'], 1):.1f} us")
    return floor, rows


# Issue 20's targets, as multiples of the floor (the other stages have none yet).
TARGET_X_FLOOR = {"cleanse": 6.0, "router": 3.0}


def _target(stage: str, ratio: float) -> str:
    target = TARGET_X_FLOOR.get(stage)
    if target is None:
        return ""
    return f"<= {target:g}x: {'yes' if ratio <= target else 'no'}"


def report(
    table: Callable[[str, list[str], list[list[Any]]], None],
    say: Callable[[str], None],
    records: int = 10_000,
) -> dict[str, Any]:
    """`benchmarks.run --only stages`: the table, and the figures for results.json."""
    floor, rows = run(records, REPEAT, say)
    table(
        f"CPU per record of each stage's own work, AWS calls stubbed ({records:,} synthetic "
        f"orders; floor = msgspec decode + encode of one record: {floor:.1f} us)",
        [
            "stage",
            "records in",
            "us/record",
            "x floor",
            "of it the stage's own step",
            "messages out",
            "target",
        ],
        [
            [
                r["stage"],
                f"{r['records']:,}",
                f"{r['us_per_record']:.1f}",
                f"{r['ratio_to_floor']:.1f}",
                "" if r["own_us_per_record"] is None else f"{r['own_us_per_record']:.1f}",
                r["messages_out"],
                _target(r["stage"], r["ratio_to_floor"]),
            ]
            for r in rows
        ],
    )
    return {"records": records, "floor_us": round(floor, 2), "stages": rows}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=REPEAT)
    args = parser.parse_args(argv)
    floor, rows = run(args.records, args.repeat)
    print(json.dumps({"floor_us": round(floor, 2), "stages": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
