"""Each declarative normalisation rule, on plain dicts (no AWS, no schema)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.normalise import TypeRules, normalise, parse_number, parse_timestamp
from sluice.errors import ConfigError, PermanentError

KNOWN = frozenset({"id", "email", "name", "amount", "at", "items", "tags", "currency"})


def rules(**kwargs: Any) -> TypeRules:
    return TypeRules.from_json(kwargs)


def test_trim_strips_every_string_including_nested_ones() -> None:
    out = normalise(
        {"name": "  Zoë \t", "items": [{"sku": " A "}], "tags": [" x "]}, rules(), KNOWN
    )
    assert out == {"name": "Zoë", "items": [{"sku": "A"}], "tags": ["x"]}


def test_trim_false_keeps_whitespace() -> None:
    assert normalise({"name": " a "}, rules(trim=False), KNOWN) == {"name": " a "}


def test_blank_is_missing_drops_empty_strings_after_trimming() -> None:
    out = normalise({"name": "   ", "email": "a@b.c"}, rules(blank_is_missing=True), KNOWN)
    assert out == {"email": "a@b.c"}


def test_lowercase_and_uppercase_apply_to_the_named_fields_only() -> None:
    out = normalise(
        {"email": " Ada@Example.COM ", "currency": "eur", "name": "Ada"},
        rules(lowercase=["email"], uppercase=["currency"]),
        KNOWN,
    )
    assert out == {"email": "ada@example.com", "currency": "EUR", "name": "Ada"}


def test_unknown_fields_are_dropped_when_the_type_says_drop() -> None:
    out = normalise({"id": "1", "coupon": "X"}, rules(unknown_fields="drop"), KNOWN)
    assert out == {"id": "1"}


def test_unknown_fields_are_kept_when_the_type_says_keep() -> None:
    out = normalise({"id": "1", "coupon": "X"}, rules(unknown_fields="keep"), KNOWN)
    assert out == {"id": "1", "coupon": "X"}


def test_normalise_never_changes_the_input_payload() -> None:
    payload = {"email": " A@B.C ", "items": [{"quantity": "2"}], "extra": 1}
    before = json.dumps(payload)
    normalise(payload, rules(lowercase=["email"], numbers=["items[].quantity"]), KNOWN)
    assert json.dumps(payload) == before


def test_a_payload_that_is_not_an_object_is_permanent() -> None:
    with pytest.raises(PermanentError, match="JSON array, not an object"):
        normalise([1, 2], rules(), KNOWN)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12.50", 12.5),
        ("42", 42),
        ("-3", -3),
        ("1e3", 1000.0),
        ("1.5E3", 1500.0),
        (".5", 0.5),
        (7, 7),
        (7.25, 7.25),
    ],
)
def test_numbers_are_parsed_from_strings(raw: Any, expected: Any) -> None:
    out = parse_number(raw, "amount")
    assert out == expected
    assert type(out) is type(expected)


@pytest.mark.parametrize(
    "raw", ["NaN", "nan", "Infinity", "-inf", "12,50", "1_000", "0x1F", "12 EUR", "", "1e999"]
)
def test_numbers_that_are_not_finite_decimals_are_permanent_errors(raw: str) -> None:
    with pytest.raises(PermanentError, match="field 'amount'"):
        parse_number(raw, "amount")


def test_a_non_finite_json_number_is_a_permanent_error() -> None:
    payload = json.loads('{"amount": NaN}')  # Python's json accepts NaN and Infinity
    with pytest.raises(PermanentError, match="not a finite number"):
        normalise(payload, rules(numbers=["amount"]), KNOWN)


def test_numbers_leave_booleans_and_nulls_for_the_schema_to_refuse() -> None:
    out = normalise({"amount": True, "id": None}, rules(numbers=["amount", "id"]), KNOWN)
    assert out == {"amount": True, "id": None}


def test_list_paths_convert_every_item_and_name_the_index_in_errors() -> None:
    r = rules(numbers=["items[].quantity"])
    out = normalise({"items": [{"quantity": "2"}, {"quantity": 3}, {"sku": "x"}]}, r, KNOWN)
    assert out["items"] == [{"quantity": 2}, {"quantity": 3}, {"sku": "x"}]
    with pytest.raises(PermanentError, match=r"field 'items\[1\].quantity'"):
        normalise({"items": [{"quantity": "2"}, {"quantity": "two"}]}, r, KNOWN)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-27T08:15:00Z", "2026-11-27T08:15:00.000Z"),
        ("2026-11-27T09:30:00+02:00", "2026-11-27T07:30:00.000Z"),
        ("2026-11-27T22:00:00-03:00", "2026-11-28T01:00:00.000Z"),
        ("2026-11-27T10:00:00.123456-05:00", "2026-11-27T15:00:00.123Z"),
        ("2026-11-27 11:45:10", "2026-11-27T11:45:10.000Z"),  # naive: taken as UTC
        ("2026-11-27T11:45", "2026-11-27T11:45:00.000Z"),
        ("20261127T100000Z", "2026-11-27T10:00:00.000Z"),
        (1795759200, "2026-11-27T06:00:00.000Z"),  # epoch seconds
        (1795759200.25, "2026-11-27T06:00:00.250Z"),
        ("1795761000", "2026-11-27T06:30:00.000Z"),  # epoch seconds as a string (CSV)
    ],
)
def test_timestamps_become_utc_with_milliseconds_and_z(raw: Any, expected: str) -> None:
    assert parse_timestamp(raw, "created_at") == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("yesterday", "cannot parse timestamp 'yesterday'"),
        ("31/12/2026", "cannot parse timestamp"),
        ("2026-11-27", "has no time of day"),
        ("2026-13-01T00:00:00Z", "cannot parse timestamp"),
        (1795759200000, "cannot parse timestamp"),  # milliseconds: year 58000, refused
        (True, "cannot be a JSON boolean"),
        ({"at": 1}, "cannot be a JSON object"),
    ],
)
def test_unparseable_timestamps_are_permanent_errors_naming_the_field(
    raw: Any, reason: str
) -> None:
    with pytest.raises(PermanentError, match="field 'created_at'") as caught:
        parse_timestamp(raw, "created_at")
    assert reason in caught.value.reason


def test_rules_apply_numbers_before_timestamps_and_after_trimming() -> None:
    r = rules(numbers=["amount"], timestamps=["at"])
    out = normalise({"amount": " 42.10 ", "at": " 2026-11-27T00:00:00+01:00 "}, r, KNOWN)
    assert out == {"amount": 42.1, "at": "2026-11-26T23:00:00.000Z"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"lowercase": "email"}, "lowercase must be a list"),
        ({"unknown_fields": "reject"}, "unknown_fields must be"),
        ({"trim": "yes"}, "trim must be true or false"),
        ({"numbers": ["amount"], "coerce": True}, "unknown rule"),
        ({"natural_key": ""}, "natural_key"),
        ([], "not a JSON object"),
    ],
)
def test_a_malformed_rules_file_is_a_config_error(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TypeRules.from_json(raw)
