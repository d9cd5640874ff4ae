"""`sluice trace` and `sluice logs` on AWS: CloudWatch Logs (the emulator's), the ledger, the sinks.

The log events are shaped like the functions' JSON lines (cleanse refusing and quarantining
one order); the quarantine document and the ledger entries are written by the shared
package's own writers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from moto import mock_aws
from support.platform import STAGE, create_buckets, create_tables

from sluice import aws
from sluice.batch import ChunkOutcome
from sluice.config import ResourceNames
from sluice.envelope import Chunk, Record
from sluice.errors import PermanentError
from sluice.ledger import LedgerWriter
from sluice.quarantine import Quarantine
from sluice_tools.cli import main
from sluice_tools.trace.logsource import CloudWatchLogs, LogQuery
from sluice_tools.trace.tracer import NotFoundError, Stores, Tracer

NAMES = ResourceNames(stage=STAGE)
CLEANSE_FN = f"sluice-cleanse-{STAGE}-cleanse"
INGEST_FN = f"sluice-ingest-{STAGE}-on_object_created"
CID = "ingest-0123456789abcdef0123456789abcdef"
CHUNK = "c-00000000000000000000000000000001"
RECORD = "r-00000000000000000000000000000009"
REASON = "invalid order: data must contain ['customer_id'] properties"


def _line(fn: str, service: str, message: str, request_id: str, **fields: Any) -> dict[str, Any]:
    at = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"
    doc = {
        "timestamp": stamp,
        "level": "INFO",
        "message": message,
        "logger": "chalicelib.service",
        "service": service,
        "stage": STAGE,
        "request_id": request_id,
        "function_name": fn,
        "correlation_id": CID,
        **fields,
    }
    return {"timestamp": int(at * 1000), "message": json.dumps(doc)}


def _put(logs: Any, fn: str, *events: dict[str, Any]) -> None:
    group = f"/aws/lambda/{fn}"
    if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName="2026/12/04/[$LATEST]abc")
    logs.put_log_events(
        logGroupName=group, logStreamName="2026/12/04/[$LATEST]abc", logEvents=list(events)
    )


@pytest.fixture
def stage(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        create_tables()
        create_buckets([NAMES.quarantine_bucket, NAMES.curated_bucket, NAMES.landing_bucket])
        chunk = Chunk(
            chunk_id=CHUNK,
            type="order",
            source=f"s3://{NAMES.landing_bucket}/incoming/order/o.jsonl",
            correlation_id=CID,
            records=(Record(RECORD, 0, "2026-12-04T10:00:00.000Z", {"order_id": "o-9"}),),
        )
        ledger = LedgerWriter(table_name=NAMES.ledger_table)
        ledger.record_chunk("ingest", chunk, ChunkOutcome(records_in=1, out=1))
        ledger.record_chunk("cleanse", chunk, ChunkOutcome(records_in=1, quarantined=1))
        Quarantine("cleanse", bucket=NAMES.quarantine_bucket).reject_record(
            chunk.records[0], chunk, PermanentError(REASON)
        )
        key = f"cleanse/order/2026-12-04/{RECORD}.json"
        logs = aws.client("logs")
        _put(logs, INGEST_FN, _line(INGEST_FN, "ingest", "segment done", "req-ingest", out=1))
        common = {"chunk_id": CHUNK, "record_id": RECORD}
        _put(
            logs,
            CLEANSE_FN,
            _line(
                CLEANSE_FN,
                "cleanse",
                "record refused",
                "req-cleanse",
                natural_key="o-9",
                reason=REASON,
                **common,
            ),
            _line(
                CLEANSE_FN,
                "cleanse",
                "quarantined",
                "req-cleanse",
                quarantine_key=key,
                reason=REASON,
                **common,
            ),
        )
        yield logs


def _tracer(logs: Any) -> Tracer:
    source = CloudWatchLogs(logs, ["sluice-"], STAGE)
    return Tracer(source, Stores(NAMES, aws.dynamodb(), aws.s3()))


def test_trace_finds_a_quarantined_order_by_key_in_cloudwatch_logs(stage):
    tracer = _tracer(stage)
    assert tracer.record_ids_for_key("order", "o-9") == [RECORD]
    trace = tracer.trace_record(RECORD)
    (ending,) = trace.endings
    assert ending.kind == "quarantine"
    assert ending.detail["reason"] == REASON
    assert ending.detail["raw"] == {"order_id": "o-9"}
    assert [(h.stage, h.request_id, h.function) for h in trace.hops] == [
        ("ingest", "req-ingest", INGEST_FN),
        ("cleanse", "req-cleanse", CLEANSE_FN),
    ]
    with pytest.raises(NotFoundError, match="not found"):
        tracer.record_ids_for_key("order", "o-10")


def test_logs_reads_a_function_from_cloudwatch_with_its_fields_readable(stage):
    result = CliRunner().invoke(main, ["logs", "cleanse", "--stage", STAGE, "--since", "1h"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert CLEANSE_FN in lines[0]
    assert "record refused" in lines[0]
    for field in ("request_id=req-cleanse", f"correlation_id={CID}", f"chunk_id={CHUNK}"):
        assert field in lines[0]
    assert "natural_key=o-9" in lines[0]  # an extra field
    assert "segment done" not in result.output  # ingest's, not cleanse's
    result = CliRunner().invoke(main, ["logs", "--stage", STAGE, "--filter", "segment done"])
    assert result.output.count("\n") == 1
    assert "out=1" in result.output


def test_logs_follow_on_cloudwatch_sees_an_event_put_after_it_started(stage):
    source = CloudWatchLogs(stage, ["sluice-"], STAGE)
    follow = source.follow(LogQuery(since_ms=int(time.time() * 1000) + 1), poll_s=0)
    time.sleep(0.01)
    _put(stage, CLEANSE_FN, _line(CLEANSE_FN, "cleanse", "later", "req-later"))
    line = next(follow)
    assert line.get("message") == "later"


def test_trace_follows_a_record_that_failed_in_a_consumer_to_its_dead_letter_queue(stage):
    """The record's path is recomputed from the ledger: ingest's chunk, cleanse's output
    (derived from it), the router's output per route (derived again), where it failed."""
    from sluice.envelope import derive_chunk_id

    cleaned = derive_chunk_id(CHUNK, "cleanse")
    route = '{"priority":"normal","record_type":"order"}'
    routed = derive_chunk_id(cleaned, "router", route)
    failing = RECORD.replace("9", "8")
    ledger = LedgerWriter(table_name=NAMES.ledger_table)
    record = Record(failing, 1, "2026-12-04T10:00:00.000Z", {"order_id": "o-8"})

    def chunk(chunk_id: str) -> Chunk:
        return Chunk(chunk_id, "order", "s3://b/k", CID, (record,))

    routes = ChunkOutcome(records_in=1, out=1)
    routes.routes[route] = 1
    ledger.record_chunk("router", chunk(cleaned), routes)
    ledger.record_chunk("consumer-index", chunk(routed), ChunkOutcome(records_in=1, failed=1))
    fn = f"sluice-consumer-index-{STAGE}-consume"
    where = {"chunk_id": routed}
    _put(
        stage,
        fn,
        _line(
            fn,
            "consumer-index",
            "record failed in the handler; the rest of its chunk goes on",
            "req-index",
            record_id=failing,
            exc_info="Traceback ...\nKeyError: 'sku'",
            **where,
        ),
        _line(
            fn,
            "consumer-index",
            "records failed in the handler; dead-lettered with their error",
            "req-index",
            records=1,
            failed_chunk_id="c-failed",
            error_type="KeyError",
            reason="'sku'",
            queue="https://sqs/sluice-test-index-dlq",
            **where,
        ),
    )
    trace = _tracer(stage).trace_record(failing)
    assert [(h.stage, h.chunk_id) for h in trace.hops] == [
        ("ingest", CHUNK),
        ("cleanse", CHUNK),
        ("router", cleaned),
        ("consumer-index", routed),
    ]
    assert trace.hops[-1].request_id == "req-index"
    assert [(e.kind, e.detail.get("error")) for e in trace.endings] == [
        ("failed", "KeyError: 'sku'"),
        ("dead letter", "KeyError: 'sku'"),
    ]
    assert trace.endings[1].where == "https://sqs/sluice-test-index-dlq"
    assert trace.endings[1].detail["failed_chunk_id"] == "c-failed"
