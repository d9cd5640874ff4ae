"""The routing rule engine (pure) and the validation of routing.json."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from chalicelib.rules import (
    ROUTING_FILE,
    RoutingConfigError,
    RoutingRules,
    declared_attributes,
    load_rules,
    parse_rules,
)
from sluice.errors import ConfigError, PermanentError
from sluice.registry import load_registry


@pytest.fixture
def rules(routing_rules: RoutingRules) -> RoutingRules:
    """The engine's cases run on the tests' own routing document (conftest.TEST_ROUTING:
    priority and region); tests of the shipped routing.json say so."""
    return routing_rules


@pytest.fixture
def shipped() -> RoutingRules:
    return load_rules()


def _minimal() -> dict[str, Any]:
    return {
        "attributes": {"priority": {"values": ["high", "normal"]}},
        "types": {
            "order": {
                "priority": {
                    "field": "amount",
                    "cases": [{"gt": 1000, "value": "high"}],
                    "default": "normal",
                }
            }
        },
    }


# ---------------------------------------------------------------- orders


@pytest.mark.parametrize(
    ("amount", "priority"), [(1000.01, "high"), (250_000, "high"), (1000, "normal"), (0, "normal")]
)
def test_order_is_high_priority_only_above_1000(
    rules: RoutingRules, order: Any, amount: float, priority: str
) -> None:
    assert rules.attributes_for("order", order(amount=amount))["priority"] == priority


@pytest.mark.parametrize(
    ("currency", "region"),
    [("EUR", "eu"), ("GBP", "eu"), ("USD", "americas"), ("JPY", "apac"), ("ZAR", "other")],
)
def test_order_region_follows_its_currency(
    rules: RoutingRules, order: Any, currency: str, region: str
) -> None:
    assert rules.attributes_for("order", order(currency=currency)) == {
        "priority": "normal",
        "region": region,
    }


def test_order_without_amount_is_rejected_naming_the_field(rules: RoutingRules, order: Any) -> None:
    with pytest.raises(PermanentError, match=r"order record has no 'amount'.*'priority'"):
        rules.attributes_for("order", order(amount=None))


def test_order_with_null_currency_counts_as_missing(rules: RoutingRules, order: Any) -> None:
    payload = order()
    payload["currency"] = None
    with pytest.raises(PermanentError, match="'currency'"):
        rules.attributes_for("order", payload)


@pytest.mark.parametrize("amount", ["1200", True, [1200]])
def test_order_amount_that_is_not_a_number_is_rejected(
    rules: RoutingRules, order: Any, amount: Any
) -> None:
    with pytest.raises(PermanentError, match="not a number"):
        rules.attributes_for("order", order(amount=amount))


# ---------------------------------------------------------------- customers and other types


@pytest.mark.parametrize(
    ("country", "region"), [("DE", "eu"), ("US", "americas"), ("SG", "apac"), ("ZA", "other")]
)
def test_customer_region_follows_its_country(
    rules: RoutingRules, customer: Any, country: str, region: str
) -> None:
    assert rules.attributes_for("customer", customer(country=country)) == {"region": region}


def test_customer_without_country_is_routed_to_region_other(
    rules: RoutingRules, customer: Any
) -> None:
    assert rules.attributes_for("customer", customer(country=None)) == {"region": "other"}


def test_type_without_rules_gets_no_routing_attributes(rules: RoutingRules) -> None:
    assert rules.attributes_for("invoice", {"anything": 1}) == {}


def test_payload_that_is_not_an_object_is_rejected(rules: RoutingRules) -> None:
    with pytest.raises(PermanentError, match="not a JSON object"):
        rules.attributes_for("order", ["amount", 5000])


def test_rule_reads_a_nested_field_by_dotted_path() -> None:
    doc = _minimal()
    doc["types"]["order"]["priority"]["field"] = "totals.gross"
    rules = RoutingRules.from_document(doc)
    assert rules.attributes_for("order", {"totals": {"gross": 5000}}) == {"priority": "high"}
    with pytest.raises(PermanentError, match=r"'totals\.gross'"):
        rules.attributes_for("order", {"totals": 5000})


def test_first_matching_case_wins() -> None:
    doc = _minimal()
    doc["attributes"]["priority"]["values"].append("urgent")
    doc["types"]["order"]["priority"]["cases"] = [
        {"gte": 10_000, "value": "urgent"},
        {"gt": 1000, "value": "high"},
        {"eq": 0, "value": "normal"},
    ]
    rules = RoutingRules.from_document(doc)
    assert [rules.attributes_for("order", {"amount": a})["priority"] for a in (10_000, 5000)] == [
        "urgent",
        "high",
    ]


# ---------------------------------------------------------------- declaration for tools


def test_declared_attributes_lists_each_attribute_with_its_values(routing_file: Path) -> None:
    assert declared_attributes(routing_file) == {
        "priority": ["high", "normal"],
        "region": ["eu", "americas", "apac", "other"],
    }


def test_shipped_routing_json_declares_only_priority() -> None:
    # Every declared attribute multiplies the messages per chunk; only `priority` is read
    # by a consumer's filter policy (alerts).
    assert declared_attributes() == {"priority": ["high", "normal"]}


@pytest.mark.parametrize(("amount", "priority"), [(5000, "high"), (1000, "normal")])
def test_shipped_rules_set_only_priority_on_orders(
    shipped: RoutingRules, order: Any, amount: int, priority: str
) -> None:
    for currency in ("EUR", "USD", "JPY", "ZAR"):
        payload = order(amount=amount, currency=currency)
        assert shipped.attributes_for("order", payload) == {"priority": priority}


def test_shipped_rules_give_customers_no_routing_attributes(
    shipped: RoutingRules, customer: Any
) -> None:
    assert shipped.attributes_for("customer", customer(country="DE")) == {}
    assert shipped.attributes_for("customer", customer(country=None)) == {}


@pytest.mark.parametrize("routing", ["shipped", "test"])
def test_the_new_consumer_tool_reads_the_attributes_the_router_declares(
    routing: str, routing_file: Path, tmp_path: Path
) -> None:
    # The tool reads routing.json as JSON (it never imports an app): it must come to the
    # attributes and values the router itself declares, on the shipped file and on one that
    # declares more (the tests' own, with `region`).
    contract = pytest.importorskip("sluice_tools.scaffold.contract")  # not in app_tests' venv
    source = ROUTING_FILE if routing == "shipped" else routing_file
    repo = tmp_path / "repo"
    (repo / contract.ROUTING_JSON).parent.mkdir(parents=True)
    shutil.copyfile(source, repo / contract.ROUTING_JSON)

    read = contract.declared_attributes(repo)

    routed = {k: v for k, v in read.items() if k not in contract.BASE_ATTRIBUTES}
    assert routed == declared_attributes(source)
    assert declared_attributes(source)  # at least one attribute to compare


def test_every_value_a_shipped_rule_can_set_is_declared(shipped: RoutingRules) -> None:
    declared = declared_attributes()
    for type_rules in shipped.types.values():
        for rule in type_rules:
            produced = {c.value for c in rule.cases} | {rule.default, rule.if_missing} - {None}
            assert produced <= set(declared[rule.attribute])


def test_declared_attributes_of_an_invalid_file_raise_naming_the_file(tmp_path: Path) -> None:
    bad = {k: v for k, v in _minimal().items() if k != "types"}
    bad["attributes"]["priority"]["values"] = []
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(RoutingConfigError, match=str(path)):
        declared_attributes(path)


def test_a_routing_json_still_holding_per_type_rules_is_refused_pointing_at_type_json(
    tmp_path: Path,
) -> None:
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(_minimal()), encoding="utf-8")
    for read in (declared_attributes, load_rules):
        with pytest.raises(RoutingConfigError, match=r"types/<name>/type\.json"):
            read(path)


def test_each_registered_types_routing_comes_from_its_type_json(
    routing_file: Path, routing_registry: Path
) -> None:
    registry = load_registry(routing_registry)
    rules = load_rules(routing_file, routing_registry)
    assert set(rules.types) == {spec.name for spec in registry if spec.routing}
    for spec in registry:
        assert {r.attribute for r in rules.types.get(spec.name, ())} == set(spec.routing)


def test_a_type_json_rule_setting_an_undeclared_attribute_names_the_type_json(
    routing_file: Path, routing_registry: Path
) -> None:
    path = next(routing_registry.glob("*/type.json"))
    declared = json.loads(path.read_text())
    declared["routing"] = {"colour": {"field": "x", "cases": [], "default": "red"}}
    path.write_text(json.dumps(declared))
    with pytest.raises(RoutingConfigError, match=rf"{path}: routing\.colour: sets undeclared"):
        load_rules(routing_file, routing_registry)


# ---------------------------------------------------------------- validation


def _broken(edit: str) -> dict[str, Any]:
    doc = copy.deepcopy(_minimal())
    rule = doc["types"]["order"]["priority"]
    case = rule["cases"][0]
    if edit == "undeclared attribute":
        doc["types"]["order"]["prio"] = doc["types"]["order"].pop("priority")
    elif edit == "undeclared case value":
        case["value"] = "urgent"
    elif edit == "undeclared default":
        rule["default"] = "low"
    elif edit == "undeclared if_missing":
        rule["if_missing"] = "unknown"
    elif edit == "unknown operator":
        case["above"] = case.pop("gt")
    elif edit == "two operators":
        case["lt"] = 5
    elif edit == "case without value":
        del case["value"]
    elif edit == "numeric operator on text":
        case["gt"] = "1000"
    elif edit == "empty in list":
        del case["gt"]
        case["in"] = []
    elif edit == "rule without default":
        del rule["default"]
    elif edit == "rule without field":
        del rule["field"]
    elif edit == "unknown rule key":
        rule["fallback"] = "normal"
    elif edit == "value declared twice":
        doc["attributes"]["priority"]["values"] = ["high", "high", "normal"]
    elif edit == "no values":
        doc["attributes"]["priority"]["values"] = []
    elif edit == "clashes with base attribute":
        doc["attributes"]["record_type"] = {"values": ["x"]}
    elif edit == "reserved name":
        doc["attributes"]["AWS.priority"] = {"values": ["x"]}
    elif edit == "too many attributes":
        doc["attributes"].update({f"a{i}": {"values": ["x"]} for i in range(7)})
    elif edit == "unsupported version":
        doc["version"] = 2
    elif edit == "unknown top-level key":
        doc["routes"] = {}
    return doc


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("undeclared attribute", r"types\.order\.prio: sets undeclared attribute 'prio'"),
        ("undeclared case value", r"cases\[0\]\.value: 'urgent' is not a declared value"),
        ("undeclared default", r"priority\.default: 'low' is not a declared value"),
        ("undeclared if_missing", r"priority\.if_missing: 'unknown' is not a declared value"),
        ("unknown operator", r"cases\[0\]: needs exactly one operator .*found above"),
        ("two operators", r"cases\[0\]: needs exactly one operator .*found gt, lt"),
        ("case without value", r"cases\[0\]: lacks 'value'"),
        ("numeric operator on text", r"cases\[0\]\.gt: '1000' is not a number"),
        ("empty in list", r"cases\[0\]\.in: \[\] is not a non-empty list"),
        ("rule without default", r"types\.order\.priority: lacks 'default'"),
        ("rule without field", r"types\.order\.priority: lacks 'field'"),
        ("unknown rule key", r"types\.order\.priority: unknown key\(s\) fallback"),
        ("value declared twice", r"attributes\.priority\.values: lists a value twice"),
        ("no values", r"attributes\.priority\.values: must be a non-empty list"),
        ("clashes with base attribute", r"attributes\.record_type: clashes with a base"),
        ("reserved name", r"attributes\.AWS\.priority: is not a valid SNS message attribute"),
        ("too many attributes", r"attributes: 8 declared; a message allows 7"),
        ("unsupported version", r"version: 2 is not supported"),
        ("unknown top-level key", r"top level: unknown key\(s\) routes"),
    ],
)
def test_invalid_routing_json_is_refused_with_where_and_why(edit: str, message: str) -> None:
    with pytest.raises(RoutingConfigError, match=message):
        RoutingRules.from_document(_broken(edit))


def test_routing_json_errors_are_config_errors_so_the_chunk_is_retried_not_quarantined() -> None:
    with pytest.raises(ConfigError):
        RoutingRules.from_document(_broken("undeclared attribute"))
    assert not issubclass(RoutingConfigError, PermanentError)


def test_routing_json_that_is_not_json_is_refused() -> None:
    with pytest.raises(RoutingConfigError, match=r"routing\.json: not valid JSON"):
        parse_rules("{ nope")


def test_the_minimal_document_used_above_is_itself_valid() -> None:
    assert RoutingRules.from_document(_minimal()).declared() == {"priority": ["high", "normal"]}


# ------------------------------------------- routing from a payload's JSON (the router's way)


def _outcome(route: Any, *args: Any) -> Any:
    try:
        return route(*args)
    except PermanentError as error:
        return ("refused", str(error))


@pytest.mark.parametrize(
    ("record_type", "payload"),
    [
        ("order", {"amount": 5000, "currency": "EUR", "note": "x" * 300}),
        ("order", {"amount": 10, "currency": "JPY", "items": [{"sku": "a"}]}),
        ("order", {"currency": "EUR"}),  # no amount
        ("order", {"amount": 10, "currency": None}),
        ("order", {"amount": "1200", "currency": "EUR"}),
        ("order", ["amount", 5000]),
        ("order", None),
        ("customer", {"country": "DE"}),
        ("customer", {"name": "no country"}),
        ("invoice", {"anything": 1}),
    ],
)
def test_routing_from_json_agrees_with_routing_from_the_decoded_payload(
    rules: RoutingRules, record_type: str, payload: Any
) -> None:
    text = json.dumps(payload).encode()
    assert _outcome(rules.attributes_for_json, record_type, text) == _outcome(
        rules.attributes_for, record_type, payload
    )


def test_routing_from_json_reads_nested_fields_and_only_decodes_what_it_reads() -> None:
    doc = _minimal()
    doc["types"]["order"]["priority"]["field"] = "totals.gross"
    rules = RoutingRules.from_document(doc)
    text = b'{"totals": {"gross": 5000}, "other": 1e999}'  # `other` alone would not decode
    assert rules.attributes_for_json("order", text) == {"priority": "high"}
    with pytest.raises(PermanentError, match=r"'totals\.gross'"):
        rules.attributes_for_json("order", b'{"totals": 5000}')
