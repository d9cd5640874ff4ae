"""The alerts consumer publishes one readable alert per high-priority record, never two."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from chalice.test import Client
from support.calls import Fault, count_calls, failing

from consumers import testkit
from sluice import aws
from sluice.envelope import Chunk, Record
from sluice.idempotency import ClaimInProgressError
from sluice.registry import load_registry

HIGH = {"priority": "high", "region": "eu"}
ORDERS = [
    {"order_id": "o-123", "customer_id": "c-9", "amount": 1250, "currency": "EUR"},
    {"order_id": "o-124", "customer_id": "c-7", "amount": 4999.5, "currency": "USD"},
]


def invoke(app_module: ModuleType, app_dir: Path, event: dict[str, Any]) -> Any:
    with Client(app_module.app, stage_name="test", project_dir=str(app_dir)) as client:
        return client.lambda_.invoke("consume", event)


def alerts(inbox: str) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in testkit.receive_all(inbox)]


def test_alert_text_names_the_order_amount_customer_and_correlation() -> None:
    from chalicelib.message import alert_text

    chunk = testkit.make_chunk("order", ORDERS[:1], correlation_id="corr-1")

    text = alert_text(chunk.records[0], chunk)

    assert text == (
        "High-value order o-123: 1,250.00 EUR from customer c-9 "
        "(correlation corr-1, record r-c-test-0-0)"
    )


def test_alert_text_of_other_types_names_type_and_key() -> None:
    from chalicelib.message import alert_text

    chunk = Chunk("c-1", "customer", "s3://x/y", "corr", (Record("r-1", 0, "t", {"x": 1}),))

    assert (
        alert_text(chunk.records[0], chunk)
        == "High-priority customer r-1 (correlation corr, record r-1)"
    )


@pytest.mark.parametrize("record_type", load_registry().names())
def test_every_registered_type_is_alerted_by_its_natural_key(record_type: str) -> None:
    from chalicelib.message import alert_text

    spec = load_registry().get(record_type)
    payload = {spec.natural_key: "k-42"}
    chunk = Chunk("c-1", record_type, "s3://x/y", "corr", (Record("r-1", 0, "t", payload),))

    text = alert_text(chunk.records[0], chunk)

    title = spec.extras.get("alert", {}).get("title") or f"High-priority {record_type}"
    assert text == f"{title} k-42 (correlation corr, record r-1)"


def test_a_types_alert_block_words_its_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib import message

    folder = tmp_path / "shipment"
    folder.mkdir()
    alert = {
        "title": "Late shipment",
        "amount_field": "value",
        "currency_field": "ccy",
        "party_field": "carrier",
        "party_label": "carrier",
    }
    declared = {"version": 1, "natural_key": "shipment_id", "alert": alert}
    (folder / "type.json").write_text(json.dumps(declared))
    properties = {f: {"type": "string"} for f in ("shipment_id", "value", "ccy", "carrier")}
    (folder / "schema.json").write_text(json.dumps({"type": "object", "properties": properties}))
    (folder / "rules.json").write_text("{}")
    monkeypatch.setattr(message, "load_registry", lambda: load_registry(tmp_path))
    payload = {"shipment_id": "s-1", "value": "1234.5", "ccy": "EUR", "carrier": "DHL"}
    chunk = Chunk("c-1", "shipment", "s3://x/y", "corr", (Record("r-1", 0, "t", payload),))

    assert message.alert_text(chunk.records[0], chunk) == (
        "Late shipment s-1: 1,234.50 EUR from carrier DHL (correlation corr, record r-1)"
    )


def test_each_record_of_a_high_priority_chunk_gets_one_alert(
    account: testkit.Account, app_module: ModuleType, app_dir: Path, alerts_inbox: str
) -> None:
    chunk = testkit.make_chunk("order", ORDERS, attributes=HIGH)

    invoke(app_module, app_dir, testkit.sns_event(chunk, account.records_topic_arn))

    got = alerts(alerts_inbox)
    assert sorted(a["Message"] for a in got) == [
        "High-value order o-123: 1,250.00 EUR from customer c-9 "
        "(correlation corr-test, record r-c-test-0-0)",
        "High-value order o-124: 4,999.50 USD from customer c-7 "
        "(correlation corr-test, record r-c-test-0-1)",
    ]
    assert {a["Subject"] for a in got} == {
        "Sluice alert: order r-c-test-0-0",
        "Sluice alert: order r-c-test-0-1",
    }
    ledger = testkit.ledger_items()
    assert ledger["sink:alerts#c-test-0"]["delivered"] == {"N": "2"}
    assert ledger["consumer-alerts#c-test-0"]["out"] == {"N": "2"}


def test_duplicate_delivery_alerts_only_once(
    account: testkit.Account, app_module: ModuleType, app_dir: Path, alerts_inbox: str
) -> None:
    chunk = testkit.make_chunk("order", ORDERS, attributes=HIGH)
    event = testkit.sns_event(chunk, account.records_topic_arn)

    invoke(app_module, app_dir, event)
    dynamodb, sns = count_calls(aws.dynamodb()), count_calls(aws.sns())
    invoke(app_module, app_dir, event)

    assert len(alerts(alerts_inbox)) == 2
    assert sns.operations == []  # the redelivery of a completed chunk publishes nothing
    # claim; ledger (the consumer's and the sink's entry, one item in one transaction,
    # refused, and the object's progress read)
    assert sorted(dynamodb.operations) == sorted(["UpdateItem", "TransactWriteItems", "GetItem"])


class FlakyPublisher:
    """Publishes through the real publisher but fails the first call for one record id."""

    def __init__(self, real: Any, fail_for: str) -> None:
        self.real, self.fail_for = real, fail_for
        self.published: list[str] = []

    def publish(self, records: Sequence[Record], chunk: Chunk) -> set[str]:
        if any(r.id == self.fail_for for r in records):
            self.fail_for = ""
            from chalicelib.service import AlertPublishError

            raise AlertPublishError("SNS throttled")
        done = self.real.publish(records, chunk)
        self.published += sorted(done)
        return set(done)


def test_a_failed_publish_call_releases_the_claims_so_the_retry_alerts_once_each(
    account: testkit.Account, alerts_inbox: str
) -> None:
    from chalicelib import service

    chunk = testkit.make_chunk("order", ORDERS, attributes=HIGH)
    real = service.AlertPublisher(account.alerts_topic_arn)
    flaky = FlakyPublisher(real, fail_for="r-c-test-0-1")
    rt = service.runtime()

    with pytest.raises(service.AlertPublishError):
        service.alert_chunk(chunk, rt, flaky)
    outcome = service.alert_chunk(chunk, rt, flaky)
    again = service.alert_chunk(chunk, rt, flaky)

    assert flaky.published == ["r-c-test-0-0", "r-c-test-0-1"]
    assert (outcome.out, outcome.duplicate) == (2, 0)
    assert (again.out, again.duplicate) == (0, 2)
    assert len(alerts(alerts_inbox)) == 2


class RefusingSns:
    """The real SNS client, except that PublishBatch reports one entry as failed, once."""

    def __init__(self, real: Any, refuse_record: str) -> None:
        self.real, self.refuse_record = real, refuse_record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def publish_batch(self, **kwargs: Any) -> Any:
        entries = kwargs["PublishBatchRequestEntries"]
        refused = [e for e in entries if e["Subject"].endswith(self.refuse_record)]
        self.refuse_record = self.refuse_record if not refused else "-none-"
        sent = self.real.publish_batch(
            **{**kwargs, "PublishBatchRequestEntries": [e for e in entries if e not in refused]}
        )
        failed = [
            {"Id": e["Id"], "Code": "InternalError", "Message": "try again", "SenderFault": False}
            for e in refused
        ]
        return {"Successful": sent.get("Successful", []), "Failed": failed}


def test_an_alert_sns_refuses_is_retried_alone_and_the_others_are_not_repeated(
    account: testkit.Account, alerts_inbox: str
) -> None:
    from chalicelib import service

    orders = [{**ORDERS[0], "order_id": f"o-{i}"} for i in range(12)]
    chunk = testkit.make_chunk("order", orders, attributes=HIGH)
    refused = chunk.records[4].id
    sns = RefusingSns(aws.sns(), refuse_record=refused)
    publisher = service.AlertPublisher(account.alerts_topic_arn, client=sns)  # type: ignore[arg-type]
    rt = service.runtime()

    with pytest.raises(service.AlertPublishError, match="1 alert"):
        service.alert_chunk(chunk, rt, publisher)
    first = alerts(alerts_inbox)
    retry = service.alert_chunk(chunk, rt, publisher)
    second = alerts(alerts_inbox)

    assert len(first) == 11
    assert refused not in " ".join(a["Message"] for a in first)
    assert [a["Subject"] for a in second] == [f"Sluice alert: order {refused}"]
    assert (retry.out, retry.duplicate) == (1, 11)


def test_a_chunk_of_alerts_costs_one_claim_write_per_publish_batch_not_per_alert(
    account: testkit.Account, app_module: ModuleType, app_dir: Path, alerts_inbox: str
) -> None:
    chunk = orders_chunk(45)
    dynamodb, sns = count_calls(aws.dynamodb()), count_calls(aws.sns())

    invoke(app_module, app_dir, testkit.sns_event(chunk, account.records_topic_arn))

    assert sorted(dynamodb.operations) == sorted(
        ["UpdateItem"]  # the chunk's claim
        + ["UpdateItem"] * 4  # a progress mark after each PublishBatch but the last
        + ["UpdateItem"]  # the completion, with the last batch's mark
        # the ledger: stage outcome and delivery (one item) in one transaction, and the
        # object's progress read back
        + ["TransactWriteItems", "GetItem"]
    )
    assert sns.operations == ["PublishBatch"] * 5
    assert len(alerts(alerts_inbox)) == 45
    [claim] = claims(account)
    assert claim["status"] == {"S": "COMPLETED"}
    assert sorted(int(n) for n in claim["progress"]["NS"]) == list(range(45))


def orders_chunk(n: int) -> Chunk:
    """A high-priority chunk of `n` orders: `n` alerts."""
    orders = [{**ORDERS[0], "order_id": f"o-{i}"} for i in range(n)]
    return testkit.make_chunk("order", orders, attributes=HIGH)


def alerting(account: testkit.Account, n: int) -> tuple[Chunk, list[str], Any]:
    """A chunk of `n` alerts, its record ids, and a publisher to the alerts topic."""
    from chalicelib import service

    chunk = orders_chunk(n)
    return chunk, [r.id for r in chunk.records], service.AlertPublisher(account.alerts_topic_arn)


def claims(account: testkit.Account) -> list[dict[str, Any]]:
    items = aws.dynamodb().scan(TableName=account.names.idempotency_table)["Items"]
    return [item for item in items if item["pk"]["S"].startswith("alerts#")]


class Killed(BaseException):
    """The invocation dies here (nothing after it runs, no handler sees it)."""


def killing(_fault: Any, _operation: str) -> Exception:
    """`failing`'s error for a kill: a BaseException, which no `except Exception` catches."""
    return Killed()  # type: ignore[return-value]


