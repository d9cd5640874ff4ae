"""Fast paths of `motocompat.server` against moto's own: BatchWriteItem, SQS body digests.

BatchWriteItem (`_batch_write_item`):
The same requests, good and bad, go through the emulator twice: once with moto's own
`batch_write_item` (Sluice's patches off), once with the fast path. Each answer (or error
code and message) and every item stored afterwards, read back by scan and through the
table's secondary index, must be the same. Then: the fast path is what answered (moto's
per-item put and its JSON duplicate check ran only where an item needs them), and a role
that may not write the table is still refused.

SQS (`_body_md5`): a message's body digest is made once, and is moto's.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sluice_tools.local.emulator import Emulator, client
from sluice_tools.motocompat import server

from .test_iam_enforcement import TRUST, allow, policy

TABLE = "records"
OTHER = "numbers"


@contextmanager
def motos_own() -> Iterator[None]:
    """moto without Sluice's patches while the emulator keeps serving; restored after."""
    server.unquiet()
    try:
        yield
    finally:
        server.quiet()


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    emulator = Emulator()
    try:
        yield client("dynamodb", emulator.start())
    finally:
        emulator.stop()


def create_tables(ddb: Any, stream: bool) -> None:
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"}
            for name in ("pk", "sk", "open_shard", "open_deadline")
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "open-objects",
                "KeySchema": [
                    {"AttributeName": "open_shard", "KeyType": "HASH"},
                    {"AttributeName": "open_deadline", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
        **(
            {"StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}}
            if stream
            else {}
        ),
    )
    ddb.create_table(
        TableName=OTHER,
        KeySchema=[{"AttributeName": "n", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "n", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )


def record(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "pk": {"S": f"order#o-{i % 7}"},
        "sk": {"S": f"v#2026-12-05T00:00:{i:02d}Z#{i}"},
        "ingested_at": {"S": "2026-12-05T00:00:00.000Z"},
        "payload": {"B": bytes([i % 256]) * (i + 1)},
        "count": {"N": str(i)},
        "flag": {"BOOL": i % 2 == 0},
        **extra,
    }


def put(item: dict[str, Any]) -> dict[str, Any]:
    return {"PutRequest": {"Item": item}}


def batches() -> list[dict[str, list[dict[str, Any]]]]:
    """Each a BatchWriteItem's RequestItems: good ones, then each refusal moto makes."""
    nested = {
        "m": {"M": {"k": {"S": "v"}, "l": {"L": [{"N": "1"}, {"NULL": True}]}}},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2.5"]},
        "bs": {"BS": [b"x", b"y"]},
        "nothing": {"NULL": True},
    }
    return [
        # Scalars of every kind, unicode, numbers kept as written, index keys on some.
        {TABLE: [put(record(i)) for i in range(20)]},
        {
            TABLE: [
                put(record(30, open_shard={"S": "3"}, open_deadline={"S": "2026-12-06"})),
                put(record(31, text={"S": "Zürich ☃ 東京"}, odd={"N": "01.50"})),
                put(record(32, **nested)),  # nested and set values: moto's put
                put(record(33, empty={"S": ""}, none={"B": b""})),  # empty non-key values
            ]
        },
        # A key written again with other attributes (replaced), a second table, a delete.
        {
            TABLE: [
                put({**record(3), "payload": {"S": "replaced"}, "new": {"S": "x"}}),
                {"DeleteRequest": {"Key": {"pk": record(4)["pk"], "sk": record(4)["sk"]}}},
            ],
            OTHER: [put({"n": {"N": "7"}, "v": {"S": "seven"}}), put({"n": {"N": "8.0"}})],
        },
        # The same key twice with different attributes: not a duplicate to moto.
        {TABLE: [put(record(40)), put({**record(40), "other": {"S": "y"}})]},
        # Refused: ...
        {TABLE: [put(record(50)), put(record(50))]},  # the same item twice
        {TABLE: [put(record(51)), put({"pk": {"S": "order#x"}})]},  # no sort key
        {TABLE: [put({"sk": {"S": "s"}})]},  # no partition key
        {TABLE: [put(record(52)), put({**record(53), "pk": {"N": "5"}})]},  # key type
        {OTHER: [put({"n": {"S": "5"}})]},
        {TABLE: [put(record(54)), put({**record(55), "sk": {"S": ""}})]},  # empty key
        {TABLE: [put(record(56, open_shard={"S": ""}, open_deadline={"S": "d"}))]},
        {TABLE: [put(record(57)), put({**record(58), "pk": {"S": "p" * 2049}})]},
        {TABLE: [put({**record(59), "sk": {"S": "s" * 1025}})]},
        {TABLE: [put(record(60, open_shard={"S": "x" * 2049}))]},  # an index key too long
        {TABLE: [put({**record(61), "pk": {"S": "p" * 2048}, "sk": {"S": "é" * 512}})]},
        # Too large (with earlier puts of the batch already applied, as moto applies them).
        {TABLE: [put(record(62)), put(record(63, big={"S": "x" * 410_000})), put(record(64))]},
        {TABLE: [put(record(65, big={"B": b"x" * 404_000}))]},  # just under moto's limit
        {"missing": [put(record(66))]},
    ]


def run(ddb: Any, stream: bool = False) -> list[Any]:
    create_tables(ddb, stream)
    try:
        outcomes: list[Any] = []
        for requests in batches():
            try:
                answer = ddb.batch_write_item(RequestItems=requests)
                answer.pop("ResponseMetadata", None)
                outcomes.append(("ok", answer))
            except ClientError as error:
                outcomes.append(("error", error.response["Error"]))
        for table in (TABLE, OTHER):
            items = ddb.scan(TableName=table)["Items"]
            outcomes.append(("stored", table, sorted(items, key=repr)))
        index = ddb.scan(TableName=TABLE, IndexName="open-objects")["Items"]
        outcomes.append(("index", sorted(index, key=repr)))
        found = ddb.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :p AND begins_with(sk, :v)",
            ExpressionAttributeValues={":p": {"S": "order#o-3"}, ":v": {"S": "v#"}},
        )["Items"]
        outcomes.append(("query", found))
        return outcomes
    finally:
        ddb.delete_table(TableName=TABLE)
        ddb.delete_table(TableName=OTHER)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_batch_writes_answer_and_store_as_motos_own(dynamodb: Any, stream: bool) -> None:
    with motos_own():
        expected = run(dynamodb, stream)
    assert run(dynamodb, stream) == expected
    errors = [o[1]["Message"] for o in expected if o[0] == "error"]
    # The batches refuse what they are meant to (so the comparison compares refusals).
    assert len(errors) == 12
    assert sum("duplicates" in e for e in errors) == 1
    assert sum("Missing the key" in e for e in errors) == 2
    assert sum("Type mismatch" in e for e in errors) == 2
    assert sum("empty string" in e for e in errors) == 2
    assert sum("Size of hashkey" in e for e in errors) == 2
    assert sum("range keys" in e for e in errors) == 1
    assert sum("Item size has exceeded" in e for e in errors) == 1
    assert sum("not found" in e for e in errors) == 1
    stored = {repr(o[2]) for o in expected if o[0] == "stored"}
    assert "Zürich" in str(stored)
    assert "replaced" in str(stored)


def test_plain_puts_skip_motos_per_item_work(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of scalar items is put without moto's `Table.put_item` or its JSON duplicate
    check; an item with a map or set, or a batch that may repeat an item, takes them."""
    from moto.dynamodb.models import utilities
    from moto.dynamodb.models.table import Table

    puts: list[Any] = []
    dumps: list[Any] = []
    own_put, own_dump = Table.put_item, utilities.dynamo_json_dump

    def counted_put(*args: Any, **kwargs: Any) -> Any:
        puts.append(args[1])
        return own_put(*args, **kwargs)

    def counted_dump(value: Any) -> str:
        dumps.append(value)
        return str(own_dump(value))

    monkeypatch.setattr(Table, "put_item", counted_put)
    for where in ("moto.dynamodb.responses", "moto.dynamodb.models.utilities"):
        monkeypatch.setattr(f"{where}.dynamo_json_dump", counted_dump)
    create_tables(dynamodb, stream=False)
    try:
        dynamodb.batch_write_item(RequestItems={TABLE: [put(record(i)) for i in range(25)]})
        assert (len(puts), len(dumps)) == (0, 0)
        dynamodb.batch_write_item(
            RequestItems={TABLE: [put(record(1)), put(record(2, m={"M": {"k": {"S": "v"}}}))]}
        )
        assert (len(puts), len(dumps)) == (1, 0)
        with pytest.raises(ClientError, match="duplicates"):
            dynamodb.batch_write_item(RequestItems={TABLE: [put(record(3)), put(record(3))]})
        assert len(dumps) == 2
        got = dynamodb.get_item(TableName=TABLE, Key={"pk": record(9)["pk"], "sk": record(9)["sk"]})
        assert got["Item"] == {
            **record(9),
            "payload": {"B": base64.b64decode(base64.b64encode(bytes([9]) * 10))},
        }
    finally:
        dynamodb.delete_table(TableName=TABLE)
        dynamodb.delete_table(TableName=OTHER)


def test_a_role_may_batch_write_only_the_tables_it_is_granted(dynamodb: Any) -> None:
    """IAM is checked before moto answers: the fast path changes nothing about who may write."""
    from sluice_tools.local import iam
    from sluice_tools.local.emulator import ACCOUNT_ID

    endpoint = dynamodb.meta.endpoint_url
    operator = dynamodb
    create_tables(operator, stream=False)
    try:
        roles = client("iam", endpoint)
        roles.create_role(RoleName="writer", AssumeRolePolicyDocument=TRUST)
        grant = policy(allow("dynamodb:BatchWriteItem", f"arn:aws:dynamodb:*:*:table/{TABLE}"))
        roles.put_role_policy(RoleName="writer", PolicyName="g", PolicyDocument=grant)
        answer = client("sts", endpoint).assume_role(
            RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/writer", RoleSessionName="writer-session"
        )["Credentials"]
        role = client(
            "dynamodb",
            endpoint,
            credentials={
                "AWS_ACCESS_KEY_ID": answer["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": answer["SecretAccessKey"],
                "AWS_SESSION_TOKEN": answer["SessionToken"],
            },
        )
        iam.enforce(True)
        role.batch_write_item(RequestItems={TABLE: [put(record(1))]})
        for requests in (
            {OTHER: [put({"n": {"N": "1"}})]},
            {TABLE: [put(record(2))], OTHER: [put({"n": {"N": "2"}})]},
        ):
            with pytest.raises(ClientError) as refused:
                role.batch_write_item(RequestItems=requests)
            error = refused.value.response["Error"]
            assert error["Code"] == "AccessDeniedException"
            assert "dynamodb:BatchWriteItem on resource: arn:aws:dynamodb:" in error["Message"]
            assert f":table/{OTHER} " in error["Message"]
        assert len(operator.scan(TableName=TABLE)["Items"]) == 1  # record 2 was never written
        assert operator.scan(TableName=OTHER)["Items"] == []
    finally:
        iam.enforce(False)
        operator.delete_table(TableName=TABLE)
        operator.delete_table(TableName=OTHER)


def test_a_message_body_is_hashed_once_and_answered_as_moto_hashes_it(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from moto.sqs.models import Message
    from moto.utilities import utils

    hashed: list[int] = []
    own = utils.md5_hash

    def counted(data: Any = None) -> Any:
        hashed.append(1)
        return own(data)

    for where in ("moto.sqs.models", "moto.utilities.utils"):
        monkeypatch.setattr(f"{where}.md5_hash", counted)
    sqs = client("sqs", dynamodb.meta.endpoint_url)
    url = sqs.create_queue(QueueName="digests")["QueueUrl"]
    body = "chunk ☃ " * 1000
    sent = sqs.send_message(QueueUrl=url, MessageBody=body)
    want = hashlib.md5(body.encode("utf-8")).hexdigest()
    assert sent["MD5OfMessageBody"] == want
    for _ in range(3):
        (got,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"]
        assert got["Body"] == body
        assert got["MD5OfBody"] == want
    assert len(hashed) == 1
    message = Message("id", "first", None)
    first = message.body_md5
    message.body = "second"  # a body replaced: its own digest
    assert (first, message.body_md5) == (
        hashlib.md5(b"first").hexdigest(),
        hashlib.md5(b"second").hexdigest(),
    )
