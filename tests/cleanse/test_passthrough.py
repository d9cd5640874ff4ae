"""A payload passes through cleanse as the JSON it came as only if that is exactly what
cleansing it would send on: same fields in the same order, same values, the same bytes.

Reference: the general way (`normalise`, then fastjsonschema), as in test_compiled. For every
payload here, good or bad, `clean_as_is` of its compact JSON (as ingest writes it) must be
False, or the reference must accept it and encode it to those very bytes.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import fastjsonschema
import msgspec
import pytest

from chalicelib.catalogue import Catalogue, RecordType
from chalicelib.normalise import TypeRules, normalise
from chalicelib.passthrough import compile_passthrough
from sluice import jsonx
from sluice.errors import PermanentError

CATALOGUE = Catalogue()


def _type(name: str) -> RecordType:
    found = CATALOGUE.get(name)
    assert found is not None
    return found


def general(record_type: RecordType, payload: Any) -> bytes | None:
    """What cleansing `payload` the general way sends on, as JSON; None if it is refused."""
    full = fastjsonschema.compile(dict(record_type.schema))
    try:
        data = normalise(payload, record_type.rules, record_type.known_fields)
        full(data)
    except (PermanentError, fastjsonschema.JsonSchemaValueException):
        return None
    return jsonx.dumps(data)


def agrees(record_type: RecordType, payload: Any) -> bool:
    """False if `clean_as_is` passed a payload the general way would change or refuse."""
    text = msgspec.json.encode(payload)
    if not record_type.clean_as_is(text):
        return True
    return general(record_type, payload) == text


CLEAN_ORDER: dict[str, Any] = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "email": "ada@example.com",
    "amount": 12.5,
    "currency": "EUR",
    "created_at": "2026-11-27T10:00:00.123Z",
    "items": [
        {"sku": "s-1", "quantity": 2, "unit_price": 3.5},
        {"sku": "s 2", "quantity": 1},
    ],
}


def order(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(CLEAN_ORDER)
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not DROP}


def item(**changes: Any) -> dict[str, Any]:
    return order(items=[{"sku": "s-1", "quantity": 2, "unit_price": 3.5, **changes}])


DROP = object()
ORDERS: list[Any] = [
    order(),
    order(amount=12),  # an integer amount: a number as it is
    order(items=DROP),
    order(items=[]),
    order(email="Ada@example.com"),
    order(email="ada@example"),
    order(email=" ada@example.com"),
    order(currency="eur"),
    order(currency="EURO"),
    order(order_id=""),
    order(order_id=" o-1"),
    order(order_id="o-1 "),
    order(order_id="o-1\u00a0"),  # a non-ASCII space
    order(order_id="\u3000o-1"),
    order(order_id="o\u00a0-1"),  # inside: kept, and clean
    order(order_id="zürich"),
    order(order_id="o-1\t"),
    order(order_id='o-"1"'),
    order(order_id="x" * 65),
    order(created_at="2026-11-27T10:00:00Z"),
    order(created_at="2026-02-30T10:00:00.000Z"),  # canonical shape, not a date
    order(created_at="2026-11-27T24:00:00.000Z"),
    order(created_at="2026-11-27T10:00:00.123+00:00"),
    order(created_at=1796428800),
    order(created_at=None),
    order(created_at=DROP),
    order(amount="12.5"),
    order(amount=-1),
    order(amount=True),
    order(amount=None),
    order(amount=10**30),
    order(coupon="X"),  # unknown: dropped
    order(note=""),
    order(items=[{"sku": "s", "quantity": 1, "colour": "red"}]),
    item(quantity=0),
    item(quantity=1.0),
    item(quantity="2"),
    item(quantity=True),
    item(unit_price=-0.5),
    item(unit_price=0),
    item(unit_price="3.5"),
    item(unit_price=None),
    item(sku=""),
    item(sku=" s"),
    item(sku="x" * 65),
    order(items=[None]),
    order(items=["s-1"]),
    order(items={"sku": "s"}),
    {"order_id": "o-1"},
    [],
    "order",
    None,
]


@pytest.mark.parametrize("payload", ORDERS, ids=range(len(ORDERS)))
def test_an_order_passes_as_it_is_only_if_cleansing_sends_those_bytes(payload: Any) -> None:
    assert agrees(_type("order"), payload)


def test_clean_orders_do_pass_as_they_are() -> None:
    order_type = _type("order")
    for payload in (order(), order(amount=12), order(items=DROP), order(order_id="o\u00a0-1")):
        assert order_type.clean_as_is(msgspec.json.encode(payload)), payload


@pytest.mark.parametrize(
    "text",
    [
        b'{"order_id":"o-1","order_id":"o-2"}',  # not an order in any case
        b'{"order_id" : "o-1"}',
        b'{"order_id":"o\\u002d1","customer_id":"c-1"}',
        b"not json",
        b"",
    ],
)
def test_odd_text_is_left_to_the_general_way(text: bytes) -> None:
    assert not _type("order").clean_as_is(text)


def test_random_changes_to_clean_orders_never_pass_what_cleansing_would_change() -> None:
    order_type = _type("order")
    rng = random.Random(20261205)
    bag: list[Any] = [
        None, "", " ", "x ", "\u2003x", "12", "3.5", "-2", "x", "EUR", "eur", "Ada@b.co",
        "a@b.co", 0, -1, 1, 2.5, 1e300, True, [], {}, ["a"], {"sku": "s", "quantity": 1},
        "2026-11-27T10:00:00Z", "2026-11-27T10:00:00.000Z", "2026-11-31T10:00:00.000Z",
    ]  # fmt: skip
    passed = 0
    for n in range(600):
        doc = order(order_id=f"o-{n}")
        for _ in range(rng.randrange(0, 3)):
            items = doc.get("items")
            if isinstance(items, list) and items and rng.random() < 0.5:
                target = rng.choice(items)
                target[rng.choice(["sku", "quantity", "unit_price", "extra"])] = rng.choice(bag)
            else:
                doc[rng.choice([*doc, "extra"])] = rng.choice(bag)
        assert agrees(order_type, doc), doc
        passed += order_type.clean_as_is(msgspec.json.encode(doc))
    assert 0 < passed < 600  # both ways were taken


@pytest.mark.parametrize(
    "payload",
    [
        {
            "customer_id": "c-1",
            "email": "a@b.co",
            "name": "Ada",
            "country": "GB",
            "created_at": "2026-11-27T10:00:00.000Z",
        },
        {"customer_id": "c-1", "email": "A@B.CO", "name": "Ada", "country": "GB"},
        {"customer_id": "c-1", "email": "a@b.co", "name": "", "country": "GB"},
        {"customer_id": "c-1", "email": "a@b.co", "name": "Ada", "country": "gb"},
        {"customer_id": "c-1", "email": "a@b.co", "name": "Ada", "country": "GB", "x": " k "},
    ],
)
def test_customers_pass_as_they_are_only_if_cleansing_sends_those_bytes(payload: Any) -> None:
    assert agrees(_type("customer"), payload)


def test_rules_or_schemas_beyond_the_test_get_none() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "n": {"type": "string"}}}
    known = frozenset({"a", "n"})
    for rules in (
        TypeRules.from_json({"trim": False}),
        TypeRules.from_json({"lowercase": ["a.b"]}),
        TypeRules.from_json({"numbers": ["n"]}),  # a number rule on a string field
    ):
        assert compile_passthrough(schema, rules, known) is None
    for odd in ({"type": ["string", "null"]}, {"enum": ["a"]}, {"type": "string", "const": "a"}):
        other = {"type": "object", "properties": {"a": odd, "n": {"type": "string"}}}
        assert compile_passthrough(other, TypeRules(), known) is None
    assert compile_passthrough(schema, TypeRules(), known) is not None


def test_a_chunk_cleansed_with_its_payloads_left_as_json_sends_the_same_records(
    platform: Any, clean_messages: Any, make_chunk: Any, order: Any, monkeypatch: Any
) -> None:
    from support.events import run_batch, sqs_event

    from chalicelib.service import Cleanser
    from sluice.envelope import Chunk
    from sluice.stage import StageRuntime

    clean = {"created_at": "2026-11-27T08:15:00.000Z"}
    chunk = make_chunk(
        [
            order(order_id="o-1", **clean),
            order(order_id=" o-2 ", **clean),  # trimmed
            order(order_id="o-3", amount="12.50", **clean),  # a number from a string
            order(order_id="o-4", currency="usd", **clean),  # upper-cased
            order(order_id="o-5", email="no-at-sign", **clean),  # refused
            order(order_id="o-6"),  # its timestamp made canonical
            order(order_id="o-7", items=[{"sku": "s", "quantity": 2}], **clean),
        ]
    )
    twin = chunk.derive(chunk.records, chunk_id=chunk.chunk_id + "-twin")
    as_is: list[bool] = []
    real = RecordType.clean_as_is

    def spy(self: RecordType, text: bytes) -> bool:
        as_is.append(real(self, text))
        return as_is[-1]

    monkeypatch.setattr(RecordType, "clean_as_is", spy)

    decoded = run_batch(Cleanser(StageRuntime(name="cleanse")), sqs_event(chunk))
    sent_decoded = [Chunk.decode(m["Body"]).records_json() for m in clean_messages()]
    assert as_is == []  # payloads decoded by the runtime: every one cleansed
    left_as_json = run_batch(
        Cleanser(StageRuntime(name="cleanse", lazy_payloads=True)), sqs_event(twin)
    )
    sent_as_json = [Chunk.decode(m["Body"]).records_json() for m in clean_messages()]

    assert decoded == left_as_json == {"batchItemFailures": []}
    assert sent_as_json == sent_decoded
    assert len(jsonx.loads(sent_as_json[0])) == 6  # o-5 quarantined both ways
    assert as_is == [True, False, False, False, False, False, True]


def test_a_payload_that_cannot_be_decoded_after_all_is_quarantined_alone(
    platform: Any, clean_messages: Any, make_chunk: Any, order: Any
) -> None:
    """JSON whose number is out of range passes the envelope's scan of a payload left as JSON
    and fails when decoded: that record is quarantined, the chunk's others go on."""
    import json

    from support.events import run_batch, sqs_event

    from chalicelib.service import Cleanser
    from sluice import aws
    from sluice.envelope import Chunk
    from sluice.quarantine import record_key
    from sluice.stage import StageRuntime

    chunk = make_chunk([order(order_id="o-1"), order(order_id="o-2", amount=7.25), order()])
    event = sqs_event(chunk)
    event["Records"][0]["body"] = chunk.encode().replace('"amount":7.25', '"amount":1e400')

    response = run_batch(Cleanser(StageRuntime(name="cleanse", lazy_payloads=True)), event)

    assert response == {"batchItemFailures": []}
    sent = [
        r.payload["order_id"] for m in clean_messages() for r in Chunk.decode(m["Body"]).records
    ]
    assert sent == ["o-1", "o-1"]
    bad = chunk.records[1]
    key = record_key("cleanse", chunk.type, bad.ingested_at, bad.id)
    doc = json.loads(aws.s3().get_object(Bucket=platform.quarantine_bucket, Key=key)["Body"].read())
    assert "payload is not JSON" in doc["reason"]
    assert '"amount":1e400' in doc["record"]["payload_json"]