def later_runtime(seconds: float) -> Any:
    """A runtime whose clock is `seconds` ahead: a retry after the killed one's lease."""
    import time

    from chalicelib import service
    from sluice.idempotency import IdempotencyStore
    from sluice.stage import StageRuntime

    store = IdempotencyStore(clock=lambda: time.time() + seconds)
    return StageRuntime(name=service.STAGE, idempotency=store)


def alert_ids(inbox: str) -> list[str]:
    return [a["MessageAttributes"]["alert_id"]["Value"] for a in alerts(inbox)]


def test_killed_after_the_second_publish_batch_the_retry_publishes_only_the_rest(
    account: testkit.Account, alerts_inbox: str
) -> None:
    from chalicelib import service

    chunk, ids, publisher = alerting(account, 35)
    sns = aws.sns()
    batches = iter(range(4))
    with (
        failing(
            sns, "PublishBatch", Fault.REFUSED, when=lambda _: next(batches) == 2, error=killing
        ),
        pytest.raises(Killed),
    ):
        service.alert_chunk(chunk, service.runtime(), publisher)
    first = alert_ids(alerts_inbox)
    with pytest.raises(ClaimInProgressError):  # the killed one's lease holds
        service.alert_chunk(chunk, service.runtime(), publisher)

    retry = service.alert_chunk(chunk, later_runtime(20), publisher)

    assert first == ids[:20]
    assert sorted(alert_ids(alerts_inbox)) == sorted(ids[20:])
    assert (retry.out, retry.duplicate) == (15, 20)


