"""The cleanse stage on moto: wiring through chalice.test.Client, quarantine, retries, dedupe."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client
from support.calls import Fault, failing
from support.events import run_batch, sqs_event

from chalicelib.service import Cleanser, output_chunk_id
from sluice import aws
from sluice.claimcheck import ClaimCheck
from sluice.config import ResourceNames
from sluice.envelope import Chunk, ChunkLimits, derive_chunk_id
from sluice.quarantine import record_key
from sluice.stage import StageRuntime

APP_DIR = Path(__file__).resolve().parents[2] / "cleanse"
Drain = Callable[[], list[dict[str, Any]]]


def quarantined(names: ResourceNames, chunk: Chunk, index: int) -> dict[str, Any]:
    record = chunk.records[index]
    key = record_key("cleanse", chunk.type, record.ingested_at, record.id)
    body = aws.s3().get_object(Bucket=names.quarantine_bucket, Key=key)["Body"].read()
    return json.loads(body)  # type: ignore[no-any-return]


def quarantine_keys(names: ResourceNames) -> list[str]:
    listed = aws.s3().list_objects_v2(Bucket=names.quarantine_bucket)
    return [o["Key"] for o in listed.get("Contents", [])]


def ledger_entry(names: ResourceNames, chunk: Chunk) -> dict[str, Any]:
    item = aws.dynamodb().get_item(
        TableName=names.ledger_table,
        Key={
            "correlation_id": {"S": chunk.correlation_id},
            "entry": {"S": f"cleanse#{chunk.chunk_id}"},
        },
    )["Item"]
    return {k: int(v["N"]) for k, v in item.items() if "N" in v and k != "expires_at"}


def fresh_cleanser() -> Cleanser:
    return Cleanser(StageRuntime(name="cleanse"))


def test_a_raw_chunk_goes_through_the_app_to_the_clean_queue_normalised(
    app_module: Any, clean_messages: Drain, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk(
        [
            order(email=" Grace.Hopper@Example.COM ", amount="42.10", currency="usd"),
            order(order_id="o-2", created_at="2026-11-27T09:30:00+02:00", coupon="X"),
        ]
    )
    with Client(app_module.app, stage_name="test", project_dir=str(APP_DIR)) as client:
        response = client.lambda_.invoke("cleanse", sqs_event(chunk))

    assert response.payload == {"batchItemFailures": []}
    [message] = clean_messages()
    out = Chunk.decode(message["Body"])
    assert out.chunk_id == derive_chunk_id(chunk.chunk_id, "cleanse")
    assert (out.type, out.source, out.correlation_id) == ("order", chunk.source, "corr-1")
    assert [r.id for r in out.records] == [r.id for r in chunk.records]
    first, second = (r.payload for r in out.records)
    assert first["email"] == "grace.hopper@example.com"
    assert first["amount"] == 42.1
    assert first["currency"] == "USD"
    assert first["created_at"] == "2026-11-27T08:15:00.000Z"
    assert second["created_at"] == "2026-11-27T07:30:00.000Z"
    assert "coupon" not in second
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes == {
        "record_type": "order",
        "correlation_id": "corr-1",
        "chunk_id": out.chunk_id,
    }


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"customer_id": None}, "invalid order: data must contain ['customer_id'] properties"),
        ({"email": "not-an-email"}, "invalid order: data.email must be email"),
        ({"amount": -5}, "invalid order: data.amount must be bigger than or equal to 0"),
        ({"amount": "12,50"}, "field 'amount': '12,50' is not a number"),
        ({"currency": "EURO"}, "invalid order: data.currency must match pattern ^[A-Z]{3}$"),
        ({"created_at": "yesterday"}, "field 'created_at': cannot parse timestamp 'yesterday'"),
        (
            {"items": [{"sku": "PEN", "quantity": 0}]},
            "invalid order: data.items[0].quantity must be bigger than or equal to 1",
        ),
    ],
)
def test_an_invalid_record_is_quarantined_with_the_validation_message_and_not_retried(
    platform: ResourceNames,
    clean_messages: Drain,
    make_chunk: Any,
    order: Any,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    chunk = make_chunk([order(), order(order_id="o-bad", **overrides)])
    response = run_batch(fresh_cleanser(), sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    doc = quarantined(platform, chunk, 1)
    assert doc["reason"] == reason
    assert doc["stage"] == "cleanse"
    assert doc["record"]["payload"]["order_id"] == "o-bad"
    [message] = clean_messages()
    assert [r.payload["order_id"] for r in Chunk.decode(message["Body"]).records] == ["o-1"]
    assert ledger_entry(platform, chunk) == {
        "records_in": 2,
        "out": 1,
        "quarantined": 1,
        "duplicate": 0,
        "failed": 0,
    }


def test_every_record_of_an_unknown_type_is_quarantined_and_nothing_is_sent(
    platform: ResourceNames, clean_messages: Drain, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk([order(), order(order_id="o-2")], record_type="invoice")
    response = run_batch(fresh_cleanser(), sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    assert [quarantined(platform, chunk, i)["reason"] for i in (0, 1)] == [
        "unknown record type 'invoice'"
    ] * 2
    assert clean_messages() == []
    assert ledger_entry(platform, chunk)["quarantined"] == 2


def test_a_chunk_whose_records_are_all_bad_sends_nothing(
    platform: ResourceNames, clean_messages: Drain, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk([order(amount=-1), order(order_id="o-2", email="x")])
    assert run_batch(fresh_cleanser(), sqs_event(chunk)) == {"batchItemFailures": []}
    assert clean_messages() == []
    assert len(quarantine_keys(platform)) == 2


def sent_chunk_id(params: Mapping[str, Any]) -> str:
    """The chunk id of a SendMessage call's message (its `chunk_id` attribute)."""
    return str(params["MessageAttributes"]["chunk_id"]["StringValue"])


