"""The emulator's fixes to moto: TransactWriteItems all or nothing, without losing other writes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sluice_tools.local.emulator import Emulator, client

TABLE = "claims"


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    emulator = Emulator()
    endpoint = emulator.start()
    ddb = client("dynamodb", endpoint)
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield ddb
    emulator.stop()


def put_if_absent(pk: str, status: str = "NEW") -> dict[str, Any]:
    return {
        "Put": {
            "TableName": TABLE,
            "Item": {"pk": {"S": pk}, "status": {"S": status}},
            "ConditionExpression": "attribute_not_exists(pk)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def stored(ddb: Any, pk: str) -> str | None:
    item = ddb.get_item(TableName=TABLE, Key={"pk": {"S": pk}}).get("Item")
    return None if item is None else str(item["status"]["S"])


def test_a_transaction_whose_conditions_hold_writes_every_item(dynamodb: Any) -> None:
    dynamodb.transact_write_items(TransactItems=[put_if_absent("t1-a"), put_if_absent("t1-b")])

    assert (stored(dynamodb, "t1-a"), stored(dynamodb, "t1-b")) == ("NEW", "NEW")


def test_a_failed_condition_cancels_the_whole_transaction_with_a_reason_per_item(
    dynamodb: Any,
) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "t2-old"}, "status": {"S": "DONE"}})

    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(
            TransactItems=[put_if_absent("t2-a"), put_if_absent("t2-old"), put_if_absent("t2-b")]
        )

    reasons = raised.value.response["CancellationReasons"]
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed", "None"]
    assert reasons[1]["Item"] == {"pk": {"S": "t2-old"}, "status": {"S": "DONE"}}
    assert (stored(dynamodb, "t2-a"), stored(dynamodb, "t2-b")) == (None, None)
    assert stored(dynamodb, "t2-old") == "DONE"


def test_an_action_moto_refuses_while_applying_undoes_the_actions_before_it(
    dynamodb: Any,
) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "t3-b"}, "status": {"S": "OLD"}})
    bad_update = {
        "Update": {
            "TableName": TABLE,
            "Key": {"pk": {"S": "t3-b"}},
            "UpdateExpression": "SET #s = :missing",
            "ExpressionAttributeNames": {"#s": "status"},
        }
    }

    with pytest.raises(ClientError):
        dynamodb.transact_write_items(TransactItems=[put_if_absent("t3-a"), bad_update])

    assert (stored(dynamodb, "t3-a"), stored(dynamodb, "t3-b")) == (None, "OLD")


def test_a_repeated_transaction_with_its_client_token_succeeds_without_applying_again(
    dynamodb: Any,
) -> None:
    # The SDK's retry of a call whose answer was lost: same token, same items.
    items = [put_if_absent("tok-a"), put_if_absent("tok-b")]
    dynamodb.transact_write_items(TransactItems=items, ClientRequestToken="tok-1")
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "tok-a"}, "status": {"S": "LATER"}})

    dynamodb.transact_write_items(TransactItems=items, ClientRequestToken="tok-1")

    assert (stored(dynamodb, "tok-a"), stored(dynamodb, "tok-b")) == ("LATER", "NEW")
    with pytest.raises(ClientError) as raised:  # without the token it is a new transaction
        dynamodb.transact_write_items(TransactItems=items)
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"


def test_a_client_token_reused_for_other_items_is_refused(dynamodb: Any) -> None:
    dynamodb.transact_write_items(
        TransactItems=[put_if_absent("tok-c")], ClientRequestToken="tok-2"
    )

    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(
            TransactItems=[put_if_absent("tok-d")], ClientRequestToken="tok-2"
        )

    assert raised.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    assert stored(dynamodb, "tok-d") is None


def test_a_cancelled_transaction_leaves_its_token_free_for_the_retry(dynamodb: Any) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "tok-e"}, "status": {"S": "HELD"}})
    with pytest.raises(ClientError):
        dynamodb.transact_write_items(
            TransactItems=[put_if_absent("tok-e")], ClientRequestToken="tok-3"
        )
    dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": "tok-e"}})

    dynamodb.transact_write_items(
        TransactItems=[put_if_absent("tok-e")], ClientRequestToken="tok-3"
    )

    assert stored(dynamodb, "tok-e") == "NEW"


def test_cancelled_transactions_never_undo_writes_made_meanwhile(dynamodb: Any) -> None:
    for i in range(40):
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": f"t4-held-{i}"}})
    written = [f"t4-w-{i}" for i in range(300)]
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for pk in written:
                dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": pk}, "status": {"S": "W"}})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    codes: list[str] = []
    while not done.is_set():
        try:
            dynamodb.transact_write_items(
                TransactItems=[put_if_absent(f"t4-held-{i}") for i in range(40)]
            )
        except ClientError as exc:
            codes.append(exc.response["Error"]["Code"])
    writer.join()

    assert errors == []
    assert codes
    assert set(codes) == {"TransactionCanceledException"}
    missing = [pk for pk in written if stored(dynamodb, pk) is None]
    assert missing == []


def test_received_messages_still_respect_the_queue_retention_period(dynamodb: Any) -> None:
    from moto.sqs.models import sqs_backends

    from sluice_tools.local.emulator import ACCOUNT_ID, DEFAULT_REGION

    sqs = client("sqs", dynamodb.meta.endpoint_url)
    url = sqs.create_queue(QueueName="retained", Attributes={"MessageRetentionPeriod": "60"})[
        "QueueUrl"
    ]
    sqs.send_message(QueueUrl=url, MessageBody="new")
    sqs.send_message(QueueUrl=url, MessageBody="old")
    queue = sqs_backends[ACCOUNT_ID][DEFAULT_REGION].get_queue("retained")
    old: Any = next(m for m in queue._messages if m.body == "old")
    old.sent_timestamp -= 120_000  # sent two minutes ago: past the 60 s retention

    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])

    assert [m["Body"] for m in got] == ["new"]


def test_queue_counts_and_receives_still_tell_visible_in_flight_and_delayed_apart(
    dynamodb: Any,
) -> None:
    sqs = client("sqs", dynamodb.meta.endpoint_url)
    url = sqs.create_queue(QueueName="counted")["QueueUrl"]
    for body in ("a", "b", "c"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    taken = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=60)

    counts = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    rest = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])

    assert len(taken["Messages"]) == 1
    assert counts == {
        "ApproximateNumberOfMessages": "2",
        "ApproximateNumberOfMessagesNotVisible": "1",
        "ApproximateNumberOfMessagesDelayed": "1",
    }
    assert sorted(m["Body"] for m in rest) == sorted(
        {"a", "b", "c"} - {taken["Messages"][0]["Body"]}
    )


PLAIN_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    (
        "BatchWriteItem",
        {
            "RequestItems": {
                TABLE: [
                    {
                        "PutRequest": {
                            "Item": {
                                "pk": {"S": "order#1"},
                                "n": {"N": "12345678901234567890123"},
                                "tags": {"SS": ["a", "b"]},
                                "nested": {"M": {"l": {"L": [{"BOOL": True}, {"NULL": True}]}}},
                            }
                        }
                    },
                    {"DeleteRequest": {"Key": {"pk": {"S": "order#2"}}}},
                ]
            },
            "ReturnConsumedCapacity": "TOTAL",
        },
    ),
    (
        "UpdateItem",
        {
            "TableName": TABLE,
            "Key": {"pk": {"S": "k"}},
            "UpdateExpression": "SET #s = :s ADD #c :one",
            "ConditionExpression": "attribute_not_exists(pk) OR #s = :old",
            "ExpressionAttributeNames": {"#s": "status", "#c": "count"},
            "ExpressionAttributeValues": {
                ":s": {"S": "DONE"},
                ":one": {"N": "1"},
                ":old": {"S": "NEW"},
            },
            "ReturnValues": "ALL_NEW",
        },
    ),
    ("TransactWriteItems", {"TransactItems": [put_if_absent("x"), put_if_absent("y")]}),
    (
        "Query",
        {
            "TableName": TABLE,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": "k"}},
            "Limit": 25,
            "ScanIndexForward": False,
        },
    ),
]


def parsed_both_ways(operation: str, params: dict[str, Any]) -> tuple[Any, Any, bytes]:
    """A request as the emulator's fast path parses it, as moto's parse does, and its body."""
    import botocore.session
    from moto.core.parse import JSONParser

    from sluice_tools.motocompat.server import _dynamodb_parameters

    ddb = botocore.session.get_session().create_client(
        "dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    model = ddb.meta.service_model.operation_model(operation)
    serializer: Any = ddb._serializer  # type: ignore[attr-defined]
    body = serializer.serialize_to_request(params, model)["body"]  # as sent on the wire

    class Handler:
        params: Any = None

        def _get_action(self) -> str:
            return operation

    class Request:
        data = body

    handler = Handler()
    _dynamodb_parameters(handler, Request())
    parser: Any = JSONParser(model, map_type=dict)  # type: ignore[arg-type]
    return handler.params, parser.parse({"body": body, "headers": {}}), body


@pytest.mark.parametrize(("operation", "params"), PLAIN_REQUESTS, ids=lambda v: str(v)[:20])
def test_dynamodb_requests_skip_motos_parse_only_where_it_changes_nothing(
    operation: str, params: dict[str, Any]
) -> None:
    ours, motos, body = parsed_both_ways(operation, params)
    assert ours == motos == json.loads(body)


def one_put(item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return ("BatchWriteItem", {"RequestItems": {TABLE: [{"PutRequest": {"Item": item}}]}})


BLOB_REQUESTS = [
    one_put(
        {
            "pk": {"S": "order#1"},
            "payload": {"B": b"x\x9c\x00\xff"},
            "B": {"S": "an attribute named B"},
            "BS": {"BS": [b"\x01", b"\x02\x03"]},
            "nested": {"M": {"B": {"B": b"\x00"}, "l": {"L": [{"B": b"z"}]}}},
        }
    ),
    (
        "UpdateItem",
        {
            "TableName": TABLE,
            "Key": {"pk": {"S": "k"}},
            "UpdateExpression": "SET #b = :b",
            "ExpressionAttributeNames": {"#b": "B"},
            "ExpressionAttributeValues": {":b": {"B": b"\xfe"}},
        },
    ),
]


@pytest.mark.parametrize(("operation", "params"), BLOB_REQUESTS, ids=lambda v: str(v)[:20])
def test_binary_attributes_are_parsed_to_the_bytes_motos_parse_gives(
    operation: str, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.core.responses import BaseResponse

    def not_motos(*_args: Any) -> None:
        raise AssertionError("a body with blobs took moto's parse")

    monkeypatch.setattr(BaseResponse, "parse_parameters", not_motos)
    ours, _, body = parsed_both_ways(operation, params)
    monkeypatch.undo()
    _, motos, _ = parsed_both_ways(operation, params)
    assert ours == motos != json.loads(body)
    if operation == "BatchWriteItem":
        item = ours["RequestItems"][TABLE][0]["PutRequest"]["Item"]
        assert item["payload"] == {"B": b"x\x9c\x00\xff"}
        assert item["BS"] == {"BS": [b"\x01", b"\x02\x03"]}
        assert item["nested"]["M"]["B"] == {"B": b"\x00"}
        assert item["B"] == {"S": "an attribute named B"}


def test_a_condition_shared_by_a_transactions_actions_is_parsed_once(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.dynamodb.comparisons import ConditionExpressionParser

    lexed: list[str | None] = []
    lex = ConditionExpressionParser._lex_condition_expression

    def counted(parser: Any) -> Any:
        lexed.append(parser.condition_expression)
        return lex(parser)

    monkeypatch.setattr(ConditionExpressionParser, "_lex_condition_expression", counted)
    condition = "attribute_not_exists(pk) OR #s = :parse_once"
    items = [put_if_absent(f"once-{i}") for i in range(10)]
    for item in items:
        item["Put"]["ConditionExpression"] = condition
        item["Put"]["ExpressionAttributeNames"] = {"#s": "status"}
        item["Put"]["ExpressionAttributeValues"] = {":parse_once": {"S": "NEW"}}
    dynamodb.transact_write_items(TransactItems=items)

    assert [stored(dynamodb, f"once-{i}") for i in range(10)] == ["NEW"] * 10
    assert lexed.count(condition) == 1  # moto: once per action to validate, once to check
    # A condition that does not parse is refused (moto answers 500) every time: parsed again,
    # not remembered.
    bad = "attribute_not_exists(pk) AND AND"
    for _ in range(2):
        with pytest.raises(ClientError):
            dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "bad"}}, ConditionExpression=bad)
    assert stored(dynamodb, "bad") is None
    assert lexed.count(bad) >= 2


def test_binary_attributes_still_take_motos_parse(dynamodb: Any) -> None:
    # Parsed by moto, a B value is its 3 bytes; taken as JSON it would be 4 base64 characters.
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "bin"}, "blob": {"B": b"\x00\xffz"}})

    dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": "bin"}},
        UpdateExpression="SET checked = :yes",
        ConditionExpression="size(#b) = :three",
        ExpressionAttributeNames={"#b": "blob"},
        ExpressionAttributeValues={":three": {"N": "3"}, ":yes": {"BOOL": True}},
    )
    got = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "bin"}})["Item"]
    assert got["blob"] == {"B": b"\x00\xffz"}
    assert got["checked"] == {"BOOL": True}


def test_json_responses_still_carry_a_request_id(dynamodb: Any) -> None:
    response = dynamodb.describe_table(TableName=TABLE)

    assert len(response["ResponseMetadata"]["RequestId"]) > 20


def test_a_new_item_is_sized_once_and_an_oversize_one_is_still_refused(dynamodb: Any) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    sized = 0
    original = DynamoType.size

    def counting(self: Any) -> int:
        nonlocal sized
        sized += 1
        return int(original(self))

    item = {"pk": {"S": "wide"}, **{f"a{i}": {"S": "v" * 10} for i in range(200)}}
    DynamoType.size = counting  # type: ignore[method-assign]
    try:
        dynamodb.put_item(TableName=TABLE, Item=item)
    finally:
        DynamoType.size = original  # type: ignore[method-assign]
    assert sized < 1000  # once per attribute (and the key checks), not 200²/2 times

    with pytest.raises(ClientError, match="Item size has exceeded"):
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "big"}, "x": {"S": "v" * 405_000}})
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "fits"}, "x": {"S": "v" * 399_000}})
    assert stored_size(dynamodb, "fits") == 399_000


def test_every_attribute_type_is_stored_as_motos_own_dynamotype_would_hold_it(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.dynamo_type import DynamoType

    item: dict[str, dict[str, Any]] = {
        "pk": {"S": "every-type"},
        "s": {"S": "text"},
        "n": {"N": "12.50"},
        "b": {"B": b"\x00\x01"},
        "t": {"BOOL": False},
        "z": {"NULL": True},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2"]},
        "bs": {"BS": [b"\x02", b"\x03"]},
        "l": {"L": [{"S": "x"}, {"M": {"k": {"S": "1"}}}]},
        "m": {"M": {"inner": {"L": [{"S": "w"}]}, "s": {"S": "y"}}},
    }
    built: list[str] = []
    init = DynamoType.__init__

    def counted(self: Any, value: Any) -> None:
        if isinstance(value, dict):
            built.append(next(iter(value)))
        init(self, value)

    monkeypatch.setattr(DynamoType, "__init__", counted)
    dynamodb.put_item(TableName=TABLE, Item=item)
    monkeypatch.undo()

    # Scalars and sets are made without DynamoType.__init__ (sizing a set still types each
    # member); lists, maps and their members take it, as does the key in moto's put_item.
    assert not {"BOOL", "NULL", "SS", "NS", "BS"} & set(built)
    assert {"L", "M"} <= set(built)
    table = dynamodb_backends["123456789012"]["us-east-1"].get_table(TABLE)
    found = table.get_item(DynamoType({"S": "every-type"}))
    assert found is not None
    stored = found.attrs
    for name, value in item.items():
        expected = DynamoType(value)
        assert (stored[name].type, stored[name]) == (expected.type, expected)
    got = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "every-type"}})["Item"]
    assert got == item


def test_a_role_used_by_a_request_is_found_by_its_arn_without_listing_every_role(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.iam.models import IAMBackend, iam_backends

    endpoint = dynamodb.meta.endpoint_url
    iam_client, sts = client("iam", endpoint), client("sts", endpoint)
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
            ],
        }
    )

    def as_role(role_name: str) -> Any:
        arn = iam_client.get_role(RoleName=role_name)["Role"]["Arn"]
        creds = sts.assume_role(RoleArn=arn, RoleSessionName="session")["Credentials"]
        return client(
            "dynamodb",
            endpoint,
            credentials={
                "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
                "AWS_SESSION_TOKEN": creds["SessionToken"],
            },
        )

    def role(name: str) -> Any:
        return iam_backends["123456789012"]["aws"].get_role(name)

    iam_client.create_role(RoleName="lookup", AssumeRolePolicyDocument=trust)
    first_client = as_role("lookup")
    first_client.list_tables()
    first = role("lookup")
    assert first.last_used is not None  # moto still records the role's use

    listed = 0
    get_roles = IAMBackend.get_roles

    def counted(self: Any) -> Any:
        nonlocal listed
        listed += 1
        return get_roles(self)

    monkeypatch.setattr(IAMBackend, "get_roles", counted)
    first_client.list_tables()
    monkeypatch.undo()
    assert listed == 0  # found by its ARN, not by listing every role

    # Deleted and created again under the same name: the new role is the one used.
    iam_client.delete_role(RoleName="lookup")
    iam_client.create_role(RoleName="lookup", AssumeRolePolicyDocument=trust)
    second = role("lookup")
    assert second is not first
    assert second.last_used is None
    as_role("lookup").list_tables()
    assert second.last_used is not None


def test_dynamodb_calls_are_answered_without_flask_and_as_flask_answers_them(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask import Flask

    through_flask: list[str] = []
    full_dispatch = Flask.full_dispatch_request

    def counted(app: Any) -> Any:
        from flask import request

        through_flask.append(str(request.headers.get("X-Amz-Target") or request.path))
        return full_dispatch(app)

    monkeypatch.setattr(Flask, "full_dispatch_request", counted)
    put = dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "direct"}, "b": {"B": b"\x01"}})
    got = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "direct"}})
    with pytest.raises(ClientError) as failed:
        dynamodb.put_item(
            TableName=TABLE,
            Item={"pk": {"S": "direct"}},
            ConditionExpression="attribute_not_exists(pk)",
        )
    with pytest.raises(ClientError) as missing:
        dynamodb.describe_table(TableName="no-such-table")
    assert through_flask == []

    assert got["Item"] == {"pk": {"S": "direct"}, "b": {"B": b"\x01"}}
    for answer in (put, got, failed.value.response, missing.value.response):
        headers = answer["ResponseMetadata"]["HTTPHeaders"]
        assert headers["access-control-allow-origin"] == "*"  # as flask-cors adds it
        assert len(headers["x-amzn-requestid"]) > 20
        assert "x-amz-crc32" in headers
    assert failed.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"

    # A browser's request (with an Origin) and other services still take Flask's path.
    def with_origin(request: Any, **_: Any) -> None:
        request.headers["Origin"] = "http://localhost:8000"

    dynamodb.meta.events.register("before-sign.dynamodb.ListTables", with_origin)
    try:
        dynamodb.list_tables()
    finally:
        dynamodb.meta.events.unregister("before-sign.dynamodb.ListTables", with_origin)
    client("sqs", dynamodb.meta.endpoint_url).list_queues()
    assert len(through_flask) == 2
    assert through_flask[0] == "DynamoDB_20120810.ListTables"


def test_the_backend_of_a_host_is_matched_once(dynamodb: Any) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    dispatcher = DomainDispatcherApplication(create_backend_app)
    walks = 0

    class Counted(list[Any]):
        def __iter__(self) -> Any:
            nonlocal walks
            walks += 1
            return super().__iter__()

    dispatcher.backend_url_patterns = Counted(dispatcher.backend_url_patterns)
    host = "sqs.us-east-1.amazonaws.com"
    assert [dispatcher.get_backend_for_host(host) for _ in range(3)] == ["sqs"] * 3
    assert walks == 1
    assert dispatcher.get_backend_for_host("nothing.example") is None
    assert dispatcher.get_backend_for_host("nothing.example") is None
    assert walks == 3  # an unknown host is matched again each time


def stored_size(ddb: Any, pk: str) -> int:
    return len(ddb.get_item(TableName=TABLE, Key={"pk": {"S": pk}})["Item"]["x"]["S"])


def test_dynamodb_results_skip_motos_serializer_only_where_it_changes_nothing(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from moto.core.responses import BaseResponse
    from moto.dynamodb.responses import DynamoHandler

    from sluice_tools.motocompat import server

    compared: list[tuple[str, bool]] = []
    motos_serializer = BaseResponse.serialized
    fell_back: list[bool] = []

    def counted(handler: Any, action_result: Any) -> Any:
        fell_back.append(True)
        return motos_serializer(handler, action_result)

    def both(handler: Any, action_result: Any) -> Any:
        fell_back.clear()
        fast = server._dynamodb_serialized(handler, action_result)
        took_fast_path = not fell_back
        motos = motos_serializer(handler, action_result)
        assert fast[0] == motos[0]
        assert fast[1]["Content-Type"] == motos[1]["Content-Type"]
        assert json.loads(fast[2]) == json.loads(motos[2])
        compared.append((handler._get_action(), took_fast_path))
        return fast

    monkeypatch.setattr(BaseResponse, "serialized", counted)
    monkeypatch.setattr(DynamoHandler, "serialized", both)
    key = {"pk": {"S": "ser-1"}}
    dynamodb.put_item(TableName=TABLE, Item={**key, "n": {"N": "1"}, "l": {"L": [{"NULL": True}]}})
    dynamodb.put_item(TableName=TABLE, Item={**key, "n": {"N": "2"}}, ReturnValues="ALL_OLD")
    dynamodb.update_item(
        TableName=TABLE,
        Key=key,
        UpdateExpression="ADD n :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
        ReturnValues="ALL_NEW",
        ReturnConsumedCapacity="TOTAL",
    )
    dynamodb.get_item(TableName=TABLE, Key=key)
    dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "absent"}})
    dynamodb.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "ser-1"}},
    )
    dynamodb.batch_write_item(
        RequestItems={
            TABLE: [{"PutRequest": {"Item": {"pk": {"S": f"ser-{i}"}}}} for i in range(3)]
        }
    )
    dynamodb.transact_write_items(TransactItems=[put_if_absent("ser-t")])
    dynamodb.delete_item(TableName=TABLE, Key=key, ReturnValues="ALL_OLD")
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "ser-b"}, "b": {"B": b"\x01"}})
    dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "ser-b"}})  # bytes: moto's own

    assert [action for action, _ in compared] == [
        "PutItem", "PutItem", "UpdateItem", "GetItem", "GetItem", "Query",
        "BatchWriteItem", "TransactWriteItems", "DeleteItem", "PutItem", "GetItem",
    ]  # fmt: skip
    # Skipped moto's serializer: all but the item with a binary value, and DeleteItem (moto
    # puts a None member in its result, which the serializer drops).
    assert [took for _, took in compared] == [True] * 8 + [False, True, False]


def test_s3_events_of_a_versioned_bucket_name_the_version_they_announce(dynamodb: Any) -> None:
    endpoint = dynamodb.meta.endpoint_url
    s3, sqs = client("s3", endpoint), client("sqs", endpoint)
    queue_url = sqs.create_queue(QueueName="landing-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    s3.create_bucket(Bucket="versioned-landing")
    s3.put_bucket_versioning(
        Bucket="versioned-landing", VersioningConfiguration={"Status": "Enabled"}
    )
    s3.put_bucket_notification_configuration(
        Bucket="versioned-landing",
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    versions = [
        s3.put_object(Bucket="versioned-landing", Key="incoming/order/a.jsonl", Body=body)[
            "VersionId"
        ]
        for body in (b"first\n", b"second\n")
    ]

    announced: list[dict[str, Any]] = []
    while len(announced) < 2:
        page = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in page.get("Messages") or []:
            for record in json.loads(message["Body"]).get("Records") or []:
                announced.append(record["s3"]["object"])
    assert [obj["versionId"] for obj in announced] == versions
    assert announced[0]["sequencer"] < announced[1]["sequencer"]


def test_a_long_poll_ends_with_no_message_when_the_runtime_stops(dynamodb: Any) -> None:
    from sluice_tools.motocompat import server

    sqs = client("sqs", dynamodb.meta.endpoint_url)
    url = sqs.create_queue(QueueName="long-polled")["QueueUrl"]
    answers: list[list[Any]] = []
    polling = threading.Thread(
        target=lambda: answers.append(
            sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20).get("Messages", [])
        )
    )
    polling.start()
    try:
        server.cut_long_polls(True)
        polling.join(10)  # a 20 s poll: only the cut ends it within this
        assert not polling.is_alive()
        assert answers == [[]]
    finally:
        server.cut_long_polls(False)
        polling.join(30)
    # After the stop, polls wait and receive as before; the message sent meanwhile is there.
    sqs.send_message(QueueUrl=url, MessageBody="after")
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
    assert [m["Body"] for m in got] == ["after"]
