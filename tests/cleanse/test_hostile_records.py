"""A record that makes normalisation or validation fail in any way costs that record only
(issue 24): it is quarantined with the exception named, and the rest of its chunk goes on."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
from support.events import run_batch, sqs_event

from chalicelib import normalise
from chalicelib.service import Cleanser
from sluice import aws
from sluice.config import ResourceNames
from sluice.envelope import Chunk
from sluice.errors import ConfigError
from sluice.quarantine import record_key
from sluice.stage import StageRuntime

Drain = Callable[[], list[dict[str, Any]]]


def reason_of(names: ResourceNames, chunk: Chunk, index: int) -> str:
    record = chunk.records[index]
    key = record_key("cleanse", chunk.type, record.ingested_at, record.id)
    body = aws.s3().get_object(Bucket=names.quarantine_bucket, Key=key)["Body"].read()
    return str(json.loads(body)["reason"])


def sent_order_ids(clean_messages: Drain) -> list[str]:
    return [
        r.payload["order_id"]
        for m in clean_messages()
        for r in sorted(Chunk.decode(m["Body"]).records, key=lambda r: r.ordinal)
    ]


def test_a_record_nested_deeper_than_normalisation_can_recurse_is_quarantined_alone(
    platform: ResourceNames, clean_messages: Drain, make_chunk: Any, order: Any
) -> None:
    # Deep enough for trimming (a frame and a comprehension per level) to pass the recursion
    # limit, shallow enough for the envelope's JSON to carry it.
    value: Any = "x"
    for _ in range(sys.getrecursionlimit() * 7 // 10):
        value = [value]
    chunk = make_chunk([order(), order(order_id="o-deep", notes=value), order(order_id="o-3")])

    response = run_batch(Cleanser(StageRuntime(name="cleanse")), sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    assert sent_order_ids(clean_messages) == ["o-1", "o-3"]
    assert reason_of(platform, chunk, 1).startswith(
        "could not cleanse the record (RecursionError: "
    )


def test_a_rule_that_raises_on_one_value_quarantines_that_record_and_names_the_exception(
    platform: ResourceNames,
    clean_messages: Drain,
    make_chunk: Any,
    order: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = normalise.parse_timestamp

    def fragile(value: Any, field: str) -> str:
        if value == "2026-11-27T10:00:00Z":
            raise TypeError("a rule bug")
        return real(value, field)

    monkeypatch.setattr(normalise, "parse_timestamp", fragile)
    chunk = make_chunk(
        [order(), order(order_id="o-odd", created_at="2026-11-27T10:00:00Z"), order(order_id="o-3")]
    )

    response = run_batch(Cleanser(StageRuntime(name="cleanse")), sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    assert sent_order_ids(clean_messages) == ["o-1", "o-3"]
    assert reason_of(platform, chunk, 1) == "could not cleanse the record (TypeError: a rule bug)"


def test_a_validator_that_crashes_on_one_record_quarantines_that_record_only(
    platform: ResourceNames,
    clean_messages: Drain,
    make_chunk: Any,
    order: Any,
) -> None:
    cleanser = Cleanser(StageRuntime(name="cleanse"))
    order_type = cleanser.catalogue.get("order")
    assert order_type is not None
    real = order_type.validator

    def fragile(data: Any) -> Any:
        if data["order_id"] == "o-odd":
            raise KeyError("a validator bug")
        return real(data)

    order_type._validator = fragile
    order_type._compile_one_pass()
    order_type._rest_check = None  # no compiled check: each record goes to the validator
    chunk = make_chunk([order(), order(order_id="o-odd"), order(order_id="o-3")])

    response = run_batch(cleanser, sqs_event(chunk))

    assert response == {"batchItemFailures": []}
    assert sent_order_ids(clean_messages) == ["o-1", "o-3"]
    assert reason_of(platform, chunk, 1) == (
        "could not cleanse the record (KeyError: 'a validator bug')"
    )


def test_a_deploy_fault_while_cleansing_still_retries_the_chunk_instead_of_quarantining(
    platform: ResourceNames,
    clean_messages: Drain,
    make_chunk: Any,
    order: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(value: Any, field: str) -> str:
        raise ConfigError("rules.json: timestamps must be a list of field paths")

    monkeypatch.setattr(normalise, "parse_timestamp", broken)
    chunk = make_chunk([order(), order(order_id="o-2")])
    event = sqs_event(chunk)

    response = run_batch(Cleanser(StageRuntime(name="cleanse")), event)

    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert clean_messages() == []
    listed = aws.s3().list_objects_v2(Bucket=platform.quarantine_bucket)
    assert listed.get("KeyCount", 0) == 0