@pytest.mark.parametrize("fault", list(Fault))
def test_only_the_message_whose_send_failed_is_retried_and_its_retry_sends_the_same_chunk(
    platform: ResourceNames, clean_messages: Drain, make_chunk: Any, order: Any, fault: Fault
) -> None:
    good = make_chunk([order(order_id="o-a")], ordinal=0)
    unlucky = make_chunk([order(order_id="o-b")], ordinal=1)
    unlucky_out = output_chunk_id(unlucky.chunk_id)
    cleanser = fresh_cleanser()

    with failing(aws.sqs(), "SendMessage", fault, when=lambda p: sent_chunk_id(p) == unlucky_out):
        first = run_batch(cleanser, sqs_event(good, unlucky))
    retry = run_batch(cleanser, sqs_event(unlucky, prefix="redelivered"))

    assert first == {"batchItemFailures": [{"itemIdentifier": "msg-1"}]}
    assert retry == {"batchItemFailures": []}
    bodies = Counter(m["Body"] for m in clean_messages())
    sent = {Chunk.decode(body).chunk_id: n for body, n in bodies.items()}
    # A lost send went through, so the retry sends a second copy: byte for byte the same
    # chunk (same id, same records), which the router's claim on the chunk id drops.
    copies = 2 if fault is Fault.LOST else 1
    assert sent == {output_chunk_id(good.chunk_id): 1, unlucky_out: copies}
    assert ledger_entry(platform, unlucky)["out"] == 1


@pytest.mark.parametrize("fault", list(Fault))
def test_a_failed_quarantine_write_retries_the_chunk_and_quarantines_the_record_once(
    platform: ResourceNames, clean_messages: Drain, make_chunk: Any, order: Any, fault: Fault
) -> None:
    chunk = make_chunk([order(), order(order_id="o-bad", amount=-1)])
    cleanser = fresh_cleanser()
    bucket = platform.quarantine_bucket

    with failing(aws.s3(), "PutObject", fault, when=lambda p: p["Bucket"] == bucket) as injected:
        first = run_batch(cleanser, sqs_event(chunk))
    retry = run_batch(cleanser, sqs_event(chunk, prefix="redelivered"))

    assert len(injected.failed) == 1
    assert first == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}
    assert retry == {"batchItemFailures": []}
    assert quarantine_keys(platform) == [
        record_key("cleanse", "order", chunk.records[1].ingested_at, chunk.records[1].id)
    ]
    [message] = clean_messages()
    assert [r.payload["order_id"] for r in Chunk.decode(message["Body"]).records] == ["o-1"]
    entry = ledger_entry(platform, chunk)
    assert (entry["records_in"], entry["out"], entry["quarantined"]) == (2, 1, 1)


