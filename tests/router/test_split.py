"""Splitting a routed chunk into one chunk per group of equal routing attributes (pure).

The split runs on the tests' own routing document (conftest.TEST_ROUTING: priority and
region, so a chunk has several groups); the last test is about the shipped routing.json.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.rules import RoutingRules, load_rules
from chalicelib.service import (
    canonical_attributes,
    group_chunk_id,
    message_size,
    split_by_attributes,
)
from sluice.config import SNS_MAX_MESSAGE_BYTES
from sluice.envelope import Chunk, ChunkLimits, Record, derive_chunk_id

AMOUNTS_AND_CURRENCIES = [
    (5000, "EUR"),  # high, eu
    (10, "EUR"),  # normal, eu
    (20, "USD"),  # normal, americas
    (2000, "EUR"),  # high, eu
    (30, "EUR"),  # normal, eu
    (1500, "JPY"),  # high, apac
]


def _routed(chunk: Chunk, rules: RoutingRules) -> list[tuple[Record, dict[str, str]]]:
    return [(r, rules.attributes_for(chunk.type, r.payload)) for r in chunk.records]


def _mixed(make_chunk: Callable[..., Chunk], order: Callable[..., dict[str, Any]]) -> Chunk:
    return make_chunk([order(amount=a, currency=c) for a, c in AMOUNTS_AND_CURRENCIES])


def test_mixed_chunk_splits_into_one_chunk_per_distinct_set_of_attributes(
    routing_rules: RoutingRules, make_chunk: Any, order: Any
) -> None:
    chunk = _mixed(make_chunk, order)
    groups = split_by_attributes(chunk, _routed(chunk, routing_rules))
    assert [dict(g.attributes) for g in groups] == [
        {"priority": "high", "region": "eu"},
        {"priority": "normal", "region": "eu"},
        {"priority": "normal", "region": "americas"},
        {"priority": "high", "region": "apac"},
    ]
    assert [[r.ordinal for r in g.records] for g in groups] == [[0, 3], [1, 4], [2], [5]]


def test_every_record_lands_in_exactly_one_group(
    routing_rules: RoutingRules, make_chunk: Any, order: Any
) -> None:
    chunk = _mixed(make_chunk, order)
    groups = split_by_attributes(chunk, _routed(chunk, routing_rules))
    ids = [r.id for g in groups for r in g.records]
    assert sorted(ids) == sorted(r.id for r in chunk.records)
    assert len(ids) == len(set(ids))


def test_groups_keep_the_chunks_type_source_and_correlation_id(
    routing_rules: RoutingRules, make_chunk: Any, order: Any
) -> None:
    chunk = _mixed(make_chunk, order)
    for group in split_by_attributes(chunk, _routed(chunk, routing_rules)):
        assert (group.type, group.source, group.correlation_id) == (
            chunk.type,
            chunk.source,
            chunk.correlation_id,
        )


def test_group_ids_are_derived_from_the_input_chunk_and_canonical_attributes(
    routing_rules: RoutingRules, make_chunk: Any, order: Any
) -> None:
    chunk = _mixed(make_chunk, order)
    groups = split_by_attributes(chunk, _routed(chunk, routing_rules))
    for group in groups:
        canonical = canonical_attributes(group.attributes)
        assert group.chunk_id == derive_chunk_id(chunk.chunk_id, "router", canonical)
    assert len({g.chunk_id for g in groups}) == len(groups)
    assert chunk.chunk_id not in {g.chunk_id for g in groups}


def test_splitting_again_gives_the_same_ids(
    routing_rules: RoutingRules, make_chunk: Any, order: Any
) -> None:
    chunk = _mixed(make_chunk, order)
    first = [g.chunk_id for g in split_by_attributes(chunk, _routed(chunk, routing_rules))]
    again = [g.chunk_id for g in split_by_attributes(chunk, _routed(chunk, routing_rules))]
    assert first == again


def test_group_id_does_not_depend_on_attribute_order() -> None:
    a = group_chunk_id("c-parent", {"priority": "high", "region": "eu"})
    b = group_chunk_id("c-parent", {"region": "eu", "priority": "high"})
    assert a == b
    assert a != group_chunk_id("c-other-parent", {"priority": "high", "region": "eu"})
    assert a != group_chunk_id("c-parent", {"priority": "high", "region": "apac"})


def test_uniform_chunk_becomes_one_chunk_with_a_new_id(
    routing_rules: RoutingRules, make_chunk: Any, order: Any
) -> None:
    chunk = make_chunk([order(amount=1, currency="EUR"), order(amount=2, currency="EUR")])
    [group] = split_by_attributes(chunk, _routed(chunk, routing_rules))
    assert group.records == chunk.records
    assert group.chunk_id != chunk.chunk_id


def test_records_without_routing_attributes_form_one_group(
    routing_rules: RoutingRules, make_chunk: Any
) -> None:
    chunk = make_chunk([{"n": 1}, {"n": 2}], record_type="invoice")
    [group] = split_by_attributes(chunk, _routed(chunk, routing_rules))
    assert dict(group.attributes) == {}
    assert len(group.records) == 2


def test_empty_routing_gives_no_chunks(make_chunk: Any, order: Any) -> None:
    assert split_by_attributes(make_chunk([order()]), []) == []


def test_group_too_large_for_sns_is_repacked_into_parts_that_fit(
    routing_rules: RoutingRules, make_chunk: Any, order: Any
) -> None:
    # 40 high-priority orders of ~10 KB each: one group of ~400 KB, more than SNS takes.
    chunk = make_chunk([order(amount=5000, note="x" * 10_000) for _ in range(40)])
    limits = ChunkLimits(max_records=200, max_bytes=100_000)
    parts = split_by_attributes(chunk, _routed(chunk, routing_rules), limits=limits)
    assert len(parts) > 1
    assert all(message_size(p) <= SNS_MAX_MESSAGE_BYTES for p in parts)
    assert all(p.encoded_size() <= limits.max_bytes for p in parts)
    assert [r.id for p in parts for r in p.records] == [r.id for r in chunk.records]
    assert len({p.chunk_id for p in parts}) == len(parts)
    again = split_by_attributes(chunk, _routed(chunk, routing_rules), limits=limits)
    assert [p.chunk_id for p in again] == [p.chunk_id for p in parts]
    assert all(dict(p.attributes) == {"priority": "high", "region": "eu"} for p in parts)


def test_with_the_shipped_routing_json_a_chunk_splits_by_priority_only(
    make_chunk: Any, order: Any
) -> None:
    chunk = _mixed(make_chunk, order)
    groups = split_by_attributes(chunk, _routed(chunk, load_rules()))
    assert [dict(g.attributes) for g in groups] == [{"priority": "high"}, {"priority": "normal"}]
    assert [[r.ordinal for r in g.records] for g in groups] == [[0, 3, 5], [1, 2, 4]]
