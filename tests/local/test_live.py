"""`sluice local up` as a dev loop: state that survives a restart, the deploy skipped when
nothing changed, a deploy into the running runtime taking effect at once, short retries, and
any prefix and region.

One copy of the repository and one state dir for the module, used by runtimes one after
the other, in the order of the tests (each needs what the one before left): the first
deploys with prefix `acme-data` in eu-west-1; the second restarts from its saved state; two
more start clean (`fresh`, an unreadable state) without deploying.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.registry_repo import unused_consumer_name
from support.waiting import wait_until

from sluice_tools.cli import main
from sluice_tools.deploy.pipeline import deploy_stage
from sluice_tools.deploy.target import Target
from sluice_tools.ledger import Exit, ledger_report
from sluice_tools.ledger.command import repo_sinks
from sluice_tools.local.commands import landing_key, sample_files
from sluice_tools.local.faults import FaultRule
from sluice_tools.local.runtime import LocalRuntime, Options
from sluice_tools.scaffold.generator import new_consumer

from .conftest import depth, repo_tree

pytestmark = pytest.mark.slow

PREFIX, REGION = "acme-data", "eu-west-1"
NEW_CONSUMER = unused_consumer_name("audit")


class Live:
    """The module's tree and state dir, and the runtime currently up on them."""

    def __init__(self, tree: Path, state: Path) -> None:
        self.tree, self.state = tree, state
        self.runtime: LocalRuntime | None = None
        self.said: list[str] = []
        self.kept: dict[str, Any] = {}  # what the first runtime left, for the restart

    def up(self, **options: Any) -> LocalRuntime:
        self.down()
        self.said = []
        settings: dict[str, Any] = {
            "root": self.tree,
            "state_dir": self.state,
            "console": False,
            "schedules": False,
            "persist": True,
            "prefix": PREFIX,
            "region": REGION,
            "watch_s": 0.5,
            **options,
        }
        self.runtime = LocalRuntime(Options(**settings), say=self.said.append)
        self.runtime.start()
        return self.runtime

    def down(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None

    @property
    def rt(self) -> LocalRuntime:
        assert self.runtime is not None, "no runtime is up"
        return self.runtime


@pytest.fixture(scope="module")
def live(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("live")
    live = Live(repo_tree(base / "repo"), base / "state")
    try:
        yield live
    finally:
        live.down()


def _queue(rt: LocalRuntime, resource: str) -> str:
    return str(rt.client("sqs").get_queue_url(QueueName=rt.names.name(resource))["QueueUrl"])


def _ledger_items(rt: LocalRuntime) -> int:
    pages = rt.client("dynamodb").get_paginator("scan").paginate(TableName=rt.names.ledger_table)
    return sum(len(page["Items"]) for page in pages)


def _upload_orders(rt: LocalRuntime, tmp: Path, name: str, orders: list[dict[str, Any]]) -> str:
    path = tmp / "incoming" / "order" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o) + "\n" for o in orders), encoding="utf-8")
    key = landing_key(path)
    rt.upload([(path, key)])
    return key


def _order(order_id: str) -> dict[str, Any]:
    """A good order but for its missing customer_id (which the shipped schema requires)."""
    return {
        "order_id": order_id,
        "email": "ada@example.com",
        "amount": 12,
        "currency": "EUR",
        "created_at": "2026-11-27T08:15:00Z",
    }


def _report(live: Live) -> Any:
    rt = live.rt
    return ledger_report(
        rt.names,
        sinks=repo_sinks(live.tree),
        dynamodb=rt.client("dynamodb"),
        sqs=rt.client("sqs"),
    )


def _hops(live: Live, key: str) -> dict[str, Any]:
    """The ledger's hops (stages and sinks) of the file uploaded as `key`, by name."""
    (flow,) = [f for f in _report(live).flows if f.source.endswith(key)]
    return {hop.name: hop for hop in flow.hops}


