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
    source = CloudWatchLogs(logs, "sluice-", STAGE)
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
    source = CloudWatchLogs(stage, "sluice-", STAGE)
    follow = source.follow(LogQuery(since_ms=int(time.time() * 1000) + 1), poll_s=0)
    time.sleep(0.01)
    _put(stage, CLEANSE_FN, _line(CLEANSE_FN, "cleanse", "later", "req-later"))
    line = next(follow)
    assert line.get("message") == "later"
