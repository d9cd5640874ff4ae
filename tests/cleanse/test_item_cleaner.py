"""Lists of objects cleaned and checked in one generated loop (`item_cleaner`): a type whose
rules reach into the items of a list gets, for every payload, good or bad, what normalising
then fastjsonschema give: the same data or the same reason."""

from __future__ import annotations

import copy
import random
from typing import Any

import fastjsonschema
import pytest

from chalicelib import catalogue
from chalicelib.catalogue import RecordType, item_cleaner
from chalicelib.normalise import TypeRules, _fast_number, _lower, normalise
from sluice.errors import PermanentError

SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["id", "lines"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "lines": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["code", "qty", "when"],
                "properties": {
                    "code": {"type": "string", "pattern": "^[a-z]+$"},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                    "price": {"type": "number", "exclusiveMinimum": 0},
                    "when": {"type": "string", "maxLength": 24},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "notes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"by": {"type": "string"}},
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
RULES = TypeRules.from_json(
    {
        "lowercase": ["lines[].code", "notes[].by"],
        "numbers": ["lines[].qty", "lines[].price"],
        "timestamps": ["lines[].when"],
        "blank_is_missing": True,
    }
)
GOOD_LINE: dict[str, Any] = {
    "code": " AbC ",
    "qty": "3",
    "price": 2.5,
    "when": "2026-11-27T10:00:00Z",
    "tags": [" x "],
}


def both_ways(record_type: RecordType, payload: Any) -> tuple[Any, Any]:
    """(what the type's cleanse gives, what normalise then fastjsonschema give): each is
    ("ok", data) or ("error", reason)."""
    outcomes: list[Any] = []
    full = fastjsonschema.compile(dict(record_type.schema))

    def general(payload: Any) -> Any:
        data = normalise(payload, record_type.rules, record_type.known_fields)
        try:
            full(data)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise PermanentError(f"invalid {record_type.name}: {exc.message}") from None
        return data

    for way in (record_type.cleanse, general):
        try:
            outcomes.append(("ok", way(payload)))
        except PermanentError as error:
            outcomes.append(("error", error.reason))
    return outcomes[0], outcomes[1]


def doc(*lines: Any, **more: Any) -> dict[str, Any]:
    return {"id": "t-1", "lines": list(lines), **more}


PAYLOADS: list[Any] = [
    doc(GOOD_LINE),
    doc(GOOD_LINE, {**GOOD_LINE, "qty": 7, "price": "0.25", "when": 1796428800}),
    doc({"code": "abc", "qty": 1, "when": "2026-11-27T10:00:00.000Z"}),  # no price: optional
    doc({**GOOD_LINE, "qty": "0"}),  # under the minimum
    doc({**GOOD_LINE, "qty": 100}),
    doc({**GOOD_LINE, "qty": 2.0}),
    doc({**GOOD_LINE, "qty": True}),
    doc({**GOOD_LINE, "qty": "x"}),  # not a number: the rule's reason
    doc({**GOOD_LINE, "price": 0}),  # exclusive minimum
    doc({**GOOD_LINE, "price": None}),
    doc({**GOOD_LINE, "code": "A1"}),
    doc({**GOOD_LINE, "code": 5}),
    doc({**GOOD_LINE, "when": "yesterday"}),
    doc({**GOOD_LINE, "when": None}),
    doc({**GOOD_LINE, "tags": [" a ", 1]}),
    doc({**GOOD_LINE, "extra": " kept "}),  # items may have other fields here
    doc({k: v for k, v in GOOD_LINE.items() if k != "when"}),
    doc(" not an object "),
    doc(None),
    doc(),  # minItems
    doc(GOOD_LINE, notes=[{"by": " ADA "}]),
    doc(GOOD_LINE, notes=[{"by": "ada", "at": 1}]),  # additionalProperties: false
    doc(GOOD_LINE, notes=[]),
    {"id": "t-1", "lines": "none"},
    {"id": "t-1"},
]


@pytest.fixture(scope="module")
def record_type() -> RecordType:
    return RecordType("line", SCHEMA, RULES)


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_payloads_give_what_the_general_way_gives(record_type: RecordType, payload: Any) -> None:
    before = copy.deepcopy(payload)
    got, want = both_ways(record_type, payload)
    assert got == want
    assert payload == before  # the input is never changed


def test_random_changes_to_the_items_give_what_the_general_way_gives(
    record_type: RecordType,
) -> None:
    rng = random.Random(20261205)
    bag: list[Any] = [
        None, "", " ", "12", " 3.5 ", "-2", "x", "ABC", 0, 1, 99, 1.5, True, [], {}, [" a "],
        "2026-11-27T10:00:00Z", "2026-11-27", 1796428800,
    ]  # fmt: skip
    outcomes = set()
    for _ in range(300):
        payload = doc(*(dict(GOOD_LINE) for _ in range(rng.randrange(1, 4))))
        for _ in range(rng.randrange(1, 3)):
            line = rng.choice(payload["lines"])
            line[rng.choice([*GOOD_LINE, "other"])] = rng.choice(bag)
        got, want = both_ways(record_type, payload)
        assert got == want, payload
        outcomes.add(got[0])
    assert outcomes == {"ok", "error"}


def test_the_items_are_checked_in_the_cleaning_loop_not_again(
    record_type: RecordType, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    real = catalogue.item_cleaner

    def spy(leaves: Any, schema: Any) -> Any:
        cleaner = real(leaves, schema)
        made.append("cleaner" if cleaner else "none")
        return cleaner

    monkeypatch.setattr(catalogue, "item_cleaner", spy)
    fresh = RecordType("line", SCHEMA, RULES)
    got, want = both_ways(fresh, PAYLOADS[0])
    assert got == want
    assert made == ["cleaner", "cleaner"]  # lines and notes
    # What is left to check of `lines` is that it is a list of at least one item.
    assert fresh._rest_check is not None
    assert fresh._rest_check({"id": "t-1", "lines": [{"anything": 1}]})
    assert not fresh._rest_check({"id": "t-1", "lines": []})


def test_an_item_schema_beyond_the_compiled_check_leaves_the_items_to_the_general_loop() -> None:
    unknown_keyword = {"type": "object", "properties": {"n": {"type": "integer"}}, "anyOf": []}
    assert item_cleaner((("n", _fast_number),), unknown_keyword) is None
    known = {"type": "object", "properties": {"n": {"type": "string"}}}
    cleaner = item_cleaner((("n", _lower),), known)
    assert cleaner is not None
    assert cleaner([{"n": " AB ", "m": [" c "]}]) == [{"n": "ab", "m": ["c"]}]