def test_killed_between_a_publish_batch_and_its_mark_repeats_that_batch_only(
    account: testkit.Account, alerts_inbox: str
) -> None:
    from chalicelib import service

    chunk, ids, publisher = alerting(account, 35)
    marks = iter(range(10))

    def second_mark(params: Any) -> bool:
        return "ADD" in str(params.get("UpdateExpression")) and next(marks) == 1

    with (
        failing(aws.dynamodb(), "UpdateItem", Fault.REFUSED, when=second_mark, error=killing),
        pytest.raises(Killed),
    ):
        service.alert_chunk(chunk, service.runtime(), publisher)
    first = alert_ids(alerts_inbox)

    service.alert_chunk(chunk, later_runtime(20), publisher)

    assert first == ids[:20]
    assert sorted(alert_ids(alerts_inbox)) == sorted(ids[10:])  # batch 2 (10 alerts) again


def test_a_publish_batch_that_fails_after_the_first_lets_the_retry_publish_only_the_rest(
    account: testkit.Account, alerts_inbox: str
) -> None:
    from chalicelib import service

    chunk, ids, publisher = alerting(account, 25)
    calls = iter(range(4))
    with (
        failing(aws.sns(), "PublishBatch", Fault.REFUSED, when=lambda _: next(calls) == 1),
        pytest.raises(service.AlertPublishError),
    ):
        service.alert_chunk(chunk, service.runtime(), publisher)
    first = alert_ids(alerts_inbox)

    retry = service.alert_chunk(chunk, service.runtime(), publisher)  # no wait: let go

    assert first == ids[:10]
    assert sorted(alert_ids(alerts_inbox)) == sorted(ids[10:])
    assert (retry.out, retry.duplicate) == (15, 10)


