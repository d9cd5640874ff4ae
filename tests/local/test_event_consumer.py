"""A consumer scaffolded by `sluice new-consumer --on-event` deploys with the stage and, on the
local runtime (IAM enforced), receives one Object Delivered per sample object carrying the
final counts, and one Records Quarantined per object with quarantined records (issue 22).

One whole-pipeline run in a copy of the repository (~60 s, most of it the deploy).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from sluice_tools.ledger import ledger_report
from sluice_tools.ledger.command import repo_sinks
from sluice_tools.local.commands import landing_key, sample_files
from sluice_tools.local.runtime import LocalRuntime, Options
from sluice_tools.scaffold.generator import new_event_consumer

from .conftest import ROOT, repo_tree

pytestmark = pytest.mark.slow

STATE = ROOT / ".sluice" / "tests-event-consumer"
CONSUMER = "loader"


class Run:
    def __init__(self, runtime: LocalRuntime, keys: list[str], report: Any) -> None:
        self.runtime = runtime
        self.keys = keys
        self.report = report

    def events(self) -> list[dict[str, Any]]:
        """What the consumer's handler logged of each event it received."""
        log = STATE / "logs" / f"sluice-consumer-{CONSUMER}-local-consume.log"
        lines = [json.loads(t) for t in log.read_text(encoding="utf-8").splitlines() if t]
        return [line for line in lines if line.get("message") == "pipeline event"]


@pytest.fixture(scope="module")
def run(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tree = repo_tree(tmp_path_factory.mktemp("tree") / "repo")
    new_event_consumer(tree, CONSUMER, ["Object Delivered", "Records Quarantined"])
    runtime = LocalRuntime(Options(state_dir=STATE, root=tree, console=False, schedules=False))
    runtime.start()
    try:
        keys = runtime.upload([(p, landing_key(p)) for p in sample_files(tree)])
        assert runtime.wait_drained(300), runtime.depths()
        report = ledger_report(
            runtime.names,
            sinks=repo_sinks(tree),
            dynamodb=runtime.client("dynamodb"),
            sqs=runtime.client("sqs"),
            s3=runtime.client("s3"),
        )
        yield Run(runtime, keys, report)
    finally:
        runtime.stop()


def test_one_object_delivered_per_sample_object_with_the_ledgers_final_counts(run: Run):
    delivered = [e for e in run.events() if e["detail_type"] == "Object Delivered"]
    assert sorted(e["key"] for e in delivered) == sorted(run.keys)
    flows = {f.correlation_id: f for f in run.report.flows}
    for event in delivered:
        flow = flows[event["correlation_id"]]
        assert flow.status == "balanced"
        sinks = {
            h.name.removeprefix("sink:"): h.delivered
            for h in flow.hops
            if h.name.startswith("sink:") and h.delivered
        }
        # Sent once every record reached every sink its routes lead to, not before.
        assert event["counts"]["delivered"] == sinks, event


def test_records_quarantined_carries_each_objects_quarantined_count(run: Run):
    quarantined = [e for e in run.events() if e["detail_type"] == "Records Quarantined"]
    flows = {f.correlation_id: f for f in run.report.flows}
    expected = {
        cid: sum(h.quarantined for h in flow.hops)
        for cid, flow in flows.items()
        if any(h.quarantined for h in flow.hops)
    }
    assert {e["correlation_id"]: e["counts"]["quarantined"] for e in quarantined} == expected
    assert len(quarantined) == len(expected)  # once each
