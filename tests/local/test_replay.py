"""Done-when 3 of issue 18, on one local runtime: records quarantined under a strict rule,
the rule relaxed and deployed into the running runtime, `sluice replay quarantine`, and each
record delivered once (curated lines and index items counted, not the ledger), the ledger
balanced with the replay hop shown; a second replay doubles nothing.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.waiting import wait_until

from sluice_tools.cli import main
from sluice_tools.deploy.pipeline import deploy_stage
from sluice_tools.deploy.target import Target
from sluice_tools.ledger import Exit, ledger_report
from sluice_tools.ledger.command import repo_sinks
from sluice_tools.local.commands import landing_key
from sluice_tools.local.runtime import LocalRuntime, Options

from .conftest import ROOT, repo_tree

pytestmark = pytest.mark.slow

PREFIX = "rp"  # order ids of this test
STATE = ROOT / ".sluice" / "tests-replay"
# Where the order type's schema is: the type registry, or cleanse's own folder before it.
SCHEMA_PATHS = ("types/order/schema.json", "cleanse/chalicelib/types/order/schema.json")


class Replayed:
    def __init__(self, tree: Path, runtime: LocalRuntime, said: list[str]) -> None:
        self.tree, self.rt, self.said = tree, runtime, said

    def curated(self) -> Counter[str]:
        s3, bucket = self.rt.client("s3"), self.rt.names.curated_bucket
        found: Counter[str] = Counter()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents") or []:
                data = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                for line in gzip.decompress(data).decode("utf-8").splitlines():
                    order_id = str(json.loads(line).get("order_id", ""))
                    if order_id.startswith(PREFIX):
                        found[order_id] += 1
        return found

    def indexed(self) -> Counter[str]:
        ddb, table = self.rt.client("dynamodb"), self.rt.names.records_table
        found: Counter[str] = Counter()
        for page in ddb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                kind, _, key = str(item["pk"]["S"]).partition("#")
                if kind == "order" and key.startswith(PREFIX):
                    found[key] += 1
        return found

    def quarantined(self) -> dict[str, dict[str, Any]]:
        """Cleanse's quarantine documents of this test's orders, by order id."""
        s3, bucket = self.rt.client("s3"), self.rt.names.quarantine_bucket
        docs = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="cleanse/"):
            for obj in page.get("Contents") or []:
                if obj["Key"].endswith(".payload.json"):
                    continue
                doc = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                order_id = str(((doc.get("record") or {}).get("payload") or {}).get("order_id"))
                if order_id.startswith(PREFIX):
                    docs[order_id] = doc
        return docs

    def flow(self, key: str) -> Any:
        report = ledger_report(
            self.rt.names,
            sinks=repo_sinks(self.tree),
            dynamodb=self.rt.client("dynamodb"),
            sqs=self.rt.client("sqs"),
        )
        (flow,) = [f for f in report.flows if f.source.endswith(key)]
        return report, flow


@pytest.fixture(scope="module")
def replayed(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replayed]:
    base = tmp_path_factory.mktemp("replay")
    tree = repo_tree(base / "repo")
    said: list[str] = []
    options = Options(
        root=tree,
        # Under the repo (git-ignored): the deploy's chalice zip cache survives between runs.
        state_dir=STATE,
        console=False,
        schedules=False,
        watch_s=0.5,
        async_retry_delays_s=(0.5, 1.0),
    )
    runtime = LocalRuntime(options, say=said.append)
    runtime.start()
    try:
        yield Replayed(tree, runtime, said)
    finally:
        runtime.stop()


def _order(order_id: str, **changes: Any) -> dict[str, Any]:
    """A good order but for its missing customer_id (which the shipped schema requires)."""
    order = {
        "order_id": order_id,
        "email": "ada@example.com",
        "amount": 12,
        "currency": "EUR",
        "created_at": "2026-11-27T08:15:00Z",
    }
    return {**order, **changes}


def _replay(*args: str) -> str:
    result = CliRunner().invoke(main, ["replay", "quarantine", "--type", "order", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_replay_after_a_rule_fix_delivers_each_record_once(
    replayed: Replayed, tmp_path: Path
) -> None:
    rt = replayed.rt
    fixable = [f"{PREFIX}-{i}" for i in range(1, 4)]
    path = tmp_path / "incoming" / "order" / "strict.jsonl"
    path.parent.mkdir(parents=True)
    orders = [_order(i) for i in fixable]
    orders.append(_order(f"{PREFIX}-bad", amount=-5))  # fails the relaxed rule too
    orders.append({**_order(f"{PREFIX}-ok"), "customer_id": "c-1"})
    path.write_text("".join(json.dumps(o) + "\n" for o in orders), encoding="utf-8")
    key = landing_key(path)
    rt.upload([(path, key)])
    assert rt.wait_drained(600), rt.depths()
    assert set(replayed.quarantined()) == {*fixable, f"{PREFIX}-bad"}
    assert replayed.curated() == {f"{PREFIX}-ok": 1}
    first_bad = replayed.quarantined()[f"{PREFIX}-bad"]

    # The rule relaxed (customer_id optional) and deployed into the running runtime.
    schema_path = next(replayed.tree / p for p in SCHEMA_PATHS if (replayed.tree / p).exists())
    schema = json.loads(schema_path.read_text())
    schema["required"].remove("customer_id")
    schema_path.write_text(json.dumps(schema, indent=2))
    target = Target.from_env("local", root=replayed.tree)
    deploy_stage(target, ["cleanse"], build_dir=STATE / "build", doctor=False, log=lambda _: None)
    wait_until(
        lambda: any(s.startswith("reloaded: ") and "cleanse" in s for s in replayed.said),
        what=f"cleanse reloaded (said: {replayed.said})",
    )

    dry = _replay("--dry-run")
    assert dry.count("would send ") == 4 + 1, dry  # 4 listed, and the summary
    assert rt.wait_drained(60)
    assert replayed.curated() == {f"{PREFIX}-ok": 1}  # a dry run sends nothing

    out = _replay()
    assert "4 matched; sent 4 record(s) to cleanse in 4 chunk(s)" in out, out
    assert rt.wait_drained(600), rt.depths()

    want = Counter({order_id: 1 for order_id in [*fixable, f"{PREFIX}-ok"]})
    assert replayed.curated() == want
    assert replayed.indexed() == want
    # What still fails is in quarantine again, with the relaxed rule's reason.
    again = replayed.quarantined()
    assert set(again) == {*fixable, f"{PREFIX}-bad"}  # the documents of the fixed stay
    assert again[f"{PREFIX}-bad"]["quarantined_at"] > first_bad["quarantined_at"]
    assert "customer_id" not in again[f"{PREFIX}-bad"]["reason"]

    report, flow = replayed.flow(key)
    assert report.exit_code == Exit.BALANCED, report.to_dict()
    hops = {hop.name: hop for hop in flow.hops}
    assert (hops["replay"].out, hops["cleanse"].received, hops["cleanse"].quarantined) == (4, 5, 1)
    ledger = CliRunner().invoke(main, ["ledger", "--repo", str(replayed.tree)])
    assert "replayed 4 from quarantine into cleanse: 3 passed, 1 quarantined again" in (
        ledger.output
    ), ledger.output

    # A second replay: the fixed are already replayed; the one refused again is a new
    # document (a new reason) and goes once more, to be refused once more.
    second = _replay()
    assert "sent 1 record(s)" in second, second
    assert "3 already replayed" in second, second
    assert rt.wait_drained(600), rt.depths()
    assert replayed.curated() == want
    assert replayed.indexed() == want
    report, flow = replayed.flow(key)
    assert report.exit_code == Exit.BALANCED, report.to_dict()
    assert {hop.name: hop for hop in flow.hops}["cleanse"].quarantined == 1


def test_landing_replay_reingests_an_object_landed_under_the_wrong_type(
    replayed: Replayed, tmp_path: Path
) -> None:
    rt = replayed.rt
    misfiled = [f"{PREFIX}-m1", f"{PREFIX}-m2"]
    path = tmp_path / "incoming" / "data" / "misfiled.jsonl"
    path.parent.mkdir(parents=True)
    lines = [json.dumps({**_order(i), "customer_id": "c-2"}) + "\n" for i in misfiled]
    path.write_text("".join(lines), encoding="utf-8")
    key = landing_key(path)
    rt.upload([(path, key)])
    assert rt.wait_drained(600), rt.depths()
    _, flow = replayed.flow(key)
    assert {hop.name: hop for hop in flow.hops}["ingest"].quarantined == 1  # type 'data'
    assert not set(misfiled) & set(replayed.curated())

    args = ["replay", "landing", "--from", "incoming/data/", "--type", "order"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "copied 1 for re-ingest" in result.output, result.output
    assert rt.wait_drained(600), rt.depths()
    want = Counter(dict.fromkeys(misfiled, 1))
    assert Counter({k: v for k, v in replayed.curated().items() if k in misfiled}) == want
    assert Counter({k: v for k, v in replayed.indexed().items() if k in misfiled}) == want

    again = CliRunner().invoke(main, args)
    assert "1 already replayed" in again.output, again.output
    assert rt.wait_drained(600), rt.depths()
    assert Counter({k: v for k, v in replayed.curated().items() if k in misfiled}) == want
    report, flow = replayed.flow(key)
    assert report.exit_code == Exit.BALANCED, report.to_dict()
    assert any("re-ingested as" in p.message for p in flow.problems), flow.problems
