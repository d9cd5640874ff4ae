"""Routing from a payload's JSON reads only the fields its rules name (`attributes_for_json`),
and must route every record as routing the decoded payload does (`attributes_for`), whatever
the fields are called and whatever else the payload holds."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.rules import RoutingRules
from sluice import jsonx
from sluice.errors import PermanentError

# Field names that are not Python names, or that a generated reader could confuse with its
# own attributes; several rules on one field; a nested path; every operator.
DOC: dict[str, Any] = {
    "attributes": {
        "priority": {"values": ["high", "normal"]},
        "region": {"values": ["eu", "other"]},
        "kind": {"values": ["a", "b", "none"]},
        "size": {"values": ["big", "small"]},
    },
    "types": {
        "thing": {
            "priority": {
                "field": "order-amount",
                "cases": [{"gt": 1000, "value": "high"}],
                "default": "normal",
            },
            "region": {
                "field": "f0",
                "cases": [{"in": ["EUR", "GBP"], "value": "eu"}],
                "default": "other",
                "if_missing": "other",
            },
            "kind": {
                "field": "class.name",
                "cases": [{"eq": "a", "value": "a"}, {"eq": 2, "value": "b"}],
                "default": "none",
                "if_missing": "none",
            },
            "size": {
                "field": "order-amount",
                "cases": [{"gte": 100, "value": "big"}],
                "default": "small",
            },
        }
    },
}


@pytest.fixture(scope="module")
def rules() -> RoutingRules:
    return RoutingRules.from_document(DOC)


def _both_ways(rules: RoutingRules, text: bytes) -> list[Any]:
    """What routing the JSON and routing the decoded payload give: attributes or the refusal."""
    outcomes: list[Any] = []
    for route, payload in (
        (rules.attributes_for_json, text),
        (rules.attributes_for, jsonx.loads(text)),
    ):
        try:
            outcomes.append(route("thing", payload))
        except PermanentError as error:
            outcomes.append(("refused", str(error)))
    return outcomes


@pytest.mark.parametrize(
    "text",
    [
        b'{"order-amount": 5000, "f0": "EUR", "class": {"name": "a"}}',
        b'{"class": {"name": 2}, "order-amount": 150.5, "f0": "USD", "f1": "EUR"}',
        b'{"order-amount": 10, "other": {"deep": [1, 2, {"x": "y"}]}, "f0": null}',
        b'{"order-amount": 10, "class": "not an object"}',
        b'{"order-amount": 10, "class": {"name": null}}',
        b'{"order-amount": 2000, "order-amount": 10}',  # a repeated name: the last one counts
        b'{"order-amount": true}',  # not a number
        b'{"order-amount": "1200"}',  # a string is not a number either
        b'{"f0": "EUR"}',  # no amount, which has no if_missing
        b'{"order-amount": null}',
        b'{"Order-Amount": 5000}',  # names are case-sensitive
        b'{"order-amount": 12345678901234567890123, "f0": "GBP"}',
        b"{}",
        b"[1, 2]",
        b'"a string"',
        b"null",
    ],
)
def test_routing_from_json_agrees_with_routing_the_decoded_payload(
    rules: RoutingRules, text: bytes
) -> None:
    via_json, via_payload = _both_ways(rules, text)
    assert via_json == via_payload


def test_the_fields_read_route_the_record(rules: RoutingRules) -> None:
    text = b'{"f0": "GBP", "order-amount": 100, "class": {"name": "a"}, "x": 1}'
    assert rules.attributes_for_json("thing", text) == {
        "priority": "normal",
        "region": "eu",
        "kind": "a",
        "size": "big",
    }


@pytest.mark.parametrize("text", [b'{"order-amount": 1', b'{"order-amount": 1, "x": [1,}', b""])
def test_a_payload_that_is_not_json_is_refused_as_not_json(
    rules: RoutingRules, text: bytes
) -> None:
    with pytest.raises(PermanentError, match="payload is not JSON"):
        rules.attributes_for_json("thing", text)


def test_a_payload_that_is_not_an_object_is_refused_as_such(rules: RoutingRules) -> None:
    with pytest.raises(PermanentError, match="not a JSON object"):
        rules.attributes_for_json("thing", b"[1]")


def test_a_type_without_rules_gets_no_attributes_whatever_its_payload(
    rules: RoutingRules,
) -> None:
    assert rules.attributes_for_json("other", b"not even json") == {}
