"""Peak memory of ingest on large gzip JSON Lines objects (a measurement, not a test).

Starts moto's server on loopback, uploads generated gzip JSON Lines objects of the given
sizes (streamed from a temp dir), and runs ingest on each in a fresh subprocess pointed at the
server, so the peak RSS (VmHWM) is ingest's own: "before" is the process with everything
imported and clients made, "after" once the object is done. Chunks go to a stub SQS sink
that only counts; claims, the ledger and S3 reads go to moto. Prints figures; no pass/fail.

    .venv/bin/python benchmarks/ingest_memory.py              # 10 MB and 200 MB objects
    .venv/bin/python benchmarks/ingest_memory.py --sizes 10 --tracemalloc
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGE = "bench"
MB = 1000 * 1000


def _env(endpoint: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SLUICE_STAGE=STAGE,
        SLUICE_INGEST_TYPES="order",
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        PYTHONPATH=os.pathsep.join([str(ROOT / "ingest"), str(ROOT / "shared")]),
        LOG_LEVEL="WARNING",
    )
    env.pop("AWS_SESSION_TOKEN", None)
    return env


def generate(path: Path, target_bytes: int) -> int:
    """A gzip JSON Lines file of about `target_bytes` (compressed); returns the line count."""
    rng = random.Random(42)
    lines = 0
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
        while raw.tell() < target_bytes:
            batch = []
            for _ in range(2000):
                batch.append(
                    json.dumps(
                        {
                            "order_id": f"o-{lines}",
                            "customer_id": f"c-{rng.randrange(10**6)}",
                            "amount": round(rng.random() * 1000, 2),
                            "token": rng.randbytes(300).hex(),
                            "items": [
                                {"sku": f"s-{rng.randrange(5000)}", "qty": rng.randrange(1, 9)}
                            ],
                        }
                    )
                )
                lines += 1
            gz.write(("\n".join(batch) + "\n").encode())
    return lines


def parent(sizes: list[int], use_tracemalloc: bool, json_path: str | None = None) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    from sluice_tools.motocompat.server import quiet

    # The emulator as the local runtime runs it: moto's own TransactWriteItems deep-copies
    # the ledger table for every action of every ledger write (each entry is a transaction
    # with the object's progress item), which grew this process past 16 GB on the 200 MB
    # object.
    quiet()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = _env(endpoint)
    os.environ.update({k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")})
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    for bucket in ("landing", "quarantine", "payloads"):
        s3.create_bucket(Bucket=f"sluice-{STAGE}-{bucket}")
    ddb.create_table(
        TableName=f"sluice-{STAGE}-idempotency",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.create_table(
        TableName=f"sluice-{STAGE}-ledger",
        KeySchema=[
            {"AttributeName": "correlation_id", "KeyType": "HASH"},
            {"AttributeName": "entry", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "correlation_id", "AttributeType": "S"},
            {"AttributeName": "entry", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    rows: list[dict[str, Any]] = []
    print(f"moto server at {endpoint}")
    print(
        f"{'object':>10} {'sent':>13} {'records':>10} {'chunks':>7} "
        f"{'seconds':>8} {'peak RSS before':>15} {'peak RSS after':>15} {'tracemalloc peak':>17}"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for size in sizes:
                path = Path(tmp) / f"orders-{size}mb.jsonl.gz"
                generate(path, size * MB)
                key = f"incoming/order/bench/{path.name}"
                s3.upload_file(str(path), f"sluice-{STAGE}-landing", key)
                etag = s3.head_object(Bucket=f"sluice-{STAGE}-landing", Key=key)["ETag"]
                compressed = path.stat().st_size
                path.unlink()
                args = [sys.executable, __file__, "--child", key, etag.strip('"')]
                if use_tracemalloc:
                    args.append("--tracemalloc")
                out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    print(out.stderr[-3000:])
                    raise SystemExit(f"child failed for {size} MB")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                peak = f"{r['tracemalloc_peak'] / 2**20:.1f} MiB" if r["tracemalloc_peak"] else "-"
                print(
                    f"{compressed / MB:>7.1f} MB {r['sent_bytes'] / MB:>10.1f} MB "
                    f"{r['records']:>10} {r['chunks']:>7} {r['seconds']:>8.1f} "
                    f"{r['maxrss_before'] / 1024:>12.1f} MiB {r['maxrss_after'] / 1024:>11.1f} MiB "
                    f"{peak:>17}"
                )
                s3.delete_object(Bucket=f"sluice-{STAGE}-landing", Key=key)
                rows.append({"size_mb": size, "compressed_bytes": compressed, **r})
                if json_path:
                    Path(json_path).write_text(json.dumps(rows, indent=2))
    finally:
        server.stop()


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM), in KiB.

    Not `ru_maxrss`: on Linux that survives fork and exec, so a child started by a parent
    holding the moto server's objects would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class CountingSink:
    """Stands in for SQS: counts what would have been sent, keeps nothing."""

    def __init__(self) -> None:
        self.entries = 0
        self.bytes = 0

    def get_queue_url(self, QueueName: str) -> dict[str, str]:
        return {"QueueUrl": f"https://sink/{QueueName}"}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.entries += len(Entries)
        self.bytes += sum(len(e["MessageBody"]) for e in Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    def send_message(self, **_: Any) -> dict[str, Any]:
        return {}


def child(key: str, etag: str, use_tracemalloc: bool) -> None:
    import tracemalloc

    from chalicelib.service import Ingestor
    from sluice.config import get_settings

    get_settings()
    sink = CountingSink()
    ingestor = Ingestor(sqs=sink)
    ingestor.s3.head_object(Bucket=f"sluice-{STAGE}-landing", Key=key)  # warm the client
    ingestor.runtime.idempotency.client  # noqa: B018 (warm the DynamoDB client)
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventTime": "2026-11-27T06:00:00.000Z",
                "s3": {
                    "bucket": {"name": f"sluice-{STAGE}-landing"},
                    "object": {"key": key, "eTag": etag},
                },
            }
        ]
    }
    before = peak_rss_kib()
    if use_tracemalloc:
        tracemalloc.start()
    started = time.perf_counter()
    results: list[Any] = []
    original = ingestor.ingest_object

    def keep(*a: Any, **kw: Any) -> Any:
        value = original(*a, **kw)
        results.append(value)
        return value

    ingestor.ingest_object = keep  # type: ignore[method-assign]
    ingestor.handle_s3_event(event)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if use_tracemalloc else 0
    after = peak_rss_kib()
    outcome = results[0].outcome
    print(
        json.dumps(
            {
                "records": outcome.records_in,
                "chunks": sink.entries,
                "sent_bytes": sink.bytes,
                "seconds": seconds,
                "maxrss_before": before,
                "maxrss_after": after,
                "tracemalloc_peak": peak,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,200", help="object sizes in MB (compressed)")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace allocations")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    parser.add_argument("--child", nargs=2, metavar=("KEY", "ETAG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.tracemalloc)
    else:
        parent([int(s) for s in args.sizes.split(",")], args.tracemalloc, args.json)


if __name__ == "__main__":
    main()
