"""`sluice trace` and `sluice logs` after one local run of the samples (one runtime, ~60 s).

The samples' README names the records: `o-1002` is a good order (curated and indexed),
`o-1004` a high-priority one (alerted too), `o-1021` is quarantined by cleanse for its
missing customer id.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.waiting import wait_until

from sluice.registry import load_registry
from sluice_tools.cli import main
from sluice_tools.deploy.glue import database_name
from sluice_tools.ledger import ledger_report
from sluice_tools.ledger.command import repo_sinks
from sluice_tools.local.commands import landing_key, sample_files
from sluice_tools.local.emulator import CREDENTIALS
from sluice_tools.local.runtime import LocalRuntime, Options
from sluice_tools.stages import PIPELINE_STAGES
from sluice_tools.trace.command import Where, correlation_of_object, object_events, object_summary
from sluice_tools.trace.logsource import EventLog, LocalLogFiles, events_log_group
from sluice_tools.trace.tracer import NotFoundError, Stores, Tracer

from .conftest import ROOT

pytestmark = pytest.mark.slow

STATE = ROOT / ".sluice" / "tests-trace"
ORDERS = "incoming/order/orders-2026-11-27.jsonl"


@pytest.fixture(scope="module")
def runtime(aws_env: None) -> Iterator[LocalRuntime]:
    shutil.rmtree(STATE / "logs", ignore_errors=True)  # record ids repeat from run to run
    rt = LocalRuntime(Options(state_dir=STATE, root=ROOT, console=False, schedules=False))
    rt.start()
    try:
        rt.upload([(p, landing_key(p)) for p in sample_files(ROOT)])
        assert rt.wait_drained(240), rt.depths()
        yield rt
    finally:
        rt.stop()


@pytest.fixture(scope="module")
def where(runtime: LocalRuntime) -> Where:
    stores = Stores(runtime.names, runtime.client("dynamodb"), runtime.client("s3"))
    return Where(LocalLogFiles(STATE / "logs"), stores, None, True)


@pytest.fixture(scope="module")
def tracer(where: Where) -> Tracer:
    return Tracer(where.logs, where.stores)


def _trace_key(tracer: Tracer, key: str) -> Any:
    (record_id,) = tracer.record_ids_for_key("order", key)
    return tracer.trace_record(record_id)


def test_a_delivered_order_shows_its_curated_line_and_index_item(tracer):
    trace = _trace_key(tracer, "o-1002")
    endings = {e.kind: e for e in trace.endings}
    assert set(endings) == {"curated", "index"}
    curated = endings["curated"]
    assert curated.detail["row"]["order_id"] == "o-1002"
    assert curated.detail["row"]["_record_id"] == trace.record_id
    assert curated.where.endswith(f"line {curated.detail['line']}")
    assert endings["index"].where.endswith(trace.record_id)
    assert endings["index"].detail["latest"] is True
    assert endings["index"].detail["payload"]["order_id"] == "o-1002"  # decoded, any layout
    # Every stage, in order, each with the chunk it handled.
    stages = [hop.stage for hop in trace.hops]
    assert stages[: len(PIPELINE_STAGES)] == list(PIPELINE_STAGES)
    assert {"sink:warehouse", "sink:index"} <= set(stages)
    assert "sink:alerts" not in stages  # not high priority: the alerts consumer never saw it
    assert all(hop.chunk_id.startswith("c-") and hop.at for hop in trace.hops)
    assert trace.hops[0].request_id  # ingest's "segment done" line


def test_an_alerted_order_shows_its_alert(tracer):
    trace = _trace_key(tracer, "o-1004")
    (alert,) = [e for e in trace.endings if e.kind == "alert"]
    assert alert.detail["message"].startswith("High-value order o-1004: 1,250.00 GBP")
    assert trace.record_id in alert.detail["subject"]
    assert {"curated", "index", "alert"} == {e.kind for e in trace.endings}


def test_a_quarantined_order_shows_its_reason_and_raw_input(tracer):
    trace = _trace_key(tracer, "o-1021")
    (ending,) = trace.endings
    assert ending.kind == "quarantine"
    assert ending.detail["reason"] == "invalid order: data must contain ['customer_id'] properties"
    assert ending.detail["raw"]["order_id"] == "o-1021"
    assert "customer_id" not in ending.detail["raw"]
    assert [hop.stage for hop in trace.hops] == ["ingest", "cleanse"]


def test_an_unknown_key_or_record_is_not_found(tracer, runtime, monkeypatch):
    with pytest.raises(NotFoundError, match="not found"):
        tracer.record_ids_for_key("order", "o-nope")
    monkeypatch.setenv("AWS_ENDPOINT_URL", runtime.endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    from sluice import aws

    aws.reset_clients()
    args = ["--stage", runtime.names.stage, "--log-dir", str(STATE / "logs")]
    result = CliRunner().invoke(main, ["trace", "r-0000", *args])
    assert result.exit_code == 4, result.output
    assert "not found" in result.output
    result = CliRunner().invoke(main, ["trace", "--type", "order", "--key", "o-nope", *args])
    assert result.exit_code == 4
    assert "not found" in result.output
    # The same command finds a real one, and prints its ending.
    result = CliRunner().invoke(main, ["trace", "--type", "order", "--key", "o-1021", *args])
    assert result.exit_code == 0, result.output
    assert "quarantine: cleanse/order/" in result.output
    result = CliRunner().invoke(
        main, ["trace", "--type", "order", "--key", "o-1021", "--json", *args]
    )
    doc = json.loads(result.output)
    assert doc["natural_key"] == "o-1021"
    assert [e["kind"] for e in doc["endings"]] == ["quarantine"]
    assert [h["stage"] for h in doc["hops"]] == ["ingest", "cleanse"]
    aws.reset_clients()


def test_an_object_trace_counts_what_the_ledger_counts(where, runtime):
    correlation_id, _ = correlation_of_object(where, ORDERS)
    summary = object_summary(where, correlation_id, sqs=runtime.client("sqs"))
    report = ledger_report(
        runtime.names,
        correlation_id=correlation_id,
        sinks=repo_sinks(ROOT),
        dynamodb=runtime.client("dynamodb"),
        sqs=runtime.client("sqs"),
        s3=runtime.client("s3"),
    )
    (flow,) = report.flows
    assert [(h["name"], h["in"], h["out"], h["quarantined"]) for h in summary["flow"]["hops"]] == [
        (h.name, h.received, h.out, h.quarantined) for h in flow.hops
    ]
    records = summary["records"]
    quarantined = [r for r in records.values() if r.get("quarantined")]
    delivered = [r for r in records.values() if not r.get("quarantined")]
    # README: 29 records + 1 unparseable line; 9 quarantined by cleanse, 20 good.
    assert len(quarantined) == 10
    assert len(delivered) == 20
    assert all({"index", "warehouse"} <= set(r["sinks"]) for r in delivered)
    assert sum("alerts" in r["sinks"] for r in delivered) == 5  # the README's high priority
    assert {r["quarantined"] for r in quarantined} == {"ingest", "cleanse"}
    unparseable = [r for r in quarantined if r["quarantined"] == "ingest"]
    assert unparseable[0]["reason"].startswith("line 16: ")


def test_an_object_trace_lists_its_pipeline_events_and_sluice_logs_events_shows_them(
    where, runtime
):
    """The bus's logging rule (infra/platform.yaml) kept the events the pipeline put, in the
    emulator's log group: one Object Delivered for the orders object, and one Records
    Quarantined with its 10 quarantined records (issue 22)."""
    correlation_id, _ = correlation_of_object(where, ORDERS)
    group = events_log_group(runtime.prefix, runtime.options.stage)
    found = object_events(EventLog(runtime.client("logs"), group), correlation_id)
    types = [e["detail_type"] for e in found]
    assert types.count("Object Delivered") == 1, found
    assert types.count("Records Quarantined") == 1, found
    (quarantined,) = [e for e in found if e["detail_type"] == "Records Quarantined"]
    assert quarantined["counts"]["quarantined"] == 10
    args = ["logs", "events", "--stage", runtime.options.stage, "--since", "1h"]
    shown = CliRunner().invoke(main, [*args, "--correlation-id", correlation_id])
    assert shown.exit_code == 0, shown.output
    assert sum(" events Object Delivered " in line for line in shown.output.splitlines()) == 1


def test_sluice_query_counts_the_order_lines_the_warehouse_wrote(runtime, monkeypatch):
    """`sluice query` over the run's curated bucket, against the lines counted at the sink."""
    s3, bucket = runtime.client("s3"), runtime.names.curated_bucket
    lines = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="type=order/"):
        for item in page.get("Contents") or []:
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            lines += len(gzip.decompress(body).splitlines())
    database = database_name(runtime.names.prefix, runtime.names.stage)
    tables = runtime.client("glue").get_tables(DatabaseName=database)["TableList"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", runtime.endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)

    result = CliRunner().invoke(
        main,
        ["query", 'select count(*) as n from "order"', "--stage", runtime.names.stage, "--json"],
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"n": lines}]
    assert lines >= 20  # the orders file alone delivers 20 (test_an_object_trace_counts_...)
    # The deploy made the Glue tables in the emulator too: one per registered type.
    assert sorted(t["Name"] for t in tables) == sorted(load_registry(ROOT / "types").names())


def test_logs_follow_sees_a_line_written_after_it_started(runtime, tmp_path):
    """`sluice logs cleanse --follow` as a user runs it, in a process of its own."""
    sluice = str(Path(sys.executable).with_name("sluice"))  # the console script of tools/
    command = [sluice, "logs", "cleanse", "--follow"]
    command += ["--stage", runtime.names.stage, "--since", "1s", "--log-dir", str(STATE / "logs")]
    follower = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(follower.stdout or []), daemon=True).start()
    try:
        time.sleep(2)  # started, and past its --since: only what comes next is shown
        path = tmp_path / "incoming" / "order" / "followed.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text('{"order_id": "o-followed"}\n', encoding="utf-8")  # refused: fields
        runtime.upload([(path, landing_key(path))])
        wait_until(
            lambda: any("record refused" in s and "natural_key=o-followed" in s for s in seen),
            what=f"the follower to print cleanse refusing o-followed (got {seen})",
        )
        assert all("sluice-cleanse-" in line for line in seen)
    finally:
        follower.terminate()
        follower.wait(10)