def test_first_up_delivers_the_samples_under_any_prefix_and_region(live: Live) -> None:
    rt = live.up(fresh=True)
    assert not rt.deploy_skipped
    buckets = {b["Name"] for b in rt.client("s3").list_buckets()["Buckets"]}
    assert rt.names.landing_bucket == f"{PREFIX}-local-landing" in buckets
    raw_arn = rt.client("sqs").get_queue_attributes(
        QueueUrl=_queue(rt, "raw"), AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert raw_arn.startswith(f"arn:aws:sqs:{REGION}:")

    keys = rt.upload([(p, landing_key(p)) for p in sample_files(live.tree)])
    assert rt.wait_drained(600)
    report = _report(live)
    assert report.exit_code == Exit.BALANCED, report.to_dict()
    assert all(any(f.source.endswith(key) for f in report.flows) for key in keys)
    live.kept["keys"] = keys


def test_a_chunk_that_always_fails_reaches_its_dlq_quickly(live: Live, tmp_path: Path) -> None:
    """Its retries are seconds apart locally, not the queue's visibility timeout (12 minutes
    for the index consumer): the wait below would time out without that."""
    rt = live.rt
    rt.options.faults.add(FaultRule(function="-consumer-index-local-consume", match="dead-1"))
    key = _upload_orders(rt, tmp_path, "dead", [{**_order("dead-1"), "customer_id": "c-1"}])
    dlq = _queue(rt, "consumer-index-dlq")
    wait_until(lambda: depth(rt.client("sqs"), dlq) == 1, what="the chunk in the index DLQ")
    assert rt.wait_drained(600)
    assert _hops(live, key)["sink:index"].delivered == 0
    live.kept.update(dead=key, ledger_items=_ledger_items(rt))


def test_a_restart_keeps_the_state_and_skips_the_unchanged_deploy(live: Live) -> None:
    rt = live.up()
    assert rt.deploy_skipped
    assert "deploy skipped: nothing changed since the saved state was deployed" in live.said
    assert rt.deploy_report is None
    s3, sqs = rt.client("s3"), rt.client("sqs")
    for key in live.kept["keys"]:
        s3.head_object(Bucket=rt.names.landing_bucket, Key=key)
    assert _ledger_items(rt) == live.kept["ledger_items"]
    dlq = _queue(rt, "consumer-index-dlq")
    assert depth(sqs, dlq) == 1

    # The fault is gone (as a fixed bug would be): redriven, the chunk is indexed.
    result = CliRunner().invoke(main, ["dlq", "redrive", rt.names.name("consumer-index-dlq")])
    assert result.exit_code == 0, result.output
    assert "moved 1 message(s)" in result.output
    assert rt.wait_drained(600)
    assert depth(sqs, dlq) == 0
    index = _hops(live, live.kept["dead"])["sink:index"]
    assert (index.delivered, index.dead) == (1, 0)


def test_a_deploy_into_the_running_up_takes_effect_without_a_restart(
    live: Live, tmp_path: Path
) -> None:
    rt = live.rt
    before = _upload_orders(rt, tmp_path, "before", [_order("live-1")])
    assert rt.wait_drained(600)
    assert _hops(live, before)["cleanse"].quarantined == 1  # the schema wants a customer_id

    schema_path = live.tree / "types" / "order" / "schema.json"
    schema = json.loads(schema_path.read_text())
    schema["required"].remove("customer_id")
    schema_path.write_text(json.dumps(schema, indent=2))
    new_consumer(live.tree, NEW_CONSUMER, json.dumps({"record_type": ["order"]}))
    target = Target.from_env("local", root=live.tree)
    report = deploy_stage(
        target,
        ["cleanse", f"consumers/{NEW_CONSUMER}"],
        build_dir=live.state / "build",
        doctor=False,
        log=lambda _line: None,
    )
    assert report.apps == ["cleanse", f"consumers/{NEW_CONSUMER}"]

    def reloaded() -> bool:
        lines = [line for line in live.said if line.startswith("reloaded: ")]
        cleanse = any("cleanse" in line and "(code" in line for line in lines)
        consumer = any(
            line.startswith("reloaded: sqs:") and f"-consumer-{NEW_CONSUMER}-" in line
            for line in lines
        )
        return cleanse and consumer

    wait_until(reloaded, what=f"cleanse and the new consumer reloaded (said: {live.said})")
    audit = next(name for name in rt.pools if f"consumer-{NEW_CONSUMER}" in name)

    after = _upload_orders(rt, tmp_path, "after", [_order("live-2")])
    assert rt.wait_drained(600)
    hops = _hops(live, after)
    assert hops["cleanse"].quarantined == 0  # the changed rule, on the next record
    assert hops["cleanse"].out == 1
    sink = hops[f"sink:{NEW_CONSUMER}"]
    assert sink.delivered == 1, hops  # the new consumer's queue was polled and its function ran
    assert rt.pools[audit].invocations >= 1


def test_fresh_and_unreadable_states_start_clean(live: Live) -> None:
    rt = live.up(fresh=True, deploy=False)
    assert rt.client("s3").list_buckets()["Buckets"] == []
    live.down()  # saves the empty state

    state_file = live.state / "moto-state.pickle"
    state_file.write_bytes(b"not a pickle")
    rt = live.up(deploy=False)
    assert any("the saved state cannot be used, starting fresh" in line for line in live.said)
    assert rt.client("s3").list_buckets()["Buckets"] == []
    live.down()
    shutil.rmtree(live.state, ignore_errors=True)