def test_a_record_id_repeated_in_a_chunk_gets_one_alert_and_counts_as_a_duplicate(
    account: testkit.Account, alerts_inbox: str
) -> None:
    import dataclasses

    from chalicelib import service

    chunk, ids, publisher = alerting(account, 2)
    twice = dataclasses.replace(chunk, records=(chunk.records[0], *chunk.records))

    outcome = service.alert_chunk(twice, service.runtime(), publisher)

    assert sorted(alert_ids(alerts_inbox)) == sorted(ids)
    assert (outcome.out, outcome.duplicate) == (2, 1)


def test_filter_policy_of_resources_yaml_passes_only_high_priority_chunks(
    account: testkit.Account, app_module: ModuleType, app_dir: Path, alerts_inbox: str
) -> None:
    policy = testkit.filter_policy(testkit.load_template(app_dir / "resources.yaml"))
    probe = account.subscribe_queue("alerts-probe", policy)
    account.publish(testkit.make_chunk("order", ORDERS[:1], chunk_id="c-high", attributes=HIGH))
    account.publish(
        testkit.make_chunk(
            "order", ORDERS[1:], chunk_id="c-normal", attributes={"priority": "normal"}
        )
    )

    arrived = testkit.receive_all(probe)
    for i, message in enumerate(arrived):
        event = testkit.sns_event(message["Body"], account.records_topic_arn, f"m-{i}")
        invoke(app_module, app_dir, event)

    assert [json.loads(m["Body"])["chunk_id"] for m in arrived] == ["c-high"]
    assert [a["Message"].split(":")[0] for a in alerts(alerts_inbox)] == ["High-value order o-123"]


def test_message_that_is_not_an_envelope_is_quarantined_not_retried(
    account: testkit.Account, app_module: ModuleType, app_dir: Path, alerts_inbox: str
) -> None:
    event = testkit.sns_event("not json", account.records_topic_arn, "m-bad")

    invoke(app_module, app_dir, event)

    assert testkit.quarantined_keys() == ["consumer-alerts/_unknown/2026-11-27/m-bad.json"]
    assert alerts(alerts_inbox) == []


def test_alerts_topic_is_found_next_to_the_invoking_topic(account: testkit.Account) -> None:
    from chalicelib.service import alerts_topic_arn

    assert alerts_topic_arn(account.records_topic_arn) == account.alerts_topic_arn


def test_config_policies_and_queue_timeouts_are_consistent(app_dir: Path) -> None:
    assert testkit.app_config_problems(app_dir) == []


# ---------------------------------------------------------------------- lost answers and bugs


