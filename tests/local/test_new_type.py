"""Issue 18's first "done when", on the local runtime: in a copy of the repository,
`sluice new-type shipment --sample …`, deploy, upload shipments; they reach the warehouse and
the index, the ledger balances, and `sluice types check` reads what the warehouse wrote.

Nothing but the new `types/shipment/` folder is added to the copy: ingest, the router, the
index (its key and its subscription's filter policy) and the ledger take the type from the
registry. One runtime for the module (the deploy is most of its minute).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.registry_repo import unregistered_name

from sluice.registry import load_registry
from sluice_tools.cli import main
from sluice_tools.ledger import ledger_report
from sluice_tools.ledger.command import repo_sinks
from sluice_tools.local.runtime import LocalRuntime
from sluice_tools.types.check import check_type

from .conftest import pipeline_options, repo_tree

pytestmark = pytest.mark.slow

# `shipment`, as in the issue, unless the registry holds one already (then shipment2, ...).
NEW = unregistered_name("shipment")

# Raw, as a producer sends them: offsets, a naive time, a space before the time, padding.
SHIPMENTS: list[dict[str, Any]] = [
    {
        "shipment_id": "s-1001",
        "order_id": "o-1001",
        "carrier": "DHL",
        "shipped_at": "2026-12-01T08:15:00Z",
        "weight_kg": 1.5,
        "parcels": [{"parcel_id": "p-1", "weight_kg": 1.5}],
    },
    {
        "shipment_id": "s-1002",
        "order_id": "o-1002",
        "carrier": " UPS ",
        "shipped_at": "2026-12-01 09:30:00+02:00",
        "weight_kg": 3,
        "parcels": [{"parcel_id": "p-2", "weight_kg": 1}, {"parcel_id": "p-3", "weight_kg": 2}],
    },
    {
        "shipment_id": "s-1003",
        "order_id": "o-1004",
        "carrier": "DHL",
        "shipped_at": "2026-12-02T11:45:10.250",
        "weight_kg": 0.7,
        "parcels": [],
    },
]
# Uploaded after the deploy: the samples again, and more of the same shape.
UPLOADED = [
    *SHIPMENTS,
    *(
        {
            "shipment_id": f"s-20{n:02d}",
            "order_id": f"o-20{n:02d}",
            "carrier": "GLS",
            "shipped_at": f"2026-12-03T10:{n:02d}:00+01:00",
            "weight_kg": 10 + n,
            "parcels": [{"parcel_id": f"p-20{n:02d}", "weight_kg": 10 + n}],
        }
        for n in range(5)
    ),
]
HEAVY = sum(1 for s in UPLOADED if s["weight_kg"] > 12)  # for the tightened schema


@dataclass
class Shipped:
    runtime: LocalRuntime
    tree: Path
    new_type_output: str

    def curated_rows(self) -> list[dict[str, Any]]:
        s3 = self.runtime.client("s3")
        bucket = self.runtime.names.curated_bucket
        rows: list[dict[str, Any]] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents") or []:
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                rows += [json.loads(line) for line in gzip.decompress(body).splitlines()]
        return rows

    def index_items(self) -> list[dict[str, Any]]:
        ddb = self.runtime.client("dynamodb")
        items: list[dict[str, Any]] = []
        for page in ddb.get_paginator("scan").paginate(TableName=self.runtime.names.records_table):
            items += page["Items"]
        return items


@pytest.fixture(scope="module")
def shipped(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shipped]:
    work = tmp_path_factory.mktemp("new-type")
    tree = repo_tree(work / "repo")
    sample = work / "shipments-sample.jsonl"
    sample.write_text("".join(json.dumps(s) + "\n" for s in SHIPMENTS), encoding="utf-8")
    created = CliRunner().invoke(
        main, ["new-type", NEW, "--sample", str(sample), "--repo", str(tree)]
    )
    assert created.exit_code == 0, created.output
    runtime = LocalRuntime(pipeline_options(tree, "tests-new-type"))
    runtime.start()
    try:
        upload = work / "shipments-2026-12-04.jsonl"
        upload.write_text("".join(json.dumps(s) + "\n" for s in UPLOADED), encoding="utf-8")
        runtime.upload([(upload, f"incoming/{NEW}/{upload.name}")])
        assert runtime.wait_drained(240), runtime.depths()
        yield Shipped(runtime, tree, created.output)
    finally:
        runtime.stop()


def test_new_type_adds_only_its_folder_and_names_the_upload_path(shipped: Shipped) -> None:
    assert NEW in load_registry(shipped.tree / "types")
    assert f"incoming/{NEW}/" in shipped.new_type_output
    assert "sluice deploy --stage" in shipped.new_type_output


def test_every_uploaded_shipment_lands_in_the_warehouse_once_normalised(shipped: Shipped) -> None:
    rows = [row for row in shipped.curated_rows() if row["_type"] == NEW]
    assert Counter(row["shipment_id"] for row in rows) == {s["shipment_id"]: 1 for s in UPLOADED}
    by_id = {row["shipment_id"]: row for row in rows}
    assert by_id["s-1002"]["shipped_at"] == "2026-12-01T07:30:00.000Z"
    assert by_id["s-1002"]["carrier"] == "UPS"
    assert by_id["s-1003"]["shipped_at"] == "2026-12-02T11:45:10.250Z"


def test_every_uploaded_shipment_is_indexed_under_its_natural_key(shipped: Shipped) -> None:
    entities = Counter(
        item["pk"]["S"] for item in shipped.index_items() if item["pk"]["S"].startswith(f"{NEW}#")
    )
    assert entities == {f"{NEW}#{s['shipment_id']}": 1 for s in UPLOADED}


def test_nothing_is_quarantined_and_the_ledger_balances(shipped: Shipped) -> None:
    s3 = shipped.runtime.client("s3")
    listed = s3.list_objects_v2(Bucket=shipped.runtime.names.quarantine_bucket)
    assert listed.get("KeyCount", 0) == 0, [o["Key"] for o in listed.get("Contents", [])]
    report = ledger_report(
        shipped.runtime.names,
        sinks=repo_sinks(shipped.tree),
        dynamodb=shipped.runtime.client("dynamodb"),
        sqs=shipped.runtime.client("sqs"),
        s3=s3,
    )
    assert report.exit_code == 0, [p.message for f in report.flows for p in f.problems]
    (flow,) = report.flows
    assert flow.source.endswith(f"incoming/{NEW}/shipments-2026-12-04.jsonl")


def test_types_check_reads_the_warehouse_objects_and_counts_what_a_change_rejects(
    shipped: Shipped,
) -> None:
    s3, bucket = shipped.runtime.client("s3"), shipped.runtime.names.curated_bucket
    same = check_type(shipped.tree, NEW, s3=s3, bucket=bucket)
    assert (same.records, same.rejected) == (len(UPLOADED), 0)

    path = shipped.tree / "types" / NEW / "schema.json"
    drafted = path.read_text(encoding="utf-8")
    schema = json.loads(drafted)
    schema["properties"]["weight_kg"]["maximum"] = 12
    path.write_text(json.dumps(schema), encoding="utf-8")
    try:
        tightened = check_type(shipped.tree, NEW, s3=s3, bucket=bucket)
    finally:
        path.write_text(drafted, encoding="utf-8")
    assert (tightened.records, tightened.rejected) == (len(UPLOADED), HEAVY)
    assert HEAVY > 0
    assert all("weight_kg" in r.reason for r in tightened.rejections)
