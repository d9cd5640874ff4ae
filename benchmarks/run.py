"""`nox -s bench`: cold start, pipeline throughput, requests and cost, ingest memory.

Prints a table per benchmark and writes the same figures to .sluice/bench/results.json.
Figures only: nothing here passes or fails on time.

    python -m benchmarks.run                 # 1k and 10k records, chunks of one at 1k, 10 MB
    python -m benchmarks.run --full          # adds 100k records and the 200 MB object

Throughput runs have nothing in the way (as `sluice local run`); requests and cost come from
separate metered runs (`--cost-sizes`, 10k by default), since reading every request body
costs the emulator about 15% of its CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import cold_start, cost, first_result, stage_cpu
from benchmarks.meter import Meter
from benchmarks.pipeline import RunFigures, ledger_statuses, make_runtime, metered_run

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".sluice" / "bench"
# Targets of the second performance round (issue 20); the first round's were $0.10 and 2,000.
TARGET_COST = 0.04  # $ per million 1 KB records, landing → warehouse
TARGET_COST_ALL = 0.70  # $ per million 1 KB records, whole pipeline
TARGET_RATIO = 1.10  # cold start vs import boto3
TARGET_RPS = 3500  # records/s at 100k on 2 cores
TARGET_MEMORY = 1.2  # peak RSS at 200 MB vs 10 MB


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n## {title}")
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


# ---------------------------------------------------------------------- pipeline


def pipeline_scenario(
    meter: Meter,
    sizes: list[int],
    cost_sizes: list[int],
    extra_env: dict[str, str],
    label: str,
    timeout_s: float,
    with_cold_start: bool,
    repeat: int,
) -> tuple[list[RunFigures], list[RunFigures], list[cold_start.ColdStart]]:
    """Throughput runs of `sizes` with nothing in the way (as `sluice local run`), then
    metered runs of `cost_sizes` for requests and cost (the meter reads every request body,
    which costs the emulator ~15% of its CPU: those runs are slower)."""
    state = OUT / "local"
    runtime = make_runtime(state, ROOT, extra_env, say=lambda line: None)
    say(f"[{label}] starting the local runtime (moto + sluice deploy of stage local) ...")
    started = time.monotonic()
    timed: list[RunFigures] = []
    metered: list[RunFigures] = []
    colds: list[cold_start.ColdStart] = []
    chunk = int(extra_env["SLUICE_CHUNK_MAX_RECORDS"]) if extra_env else None
    try:
        runtime.start()
        say(f"[{label}] runtime ready in {time.monotonic() - started:.0f} s")
        if with_cold_start:
            packages = cold_start.packages_of(runtime)
            say(f"[cold start] {len(packages)} apps x {repeat} samples ...")
            colds = cold_start.measure(packages, repeat=repeat)
        meter.uninstall()
        for n in sizes:
            timed.append(metered_run(runtime, None, n, f"{label}-{n}", chunk, timeout_s, say))
        meter.install()
        for n in cost_sizes:
            metered.append(
                metered_run(runtime, meter, n, f"{label}-metered-{n}", chunk, timeout_s, say)
            )
        statuses = ledger_statuses(runtime, ROOT)
        for run in timed + metered:
            run.ledger_status = statuses.get(f"bench-{run.label}.jsonl", "not in the ledger")
    finally:
        runtime.stop()
    return timed, metered, colds


def print_cold(colds: list[cold_start.ColdStart]) -> list[dict[str, Any]]:
    rows = [
        [
            c.app,
            f"{c.median_ms:.1f}",
            f"{c.boto3_median_ms:.1f}",
            f"{c.ratio:.2f}",
            "yes" if c.ratio <= TARGET_RATIO else "no",
            " ".join(f"{s:.0f}" for s in c.samples_ms),
        ]
        for c in colds
    ]
    table(
        f"Cold start: import of the deployed package (median ms; target <= {TARGET_RATIO}x boto3)",
        ["app", "import app", "import boto3", "ratio", "<= target", "samples (ms)"],
        rows,
    )
    return [
        {
            "app": c.app,
            "import_app_ms": round(c.median_ms, 2),
            "import_boto3_ms": round(c.boto3_median_ms, 2),
            "ratio": round(c.ratio, 3),
            "samples_ms": list(c.samples_ms),
        }
        for c in colds
    ]


def print_throughput(runs: list[RunFigures]) -> list[dict[str, Any]]:
    rows = [
        [
            r.label,
            f"{r.records:,}",
            f"{r.file_bytes / 1e6:.1f}",
            f"{r.seconds:.1f}",
            f"{r.records_per_second:,.0f}",
            "yes" if r.drained else "NO",
            sum(u.invocations for u in r.functions.values()),
            r.ledger_status,
        ]
        for r in runs
    ]
    table(
        "Pipeline throughput on the local runtime (upload -> drained; "
        f"target >= {TARGET_RPS} records/s at 100k)",
        ["run", "records", "MB", "seconds", "records/s", "drained", "invocations", "ledger"],
        rows,
    )
    return [
        {
            "run": r.label,
            "records": r.records,
            "file_bytes": r.file_bytes,
            "seconds": round(r.seconds, 2),
            "records_per_second": round(r.records_per_second, 1),
            "drained": r.drained,
            "chunk_max_records": r.chunk_max_records,
            "ledger": r.ledger_status,
            "functions": {
                k: {
                    "invocations": u.invocations,
                    "failures": u.failures,
                    "handler_ms": round(u.duration_ms, 1),
                    "cpu_ms": round(u.cpu_ms, 1),
                    "memory_mb": u.memory_mb,
                }
                for k, u in sorted(r.functions.items())
            },
        }
        for r in runs
    ]


def print_cpu(run: RunFigures, top: int = 12) -> dict[str, Any]:
    """Where the run's CPU went: each function's workers, and the emulator by operation.

    On 2 cores the throughput is bounded by the sum of these seconds, so this table says
    what to make cheaper.
    """
    functions = {name: use.cpu_ms / 1000 for name, use in run.functions.items()}
    by_operation: dict[str, float] = {}
    requests: dict[str, int] = {}
    for (_caller, service, operation, _resource), tally in run.tallies.items():
        key = f"{service}:{operation}"
        by_operation[key] = by_operation.get(key, 0.0) + tally.emulator_cpu_ms / 1000
        requests[key] = requests.get(key, 0) + tally.requests
    emulator = sum(by_operation.values())
    per = 100_000 / run.records if run.records else 0.0  # CPU-s per 100k records: comparable
    rows: list[list[Any]] = [
        [
            "runtime process (moto, pollers)",
            f"{run.runtime_cpu_s:.1f}",
            f"{run.runtime_cpu_s * per:.1f}",
            "",
        ]
    ]
    if by_operation:  # a metered run: moto's share, by operation
        rows.append(
            ["  of it in moto's request handlers", f"{emulator:.1f}", f"{emulator * per:.1f}", ""]
        )
    for key, seconds in sorted(by_operation.items(), key=lambda kv: -kv[1])[:top]:
        each = seconds * 1000 / requests[key] if requests[key] else 0.0
        rows.append(
            [
                f"    {key}",
                f"{seconds:.1f}",
                f"{seconds * per:.1f}",
                f"{requests[key]} x {each:.2f} ms",
            ]
        )
    for name, seconds in sorted(functions.items(), key=lambda kv: -kv[1]):
        rows.append([f"worker {name}", f"{seconds:.1f}", f"{seconds * per:.1f}", ""])
    total = run.runtime_cpu_s + sum(functions.values())
    rows.append(
        [
            "total",
            f"{total:.1f}",
            f"{total * per:.1f}",
            f"{total / run.seconds:.2f} cores busy on average",
        ]
    )
    table(
        f"CPU seconds: {run.label} ({run.seconds:.0f} s)",
        ["where", "CPU s", "per 100k records", "note"],
        rows,
    )
    return {
        "run": run.label,
        "runtime_process_s": round(run.runtime_cpu_s, 2),
        "emulator_by_operation_s": {k: round(v, 3) for k, v in by_operation.items()},
        "workers_s": {k: round(v, 3) for k, v in functions.items()},
        "total_s": round(total, 2),
        "total_s_per_100k": round(total * per, 2),
    }


def print_cost(run: RunFigures, prices: dict[str, Any], memory_stage: str) -> dict[str, Any]:
    stages, excluded, memories = cost.costs(run, prices, ROOT, memory_stage)
    order = {a: i for i, a in enumerate(cost.LANDING_TO_WAREHOUSE)}
    apps = sorted(stages, key=lambda a: (order.get(a, 9), a))
    by_api: list[list[Any]] = []
    for app in apps:
        for key, per_k in sorted(stages[app].requests.items()):
            if per_k <= 0:
                continue
            by_api.append([app, key, f"{per_k:.2f}"])
    table(
        f"AWS requests per 1,000 records by API: {run.label} "
        f"(chunk_max_records={run.chunk_max_records or 'default'})",
        ["stage", "service:operation", "per 1k records"],
        by_api,
    )
    rows = []
    for app in apps:
        s = stages[app]
        items = ", ".join(f"{k} {v:.4f}" for k, v in sorted(s.dollars.items()) if v)
        rows.append([app, f"{s.total_requests:.1f}", f"{s.total_dollars:.4f}", items])
    path_req, path_usd = cost.path_total(stages, cost.LANDING_TO_WAREHOUSE)
    all_req, all_usd = cost.path_total(stages, None)
    path_wall = cost.path_total_at_emulator(stages, cost.LANDING_TO_WAREHOUSE, prices, run.records)
    all_wall = cost.path_total_at_emulator(stages, None, prices, run.records)
    rows.append(
        [
            "landing -> warehouse",
            f"{path_req:.1f}",
            f"{path_usd:.4f}",
            f"target <= {TARGET_COST:.2f}: {'yes' if path_usd <= TARGET_COST else 'no'}; "
            f"with GB-s from wall time at moto: {path_wall:.4f}",
        ]
    )
    rows.append(
        [
            "whole pipeline",
            f"{all_req:.1f}",
            f"{all_usd:.4f}",
            f"target <= {TARGET_COST_ALL:.2f}: {'yes' if all_usd <= TARGET_COST_ALL else 'no'}; "
            f"with GB-s from wall time at moto: {all_wall:.4f}",
        ]
    )
    table(
        f"Lambda GB-seconds per million records: {run.label} (modelled = CPU measured in the "
        "worker + each AWS call x prices.json lambda.request_wait_ms; wall = time at moto)",
        ["stage", "invocations", "modelled", "CPU only", "wall at moto"],
        [
            [
                a,
                stages[a].invocations,
                f"{stages[a].gb_seconds * 1e6 / run.records:.1f}",
                f"{stages[a].gb_seconds_cpu * 1e6 / run.records:.1f}",
                f"{stages[a].gb_seconds_at_emulator * 1e6 / run.records:.1f}",
            ]
            for a in apps
        ],
    )
    table(
        f"Requests per 1,000 records and $ per million 1 KB records: {run.label} "
        f"(prices {prices['date']}; Lambda memory from deploy.yaml, stage "
        f"{memory_stage!r})",
        ["stage", "requests/1k", "$/M records", "by item ($/M)"],
        rows,
    )
    say(
        f"  left out of {run.label}: {excluded.empty_polls} empty polls, "
        f"{excluded.emulation} calls on the runtime's S3/SNS stand-in queues, harness "
        + ", ".join(f"{k} {v}" for k, v in sorted(excluded.harness.items()))
    )
    return {
        "run": run.label,
        "records": run.records,
        "chunk_max_records": run.chunk_max_records,
        "memory_stage": memory_stage,
        "memory_mb": memories,
        "stages": {
            a: {
                "requests_per_1k": {k: round(v, 3) for k, v in stages[a].requests.items()},
                "dollars_per_million": {k: round(v, 5) for k, v in stages[a].dollars.items()},
                "total_requests_per_1k": round(stages[a].total_requests, 3),
                "total_dollars_per_million": round(stages[a].total_dollars, 5),
                "invocations": stages[a].invocations,
                "gb_seconds": round(stages[a].gb_seconds, 4),
                "gb_seconds_cpu": round(stages[a].gb_seconds_cpu, 4),
                "gb_seconds_at_emulator": round(stages[a].gb_seconds_at_emulator, 4),
            }
            for a in apps
        },
        "landing_to_warehouse": {
            "requests_per_1k": round(path_req, 3),
            "dollars_per_million": round(path_usd, 5),
            "dollars_per_million_gb_s_at_emulator": round(path_wall, 5),
        },
        "whole_pipeline": {
            "requests_per_1k": round(all_req, 3),
            "dollars_per_million": round(all_usd, 5),
            "dollars_per_million_gb_s_at_emulator": round(all_wall, 5),
        },
        "excluded": {
            "empty_polls": excluded.empty_polls,
            "stand_in_queue_calls": excluded.emulation,
            "harness": dict(excluded.harness),
        },
    }


# ---------------------------------------------------------------------- ingest memory


def ingest_memory(sizes: list[int]) -> list[dict[str, Any]]:
    out = OUT / "ingest_memory.json"
    out.unlink(missing_ok=True)
    say(f"[ingest memory] objects of {', '.join(map(str, sizes))} MB ...")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "ingest_memory.py"),
            "--sizes",
            ",".join(map(str, sizes)),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        say(done.stdout[-2000:] + done.stderr[-2000:])
    rows: list[dict[str, Any]] = json.loads(out.read_text()) if out.is_file() else []
    base = rows[0]["maxrss_after"] if rows else 0
    table(
        f"ingest peak memory (VmHWM of a fresh process; target: largest <= {TARGET_MEMORY}x "
        "smallest)",
        ["object (gz)", "records", "chunks", "seconds", "RSS before MiB", "peak RSS MiB", "x"],
        [
            [
                f"{r['compressed_bytes'] / 1e6:.1f} MB",
                f"{r['records']:,}",
                r["chunks"],
                f"{r['seconds']:.1f}",
                f"{r['maxrss_before'] / 1024:.1f}",
                f"{r['maxrss_after'] / 1024:.1f}",
                f"{r['maxrss_after'] / base:.2f}" if base else "-",
            ]
            for r in rows
        ],
    )
    if not rows:
        print("  ingest_memory.py produced no figures (see stderr)")
    return rows


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sluice benchmarks (figures, no pass/fail).")
    parser.add_argument(
        "--full", action="store_true", help="also 100k records and the 200 MB ingest object"
    )
    parser.add_argument("--sizes", help="records per throughput run, e.g. 1000,10000")
    parser.add_argument(
        "--cost-sizes",
        default="10000",
        help="records per metered run (requests and cost), e.g. 10000,100000",
    )
    parser.add_argument("--max-records", type=int, help="skip pipeline runs larger than this")
    parser.add_argument(
        "--one-record-size",
        type=int,
        default=1000,
        help="records for the chunks-of-one run (0: skip it)",
    )
    parser.add_argument("--memory-sizes", help="ingest object sizes in MB (default 10; 10,200)")
    parser.add_argument(
        "--cost-memory-stage",
        default="prod",
        help="stage whose lambda_memory_size prices GB-seconds",
    )
    parser.add_argument("--repeat", type=int, default=7, help="cold start samples per app")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to drain per run")
    parser.add_argument(
        "--only",
        default="cold,pipeline,one,memory,first,stages",
        help="comma list of: cold, pipeline, one, memory, first, stages",
    )
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([1000, 10000, 100000] if args.full else [1000, 10000])
    )
    cost_sizes = [int(s) for s in args.cost_sizes.split(",") if s]
    if args.max_records:
        sizes = [s for s in sizes if s <= args.max_records]
        cost_sizes = [s for s in cost_sizes if s <= args.max_records]
    memory_sizes = (
        [int(s) for s in args.memory_sizes.split(",")]
        if args.memory_sizes
        else ([10, 200] if args.full else [10])
    )

    OUT.mkdir(parents=True, exist_ok=True)
    prices = cost.load_prices()
    results: dict[str, Any] = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "cpus": _cpus(),
            "platform": platform.platform(),
        },
        "command": " ".join(["python -m benchmarks.run", *(argv or sys.argv[1:])]),
        "prices": {"date": prices["date"], "source": prices["source"]},
    }
    meter = Meter()
    meter.install()
    try:
        if "pipeline" in only or "cold" in only:
            runs, costed, colds = pipeline_scenario(
                meter,
                sizes if "pipeline" in only else [],
                cost_sizes if "pipeline" in only else [],
                {},
                "chunked",
                args.timeout,
                "cold" in only,
                args.repeat,
            )
            if colds:
                results["cold_start"] = print_cold(colds)
            if runs:
                results["throughput"] = print_throughput(runs)
            if runs or costed:
                results["cpu"] = [print_cpu(r) for r in runs + costed]
            if costed:
                results["cost"] = [print_cost(r, prices, args.cost_memory_stage) for r in costed]
        if "one" in only and args.one_record_size:
            _, one, _ = pipeline_scenario(
                meter,
                [],
                [args.one_record_size],
                {"SLUICE_CHUNK_MAX_RECORDS": "1"},
                "one-per-chunk",
                args.timeout,
                False,
                args.repeat,
            )
            results.setdefault("cost", []).extend(
                print_cost(r, prices, args.cost_memory_stage) for r in one
            )
    finally:
        meter.uninstall()
        (OUT / "results.json").write_text(json.dumps(results, indent=2))
    if "memory" in only:
        results["ingest_memory"] = ingest_memory(memory_sizes)
    if "stages" in only:
        results["stage_cpu"] = stage_cpu.report(table, say)
    if "first" in only:
        results["first_result"] = first_result.run(table)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nfigures written to {(OUT / 'results.json').relative_to(ROOT)}")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())