def test_every_alert_carries_its_record_id_as_a_stable_alert_id(
    account: testkit.Account, app_module: ModuleType, app_dir: Path, alerts_inbox: str
) -> None:
    chunk = testkit.make_chunk("order", ORDERS, attributes=HIGH)

    invoke(app_module, app_dir, testkit.sns_event(chunk, account.records_topic_arn))

    ids = sorted(a["MessageAttributes"]["alert_id"]["Value"] for a in alerts(alerts_inbox))
    assert ids == sorted(r.id for r in chunk.records)


def test_a_publish_whose_answer_was_lost_repeats_alerts_only_under_the_same_alert_id(
    account: testkit.Account, app_module: ModuleType, app_dir: Path, alerts_inbox: str
) -> None:
    from support.calls import lose_answers

    chunk = testkit.make_chunk("order", ORDERS, attributes=HIGH)
    with lose_answers(aws.sns(), "PublishBatch") as lost:
        invoke(app_module, app_dir, testkit.sns_event(chunk, account.records_topic_arn))

    got = alerts(alerts_inbox)
    assert lost.lost == ["PublishBatch"]
    ids = [a["MessageAttributes"]["alert_id"]["Value"] for a in got]
    assert sorted(set(ids)) == sorted(r.id for r in chunk.records)  # none missing
    assert len(ids) == 2 * len(chunk.records)  # SNS accepted both calls: the documented repeat


def test_a_claim_whose_answer_was_lost_still_alerts_once_each(
    account: testkit.Account, app_module: ModuleType, app_dir: Path, alerts_inbox: str
) -> None:
    from support.calls import lose_answers

    chunk = testkit.make_chunk("order", ORDERS, attributes=HIGH)
    with lose_answers(aws.dynamodb(), "UpdateItem") as lost:
        invoke(app_module, app_dir, testkit.sns_event(chunk, account.records_topic_arn))

    assert lost.lost == ["UpdateItem"]
    ids = sorted(a["MessageAttributes"]["alert_id"]["Value"] for a in alerts(alerts_inbox))
    assert ids == sorted(r.id for r in chunk.records)


def test_a_record_the_alert_code_cannot_handle_costs_only_its_own_alert(
    account: testkit.Account,
    app_module: ModuleType,
    app_dir: Path,
    alerts_inbox: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chalicelib import message, service

    failures = aws.sqs().create_queue(QueueName="sluice-test-consumer-alerts-failures")
    real = message.alert_text

    def text(record: Record, chunk: Chunk) -> str:
        if record.payload["order_id"] == "o-124":
            raise ValueError("cannot format this amount")
        return real(record, chunk)

    monkeypatch.setattr(service, "alert_text", text)
    chunk = testkit.make_chunk("order", ORDERS, attributes=HIGH)

    invoke(app_module, app_dir, testkit.sns_event(chunk, account.records_topic_arn))

    got = alerts(alerts_inbox)
    assert [a["MessageAttributes"]["alert_id"]["Value"] for a in got] == [chunk.records[0].id]
    [dead] = testkit.receive_all(failures["QueueUrl"])
    assert [r.id for r in Chunk.decode(dead["Body"]).records] == [chunk.records[1].id]
    assert dead["MessageAttributes"]["error_type"]["StringValue"] == "ValueError"
    ledger = testkit.ledger_items()
    assert ledger["consumer-alerts#c-test-0"]["failed"] == {"N": "1"}
    assert ledger["sink:alerts#c-test-0"]["delivered"] == {"N": "1"}


def test_the_alert_claim_holds_a_short_lease_so_a_killed_invocation_blocks_its_retry_briefly(
    account: testkit.Account, app_module: ModuleType, app_dir: Path, alerts_inbox: str
) -> None:
    import time

    from chalicelib.service import CLAIM_LEASE_MS
    from sluice.idempotency import IN_PROGRESS_EXPIRY_ATTR, IN_PROGRESS_MARGIN_MS

    chunk = testkit.make_chunk("order", ORDERS, attributes=HIGH)
    before_ms = int(time.time() * 1000)

    invoke(app_module, app_dir, testkit.sns_event(chunk, account.records_topic_arn))

    expiries = [int(item[IN_PROGRESS_EXPIRY_ATTR]["N"]) - before_ms for item in claims(account)]
    assert len(expiries) == 1  # one claim for the chunk
    # The test context reports minutes left: the lease, not the remaining time, bounds it.
    assert max(expiries) <= CLAIM_LEASE_MS + IN_PROGRESS_MARGIN_MS + 2_000
