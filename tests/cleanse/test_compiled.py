"""The compiled pass (rules in one walk, a generated schema check) against the general way.

Reference: `normalise` then fastjsonschema's own validator, as cleanse did before the
compiled pass. On every payload here, good or bad, a record type must give the same data or
the same reason.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import fastjsonschema
import pytest

from chalicelib.catalogue import Catalogue, RecordType, compile_check
from chalicelib.normalise import TypeRules, compile_rules, normalise
from sluice.errors import PermanentError

CATALOGUE = Catalogue()


def reference(record_type: RecordType, payload: Any) -> tuple[str, Any]:
    """("ok", data) or ("error", reason), the way cleanse worked before compiling."""
    full = fastjsonschema.compile(dict(record_type.schema))
    try:
        data = normalise(payload, record_type.rules, record_type.known_fields)
        full(data)
    except PermanentError as error:
        return "error", error.reason
    except fastjsonschema.JsonSchemaValueException as exc:
        return "error", f"invalid {record_type.name}: {exc.message}"
    return "ok", data


def compiled(record_type: RecordType, payload: Any) -> tuple[str, Any]:
    try:
        return "ok", record_type.cleanse(payload)
    except PermanentError as error:
        return "error", error.reason


def order(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "order_id": " o-1 ",
        "customer_id": "c-1",
        "email": " Ada@Example.COM ",
        "amount": "12.50",
        "currency": "eur",
        "created_at": "2026-11-27T10:00:00+02:00",
        "items": [{"sku": " s-1 ", "quantity": "2", "unit_price": 3.5}],
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not DROP}


DROP = object()
ORDERS: list[Any] = [
    order(),
    order(created_at="2026-11-27T10:00:00.123Z", amount=12, currency="EUR"),
    order(created_at="2026-13-27T10:00:00.123Z"),  # canonical shape, not a date
    order(created_at="2026-11-27T24:00:00.000Z"),
    order(created_at="\uff12\uff10\uff12\uff16-11-27T10:00:00.123Z"),  # full-width digits
    order(created_at="1796428800"),
    order(created_at=1796428800.5),
    order(created_at="2026-11-27"),
    order(created_at=True),
    order(created_at=None),
    order(created_at=DROP),
    order(amount="NaN"),
    order(amount="1e999"),
    order(amount="-1"),
    order(amount=" 7 "),
    order(amount=True),
    order(amount=float("inf")),
    order(amount=""),
    order(amount=[1]),
    order(currency="EURO"),
    order(currency="EUR\n"),
    order(email="not-an-email"),
    order(email="   "),
    order(order_id="x" * 65),
    order(order_id=7),
    order(coupon=" X ", notes={"a": [" b "]}),
    order(items=[]),
    order(items="none"),
    order(items=None),
    order(items=[{"sku": "a", "quantity": 1.0}]),
    order(items=[{"sku": "a", "quantity": "1.0"}]),
    order(items=[{"sku": "a", "quantity": 0}]),
    order(items=[{"sku": "a", "quantity": "x"}, {"sku": "b", "quantity": "y"}]),
    order(items=[{"sku": "a", "quantity": 1, "colour": "red"}]),
    order(items=[{"sku": "a"}]),
    order(items=[{"sku": "a", "quantity": None}]),
    order(items=[" a ", 3, None, [" b "]]),
    order(items=[{"sku": "a", "quantity": 2, "unit_price": "-0.5"}]),
    {"order_id": "only"},
    [],
    "order",
    None,
    {1: "a"},
]
CUSTOMERS = [
    {
        "customer_id": " c-1 ",
        "email": "A@B.CO",
        "name": " Ada ",
        "country": "gb",
        "created_at": "2026-11-27 10:00:00",
        "extra": " kept ",
    },
    {"customer_id": "c-2", "email": "a@b.co", "name": "", "country": "GB", "created_at": "x"},
    {"customer_id": "c-3", "email": "a@b.co", "name": "N", "country": "GBR", "created_at": 0},
]


@pytest.mark.parametrize("payload", ORDERS, ids=range(len(ORDERS)))
def test_order_payloads_give_what_the_general_way_gives(payload: Any) -> None:
    order_type = CATALOGUE.get("order")
    assert order_type is not None
    before = copy.deepcopy(payload)

    assert compiled(order_type, payload) == reference(order_type, payload)
    assert payload == before  # the input is never changed


@pytest.mark.parametrize("payload", CUSTOMERS, ids=range(len(CUSTOMERS)))
def test_customer_payloads_give_what_the_general_way_gives(payload: Any) -> None:
    customer = CATALOGUE.get("customer")
    assert customer is not None
    assert compiled(customer, payload) == reference(customer, payload)


def test_random_changes_to_synthetic_orders_give_what_the_general_way_gives() -> None:
    """Seeded: 400 orders with one to three fields replaced by a value from a mixed bag."""
    order_type = CATALOGUE.get("order")
    assert order_type is not None
    rng = random.Random(20261204)
    bag: list[Any] = [
        None, "", " ", "12", " 3.5 ", "-2", "x", 0, -1, 1.5, True, [], {}, ["a"],
        "2026-11-27T10:00:00Z", "2026-11-27T10:00:00.000Z", "EUR", "a@b.co",
    ]  # fmt: skip
    agree = errors = 0
    for n in range(400):
        doc = order(
            order_id=f"o-{n}",
            amount=rng.choice([12.5, "7", 0]),
            items=[
                {"sku": f"s-{i}", "quantity": rng.randrange(1, 5), "unit_price": 1.25}
                for i in range(rng.randrange(0, 4))
            ],
        )
        for _ in range(rng.randrange(1, 4)):
            items = doc.get("items")
            if isinstance(items, list) and items and rng.random() < 0.4:
                item = rng.choice(items)
                if isinstance(item, dict):
                    item[rng.choice(["sku", "quantity", "unit_price", "extra"])] = rng.choice(bag)
            else:
                doc[rng.choice([*doc, "extra"])] = rng.choice(bag)
        got, want = compiled(order_type, doc), reference(order_type, doc)
        assert got == want, doc
        agree += 1
        errors += got[0] == "error"
    assert agree == 400
    assert 0 < errors < 400  # both kinds were exercised


def test_compiled_rules_match_normalise_on_nested_and_list_paths() -> None:
    rules = TypeRules.from_json(
        {
            "lowercase": ["a.b", "tags[]"],
            "uppercase": ["lines[].code"],
            "numbers": ["lines[].n", "deep[].x[].y"],
            "unknown_fields": "keep",
        }
    )
    payload = {
        "a": {"b": " MiXed ", "c": 1},
        "tags": [" X ", None, 2],
        "lines": [{"code": "ab", "n": "4"}, {"code": None}, "loose"],
        "deep": [{"x": [{"y": "1.5"}, {"y": None}, 3]}, {"x": "no"}],
    }
    one_pass = compile_rules(rules, frozenset())
    assert one_pass is not None
    assert one_pass(payload) == normalise(payload, rules, frozenset())


def test_rules_without_trim_on_nested_paths_are_left_to_the_general_way() -> None:
    rules = TypeRules.from_json({"trim": False, "numbers": ["items[].n"]})
    assert compile_rules(rules, frozenset({"items"})) is None
    assert compile_rules(TypeRules.from_json({"trim": False}), frozenset()) is not None


def test_the_check_accepts_nothing_fastjsonschema_refuses() -> None:
    schema = {
        "type": "object",
        "required": ["n"],
        "properties": {
            "n": {"type": "integer", "minimum": 1, "exclusiveMaximum": 10},
            "s": {"type": "string", "pattern": "^[A-Z]+$", "minLength": 2},
            "e": {"type": "string", "format": "email"},
            "l": {"type": "array", "maxItems": 2, "items": {"type": "number"}},
        },
        "additionalProperties": False,
    }
    check = compile_check(schema)
    full = fastjsonschema.compile(schema)
    assert check is not None
    cases: list[Any] = [
        {"n": 1},
        {"n": 1.0},  # an integer to fastjsonschema; the check leaves it to it
        {"n": True},
        {"n": 10},
        {"n": 0},
        {"s": "AB", "n": 2},
        {"s": "AB\n", "n": 2},  # "$" is the very end, as fastjsonschema reads it
        {"s": "A", "n": 2},
        {"e": "a@b.co", "n": 2},
        {"e": "a@b", "n": 2},
        {"l": [1, 2.5], "n": 2},
        {"l": [1, 2, 3], "n": 2},
        {"l": ["1"], "n": 2},
        {"n": 2, "x": 1},
        {},
        [],
    ]
    for data in cases:
        try:
            full(data)
            valid = True
        except fastjsonschema.JsonSchemaValueException:
            valid = False
        if check(data):
            assert valid, data
    assert [check(d) for d in ({"n": 1}, {"s": "AB", "n": 2}, {"l": [1, 2.5], "n": 2})] == [
        True,
        True,
        True,
    ]


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string", "default": "x"}}},
        {"type": "object", "properties": {"a": {"type": ["string", "null"]}}},
        {"type": "object", "properties": {"a": {"enum": ["x"]}}},
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"},
        {"type": "object", "properties": {"a": {"type": "integer", "minLength": 1}}},
        {"type": "object", "properties": {"a": {"type": "number", "maximum": float("inf")}}},
    ],
)
def test_a_schema_the_check_does_not_know_is_left_to_fastjsonschema(
    schema: dict[str, Any],
) -> None:
    assert compile_check(schema) is None