def test_a_chunk_delivered_twice_is_sent_once(
    platform: ResourceNames, clean_messages: Drain, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk([order(), order(order_id="o-2")])
    cleanser = fresh_cleanser()

    assert run_batch(cleanser, sqs_event(chunk, chunk)) == {"batchItemFailures": []}
    assert run_batch(cleanser, sqs_event(chunk, prefix="again")) == {"batchItemFailures": []}

    assert len(clean_messages()) == 1
    assert ledger_entry(platform, chunk)["out"] == 2


def test_each_output_chunk_of_an_input_has_an_id_of_its_own(make_chunk: Any, order: Any) -> None:
    chunk = make_chunk([order()])
    ids = [output_chunk_id(chunk.chunk_id, ordinal) for ordinal in range(3)]
    assert ids[0] == derive_chunk_id(chunk.chunk_id, "cleanse")  # as documented
    assert len(set(ids)) == 3
    assert chunk.chunk_id not in ids


def test_cleaned_records_that_outgrow_one_chunk_are_split_into_deterministic_chunks(
    platform: ResourceNames, clean_messages: Drain, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk([order(order_id=f"o-{i}") for i in range(5)])
    cleanser = Cleanser(StageRuntime(name="cleanse"), limits=ChunkLimits(2, 256 * 1024))

    assert run_batch(cleanser, sqs_event(chunk)) == {"batchItemFailures": []}

    outs = sorted(
        (Chunk.decode(m["Body"]) for m in clean_messages()), key=lambda c: c.records[0].ordinal
    )
    assert [c.chunk_id for c in outs] == [output_chunk_id(chunk.chunk_id, i) for i in range(3)]
    assert sum(len(c.records) for c in outs) == 5


def test_a_claim_checked_record_is_resolved_cleansed_and_sent_inline(
    platform: ResourceNames, clean_messages: Drain, make_chunk: Any, order: Any
) -> None:
    cleanser = fresh_cleanser()
    raw = make_chunk([order(email="BIG@EXAMPLE.COM")])
    offloaded = cleanser.runtime.claims.offload(raw.records[0])
    chunk = raw.derive([offloaded], chunk_id=raw.chunk_id)
    assert offloaded.payload_ref is not None

    assert run_batch(cleanser, sqs_event(chunk)) == {"batchItemFailures": []}

    [message] = clean_messages()
    [record] = Chunk.decode(message["Body"]).records
    assert record.payload_ref is None
    assert record.payload["email"] == "big@example.com"


def test_a_message_that_is_not_an_envelope_is_quarantined_not_retried(
    platform: ResourceNames, clean_messages: Drain
) -> None:
    response = run_batch(fresh_cleanser(), sqs_event("this is not json"))
    assert response == {"batchItemFailures": []}
    assert clean_messages() == []
    assert len(quarantine_keys(platform)) == 1


def test_a_cleaned_record_too_big_for_a_chunk_is_claim_checked_or_quarantined_if_huge(
    platform: ResourceNames, clean_messages: Drain, make_chunk: Any, order: Any
) -> None:
    def items(n: int) -> list[dict[str, Any]]:
        return [{"sku": f"SKU-{i:05d}", "quantity": 1, "unit_price": 1.5} for i in range(n)]

    chunk = make_chunk([order(), order(order_id="o-big", items=items(40)), order(items=items(300))])
    runtime = StageRuntime(name="cleanse", claims=ClaimCheck(max_bytes=4096))
    cleanser = Cleanser(runtime, limits=ChunkLimits(10, 1024))

    assert run_batch(cleanser, sqs_event(chunk)) == {"batchItemFailures": []}

    sent = [r for m in clean_messages() for r in Chunk.decode(m["Body"]).records]
    assert [r.id for r in sent] == [chunk.records[0].id, chunk.records[1].id]
    assert sent[1].payload_ref is not None
    assert runtime.claims.resolve(sent[1]).payload["order_id"] == "o-big"
    assert "at most 4096 bytes" in quarantined(platform, chunk, 2)["reason"]
    entry = ledger_entry(platform, chunk)
    assert (entry["records_in"], entry["out"], entry["quarantined"]) == (3, 2, 1)
