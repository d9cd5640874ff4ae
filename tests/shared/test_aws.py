"""The shared clients and BatchWriteItem helper."""

from __future__ import annotations

from typing import Any

import pytest

from sluice import aws
from sluice.config import ResourceNames


class Unprocessed:
    """A DynamoDB client that leaves the last item of each call unprocessed, `rounds` times."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.calls: list[int] = []

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:
        (table, requests), *_ = RequestItems.items()
        self.calls.append(len(requests))
        if self.rounds:
            self.rounds -= 1
            return {"UnprocessedItems": {table: requests[-1:]}}
        return {"UnprocessedItems": {}}


def puts(n: int) -> list[dict[str, Any]]:
    return [{"PutRequest": {"Item": {"pk": {"S": f"k-{i}"}}}} for i in range(n)]


def test_batch_write_sends_25_a_call_and_retries_what_was_left_unprocessed() -> None:
    client, slept = Unprocessed(rounds=1), list[float]()

    aws.batch_write(client, "t", puts(30), sleep=slept.append)  # type: ignore[arg-type]

    assert client.calls == [25, 1, 5]
    assert slept == [0.05]


def test_batch_write_gives_up_after_its_attempts_with_a_transient_error() -> None:
    client = Unprocessed(rounds=99)

    with pytest.raises(aws.UnprocessedItemsError, match="1 item"):
        aws.batch_write(client, "t", puts(3), max_attempts=3, sleep=lambda _s: None)  # type: ignore[arg-type]
    assert client.calls == [3, 1, 1]


def test_a_malformed_request_is_refused_by_the_service_not_by_client_side_validation(
    platform: ResourceNames,
) -> None:
    # Validation is off (it cost more than building the request): the service refuses.
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        aws.dynamodb().put_item(
            TableName=platform.idempotency_table,
            Item={"pk": {"S": "k"}, "n": {"N": 5}},  # botocore's validation wants "5"
        )
    assert refused.value.response["Error"]["Code"] in {
        "ValidationException",
        "SerializationException",
    }


def test_batch_write_sends_the_json_botocore_would_and_the_items_read_back_the_same(
    platform: ResourceNames,
) -> None:
    """BatchWriteItem's body is written with msgspec, not botocore's serializer: the same
    JSON, every attribute type kept."""
    import json

    client: Any = aws.dynamodb()
    item = {
        "pk": {"S": "order#é-1"},
        "sk": {"S": "v#1"},
        "b": {"B": b"\x00\x01\xffzlib"},
        "n": {"N": "12.50"},
        "m": {"M": {"l": {"L": [{"S": "x"}, {"N": "-1"}, {"BOOL": True}, {"NULL": True}]}}},
        "ss": {"SS": ["a", "b"]},
    }
    sent: list[bytes] = []

    def capture(request: Any, **_: Any) -> None:
        sent.append(request.body)  # as signed and sent

    client.meta.events.register("before-send.dynamodb.BatchWriteItem", capture)
    serialized: list[Any] = []
    real = client._serializer.serialize_to_request

    def serialize(parameters: Any, operation_model: Any) -> Any:
        if "RequestItems" in parameters:
            serialized.append(parameters["RequestItems"][platform.idempotency_table])
        return real(parameters, operation_model)

    client._serializer.serialize_to_request = serialize
    aws.batch_write(client, platform.idempotency_table, [{"PutRequest": {"Item": item}}])
    aws.batch_write(client, platform.idempotency_table, [{"PutRequest": {"Item": item}}])
    client.meta.events.unregister("before-send.dynamodb.BatchWriteItem", capture)
    # What botocore makes of the same call, through its own serializer.
    plain = aws._make_client("dynamodb", "us-east-1", None)
    serializer = plain._serializer
    model = plain.meta.service_model.operation_model("BatchWriteItem")
    request = serializer.serialize_to_request(
        {"RequestItems": {platform.idempotency_table: [{"PutRequest": {"Item": item}}]}}, model
    )
    assert [json.loads(body) for body in sent] == [json.loads(request["body"])] * 2
    assert serialized == [[], []]  # botocore's serializer never walked the items
    got = client.get_item(TableName=platform.idempotency_table, Key={"pk": {"S": "order#é-1"}})[
        "Item"
    ]
    assert got == item
