"""Speed-ups of moto in `motocompat.server`, each checked against moto's own behaviour.

Update expressions: parsed once, checked as moto checks them.

`motocompat.server` remembers each update expression's tree (`_parse_update_once`), copies it
from a pickle (`_validator_init`), skips the item-independent checks a tree already passed with
the same names and key attributes (`_validate_update`) and walks trees with its node types
looked up once (`_traverse`). These tests run the same updates through moto's own code and
the patched code (twice, the second time from the remembered trees) and want the same items
and the same errors; then the same through the emulator's API, transactions included.

SQS: receipt handles drawn in one call from moto's seedable random (`_receipt_handle`), and
attribute names converted once (`_underscored_once`): queue attributes as moto builds them,
content-based deduplication still read from them.
"""

from __future__ import annotations

import base64
import copy
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sluice_tools.local.emulator import Emulator, client
from sluice_tools.motocompat import server

REGION = "us-east-1"
_accounts = itertools.count(100000000001)


@contextmanager
def motos_own() -> Iterator[None]:
    """moto without Sluice's patches, whatever state the process is in; restored after."""
    was = bool(server._originals)
    server.unquiet()
    try:
        yield
    finally:
        if was:
            server.quiet()


@contextmanager
def patched() -> Iterator[None]:
    was = bool(server._originals)
    server.quiet()
    try:
        yield
    finally:
        if not was:
            server.unquiet()


def fresh_backend() -> Any:
    """A DynamoDB backend of an account no other test uses, with two tables: `t` keyed
    (pk, sk) and `u` keyed `other`."""
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends[str(next(_accounts))][REGION]
    for name, keys in (("t", ["pk", "sk"]), ("u", ["other"])):
        backend.create_table(
            name,
            schema=[
                {"AttributeName": k, "KeyType": kind}
                for k, kind in zip(keys, ["HASH", "RANGE"], strict=False)
            ],
            throughput=None,
            attr=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
            global_indexes=None,
            indexes=None,
            streams=None,
            billing_mode="PAY_PER_REQUEST",
            sse_specification=None,
            tags=[],
            deletion_protection_enabled=None,
            warm_throughput=None,
        )
    return backend


PROGRESS = (
    "SET #src = if_not_exists(#src, :src), #first = if_not_exists(#first, :first), "
    "#exp = :exp ADD #a0 :a0, #a1 :a1"
)
START = {
    "n": {"N": "5"},
    "s": {"S": "text"},
    "l": {"L": [{"S": "a"}, {"S": "b"}]},
    "m": {"M": {"k": {"S": "v"}}},
    "ss": {"SS": ["x", "y"]},
    "gone": {"S": "bye"},
}
# (table, key, item put before (None: as it is), expression, names, values): each outcome
# (the item or moto's error, then what is stored) is compared.
CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, str, Any, Any]] = [
    (
        "t",
        {"pk": {"S": "p"}, "sk": {"S": "progress"}},
        None,
        PROGRESS,
        {"#src": "source", "#first": "first", "#exp": "expires", "#a0": "read", "#a1": "ok"},
        {
            ":src": {"S": "s3://b/k"},
            ":first": {"S": "t0"},
            ":exp": {"N": "100"},
            ":a0": {"N": "3"},
            ":a1": {"N": "2"},
        },
    ),
    # The same text with other names and values: other attributes, other sums.
    (
        "t",
        {"pk": {"S": "p"}, "sk": {"S": "progress"}},
        None,  # the item the case before made
        PROGRESS,
        {"#src": "source", "#first": "first", "#exp": "expires", "#a0": "read", "#a1": "bad"},
        {
            ":src": {"S": "s3://other"},
            ":first": {"S": "t1"},
            ":exp": {"N": "200"},
            ":a0": {"N": "10"},
            ":a1": {"N": "1"},
        },
    ),
    (
        "t",
        {"pk": {"S": "p"}, "sk": {"S": "x"}},
        START,
        "SET #n = #n + :one, #l = list_append(if_not_exists(#l, :empty), :more) REMOVE #g",
        {"#n": "n", "#l": "l", "#g": "gone"},
        {":one": {"N": "1"}, ":empty": {"L": []}, ":more": {"L": [{"S": "c"}]}},
    ),
    (
        "t",
        {"pk": {"S": "p"}, "sk": {"S": "x"}},
        START,
        "SET #m.#k = :v, #l[0] = :v, fresh = :v",
        {"#m": "m", "#k": "k2", "#l": "l"},
        {":v": {"S": "new"}},
    ),
    (
        "t",
        {"pk": {"S": "p"}, "sk": {"S": "x"}},
        START,
        "ADD #t :more DELETE #ss :less",
        {"#t": "tags", "#ss": "ss"},
        {":more": {"SS": ["z"]}, ":less": {"SS": ["x"]}},
    ),
    # Refused: duplicate paths (first with names that pass, then with names that collide).
    (
        "t",
        {"pk": {"S": "p"}, "sk": {"S": "x"}},
        START,
        "SET #a = :v, #b = :w",
        {"#a": "s", "#b": "fresh"},
        {":v": {"S": "1"}, ":w": {"S": "2"}},
    ),
    (
        "t",
        {"pk": {"S": "p"}, "sk": {"S": "x"}},
        START,
        "SET #a = :v, #b = :w",
        {"#a": "s", "#b": "s"},
        {":v": {"S": "1"}, ":w": {"S": "2"}},
    ),
    # Refused: a key attribute, reached by a name the same text used harmlessly before, and
    # on a table where the attribute the same text and names set is the key.
    (
        "t",
        {"pk": {"S": "p"}, "sk": {"S": "x"}},
        START,
        "SET #x = :v",
        {"#x": "other"},
        {":v": {"S": "1"}},
    ),
    ("t", {"pk": {"S": "p"}, "sk": {"S": "x"}}, START, "SET #x = :v", {"#x": "pk"}, None),
    ("u", {"other": {"S": "o"}}, {"n": {"N": "1"}}, "SET #x = :v", {"#x": "other"}, None),
    # Refused for what the item holds or the values say (checked every time).
    ("t", {"pk": {"S": "p"}, "sk": {"S": "x"}}, START, "ADD #s :one", {"#s": "s"}, None),
    (
        "t",
        {"pk": {"S": "p"}, "sk": {"S": "x"}},
        START,
        "ADD #s :one",
        {"#s": "n"},
        {":one": {"S": "not a number"}},
    ),
    ("t", {"pk": {"S": "p"}, "sk": {"S": "x"}}, START, "SET #s = :nope", {"#s": "s"}, {}),
    ("t", {"pk": {"S": "p"}, "sk": {"S": "x"}}, START, "SET #undefined = :v", {}, None),
    ("t", {"pk": {"S": "p"}, "sk": {"S": "x"}}, START, "SET a = :v SET b = :v", None, None),
    ("t", {"pk": {"S": "p"}, "sk": {"S": "x"}}, START, "SET #n = #n + :v", {"#n": "s"}, None),
    # Text and names that passed before, refused for the value, then for the item.
    ("t", {"pk": {"S": "p"}, "sk": {"S": "x"}}, START, "ADD #c :v", {"#c": "n"}, None),
    (
        "t",
        {"pk": {"S": "p"}, "sk": {"S": "x"}},
        START,
        "ADD #c :v",
        {"#c": "n"},
        {":v": {"S": "x"}},
    ),
    ("t", {"pk": {"S": "p"}, "sk": {"S": "x"}}, {"n": {"S": "x"}}, "ADD #c :v", {"#c": "n"}, None),
]
# `None` values above: one value `:v` (or `:one`) of 1.
DEFAULT_VALUES = {":v": {"N": "1"}, ":one": {"N": "1"}}


def run_cases(backend: Any) -> list[tuple[Any, ...]]:
    outcomes: list[tuple[Any, ...]] = []
    for table, key, before, expression, names, values in CASES:
        if isinstance(before, dict):
            backend.put_item(table, copy.deepcopy({**key, **before}))  # moto keeps its lists
        try:
            item = backend.update_item(
                table,
                key,
                update_expression=expression,
                expression_attribute_names=names,
                expression_attribute_values=DEFAULT_VALUES if values is None else values,
            )
            outcomes.append(("ok", item.to_json()["Attributes"]))
        except Exception as exc:  # the error moto raises is the outcome compared
            outcomes.append(("error", type(exc).__name__, str(exc)))
        stored = backend.get_item(table, key)
        outcomes.append(("stored", None if stored is None else stored.to_json()["Attributes"]))
    return outcomes


def test_updates_give_motos_items_and_errors_from_remembered_trees() -> None:
    with motos_own():
        expected = run_cases(fresh_backend())
    with patched():
        first = run_cases(fresh_backend())
        again = run_cases(fresh_backend())  # every tree remembered, checks passed before
    assert first == expected
    assert again == expected
    errors = [o[1] for o in expected if o[0] == "error"]
    # The cases refuse what they are meant to (so the comparison compares refusals).
    assert errors.count("UpdateHashRangeKeyException") == 2
    assert "DuplicateUpdateExpression" in errors
    assert "TooManyClauses" in errors
    assert "IncorrectDataType" in errors
    assert len(errors) == 11
    sums = [o[1] for o in expected[:4:2]]
    assert sums[0]["read"] == {"N": "3"}
    # The second call's names and values: its own sums, its own new attribute.
    assert (sums[1]["read"], sums[1]["ok"], sums[1]["bad"]) == ({"N": "13"}, {"N": "2"}, {"N": "1"})
    assert (sums[1]["source"], sums[1]["expires"]) == ({"S": "s3://b/k"}, {"N": "200"})


def test_an_update_expression_is_parsed_once_and_a_bad_one_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.dynamodb.parsing.tokens import ExpressionTokenizer

    lexed: list[str] = []
    lex = ExpressionTokenizer.make_list

    def counted(expression: str) -> Any:
        lexed.append(expression)
        return lex(expression)

    monkeypatch.setattr(ExpressionTokenizer, "make_list", staticmethod(counted))
    expression = "SET #parse_once = :v ADD #n :v"
    with patched():
        backend = fresh_backend()
        for i in range(3):
            key = {"pk": {"S": f"p{i}"}, "sk": {"S": "s"}}
            backend.update_item(
                "t",
                key,
                update_expression=expression,
                expression_attribute_names={"#parse_once": "a", "#n": "n"},
                expression_attribute_values={":v": {"N": str(i)}},
            )
            assert backend.get_item("t", key).to_json()["Attributes"]["a"] == {"N": str(i)}
        bad = "SET #a = = :v"
        for _ in range(2):
            with pytest.raises(Exception, match=r"(?i)syntax|invalid"):
                backend.update_item(
                    "t",
                    {"pk": {"S": "bad"}, "sk": {"S": "s"}},
                    update_expression=bad,
                    expression_attribute_names={"#a": "a"},
                    expression_attribute_values={":v": {"N": "1"}},
                )
    assert lexed.count(expression) == 1  # moto: once per call at the backend alone
    assert lexed.count(bad) == 2


def test_new_items_are_sized_as_moto_sizes_them_up_to_the_limit() -> None:
    """A string counts its UTF-8 bytes, a number its text, a name its UTF-8 bytes: items
    around DynamoDB's limit are kept or refused exactly as moto's own sizing decides."""

    def outcomes() -> list[str]:
        backend = fresh_backend()
        kept = []
        # 46 + 2n + x bytes: 405,000 at n = 202,477 and x = 0; every byte either side.
        for n, x in itertools.product(range(202475, 202480), (0, 1)):
            item = {
                "pk": {"S": "p"},
                "sk": {"S": f"{n}-{x}"[-6:]},
                "grösse": {"S": "é" * n + "x" * x},
                "num": {"N": "-12345.678e3"},
                "flag": {"BOOL": True},
                "tags": {"SS": ["a", "bé"]},
            }
            try:
                backend.put_item("t", item)
                kept.append("kept")
            except Exception as exc:  # moto's refusal is the outcome compared
                kept.append(type(exc).__name__)
        return kept

    with motos_own():
        expected = outcomes()
    with patched():
        got = outcomes()
    assert got == expected
    assert "kept" in expected
    assert "ItemSizeTooLarge" in expected


def test_json_errors_are_the_ones_moto_builds() -> None:
    """moto's JSON errors without the XML body they overwrite: the same fields, body, type
    and headers."""
    from moto.core.exceptions import JsonRESTError
    from moto.dynamodb import exceptions as ddb

    def made() -> list[tuple[Any, ...]]:
        errors: list[Any] = [
            ddb.ProvidedKeyDoesNotExist(),
            ddb.ConditionalCheckFailed(item={"pk": {"S": "p"}}),
            ddb.TransactionCanceledException(
                [(None, None, None), ("ConditionalCheckFailed", "failed", {"pk": {"S": "p"}})]
            ),
            ddb.ResourceNotFoundException(table_name="t"),
            ddb.ItemSizeTooLarge(),
            ddb.MockValidationException("bad"),
            JsonRESTError("com.example#Plain", "plain", "ignored", template="ignored"),
        ]
        return [
            (
                type(e).__name__,
                vars(e),
                e.code,
                e.get_body(),
                e.get_headers(),
                e.relative_error_type,
            )
            for e in errors
        ]

    with motos_own():
        expected = made()
    with patched():
        got = made()
    assert got == expected
    assert expected[0][1]["content_type"] == "application/json"
    assert '"__type"' in expected[2][3]


def test_sns_envelopes_are_motos_signed_with_one_certificate_per_subscription() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.sns.models import sns_backends
    from moto.sqs.models import sqs_backends

    def envelopes() -> tuple[list[dict[str, Any]], int]:
        account = str(next(_accounts))
        sns = sns_backends[account][REGION]
        queue = sqs_backends[account][REGION].create_queue("inbox")
        topic = sns.create_topic("records")
        subscription = sns.subscribe(topic.arn, queue.queue_arn, "sqs")
        keys = sns_backends[DEFAULT_ACCOUNT_ID][REGION]._message_public_keys
        before = len(keys)
        made = [
            subscription.get_post_data(
                f"message {i} é", f"id-{i}", "subject", {"type": {"Type": "String", "Value": "x"}}
            )
            for i in range(3)
        ]
        for post in made:  # each signature verifies with the certificate its URL names
            pem = keys[post["SigningCertURL"].rsplit("/", 1)[1]]
            signed = (
                f"Message\n{post['Message']}\nMessageId\n{post['MessageId']}\n"
                f"Timestamp\n{post['Timestamp']}\nTopicArn\n{post['TopicArn']}\n"
                "Type\nNotification\n"
            )
            public = x509.load_pem_x509_certificate(pem).public_key()
            assert isinstance(public, rsa.RSAPublicKey)
            public.verify(
                base64.b64decode(post["Signature"]),
                signed.encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        return [
            {
                k: str(v).replace(account, "ACCOUNT")
                for k, v in post.items()
                if k not in ("Timestamp", "Signature", "SigningCertURL")
            }
            for post in made
        ], len(keys) - before

    with motos_own():
        expected, moto_certificates = envelopes()
    with patched():
        got, certificates = envelopes()
    assert got == expected
    assert expected[0]["Message"] == "message 0 é"
    assert moto_certificates == 3
    assert certificates == 1


# ------------------------------------------------------------------ through the emulator


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    """The emulator's DynamoDB with a `ledger` table keyed (pk, sk), as the ledger's is."""
    emulator = Emulator()
    try:
        ddb = client("dynamodb", emulator.start())
        keys = [("pk", "HASH"), ("sk", "RANGE")]
        ddb.create_table(
            TableName="ledger",
            KeySchema=[{"AttributeName": k, "KeyType": kind} for k, kind in keys],
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
            BillingMode="PAY_PER_REQUEST",
        )
        yield ddb
    finally:
        emulator.stop()


def entry_put(pk: str, sk: str) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": "ledger",
            "Item": {"pk": {"S": pk}, "sk": {"S": sk}, "read": {"N": "1"}},
            "ConditionExpression": "attribute_not_exists(#entry)",
            "ExpressionAttributeNames": {"#entry": "sk"},
        }
    }


def progress_update(pk: str, counters: dict[str, int]) -> dict[str, Any]:
    names = {"#src": "source"}
    values: dict[str, Any] = {":src": {"S": "s3://b/k"}}
    for i, (name, n) in enumerate(sorted(counters.items())):
        names[f"#a{i}"] = name
        values[f":a{i}"] = {"N": str(n)}
    adds = ", ".join(f"#a{i} :a{i}" for i in range(len(counters)))
    return {
        "Update": {
            "TableName": "ledger",
            "Key": {"pk": {"S": pk}, "sk": {"S": "progress"}},
            "UpdateExpression": f"SET #src = if_not_exists(#src, :src) ADD {adds}",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }


def progress(ddb: Any, pk: str) -> dict[str, Any]:
    key = {"pk": {"S": pk}, "sk": {"S": "progress"}}
    return dict(ddb.get_item(TableName="ledger", Key=key).get("Item") or {})


def test_transactions_sharing_an_update_text_add_to_their_own_counters(dynamodb: Any) -> None:
    pk = "tx-shared"
    dynamodb.transact_write_items(
        TransactItems=[entry_put(pk, "e1"), progress_update(pk, {"read": 3, "ok": 2})]
    )
    # The same expression text; its names now point at other counters.
    dynamodb.transact_write_items(
        TransactItems=[entry_put(pk, "e2"), progress_update(pk, {"read": 4, "bad": 2})]
    )
    item = progress(dynamodb, pk)
    assert (item["read"], item["ok"], item["bad"]) == ({"N": "7"}, {"N": "2"}, {"N": "2"})

    # A failed condition cancels the whole transaction, with a reason for each action, and
    # writes nothing: not the new entry, not the counters.
    with pytest.raises(ClientError) as failed:
        dynamodb.transact_write_items(
            TransactItems=[
                entry_put(pk, "e3"),
                entry_put(pk, "e1"),
                progress_update(pk, {"read": 100, "ok": 100}),
            ]
        )
    error = failed.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in error["CancellationReasons"]] == [
        "None",
        "ConditionalCheckFailed",
        "None",
    ]
    assert progress(dynamodb, pk) == item
    e3 = dynamodb.get_item(TableName="ledger", Key={"pk": {"S": pk}, "sk": {"S": "e3"}})
    assert "Item" not in e3


def test_an_update_the_emulator_has_seen_is_still_refused_for_what_its_call_gets_wrong(
    dynamodb: Any,
) -> None:
    pk = "refused"
    update = progress_update(pk, {"read": 1})["Update"]
    dynamodb.transact_write_items(TransactItems=[{"Update": update}])
    # The same text: an unused name, then a counter's name pointing at the key.
    unused = {
        **update,
        "ExpressionAttributeNames": {**update["ExpressionAttributeNames"], "#x": "x"},
    }
    on_key = {**update, "ExpressionAttributeNames": {"#src": "source", "#a0": "sk"}}
    for bad, message in ((unused, "unused"), (on_key, "part of the key")):
        with pytest.raises(ClientError, match=message):
            dynamodb.transact_write_items(TransactItems=[{"Update": bad}])
        with pytest.raises(ClientError, match=message):
            dynamodb.update_item(**bad)
    # A value of the wrong type for ADD, in a transaction: cancelled, nothing changed.
    wrong = {**update, "ExpressionAttributeValues": {":src": {"S": "x"}, ":a0": {"S": "one"}}}
    with pytest.raises(ClientError):
        dynamodb.transact_write_items(TransactItems=[entry_put(pk, "e-wrong"), {"Update": wrong}])
    assert progress(dynamodb, pk)["read"] == {"N": "1"}
    entry = dynamodb.get_item(TableName="ledger", Key={"pk": {"S": pk}, "sk": {"S": "e-wrong"}})
    assert "Item" not in entry


# ------------------------------------------------------------------ SQS


def test_queue_attributes_are_the_ones_moto_builds() -> None:
    from moto.core.utils import camelcase_to_underscores
    from moto.sqs.models import Queue, sqs_backends

    def attributes() -> list[dict[str, Any]]:
        account = str(next(_accounts))
        backend = sqs_backends[account][REGION]
        dlq = backend.create_queue("dead.fifo", FifoQueue="true")
        made = [
            backend.create_queue(
                "plain", MessageRetentionPeriod="120", VisibilityTimeout="7", DelaySeconds="0"
            ),
            backend.create_queue(
                "ordered.fifo",
                FifoQueue="true",
                ContentBasedDeduplication="true",
                KmsMasterKeyId="alias/k",
                RedrivePolicy=f'{{"deadLetterTargetArn": "{dlq.queue_arn}", "maxReceiveCount": 3}}',
            ),
        ]
        backend.send_message("plain", "m")
        return [
            {
                k: str(v).replace(account, "ACCOUNT")
                for k, v in q.attributes.items()
                if "Timestamp" not in k  # when the queue was made
            }
            for q in made
        ]

    with motos_own():
        expected = attributes()
    with patched():
        from moto.sqs import models

        names = [*Queue.BASE_ATTRIBUTES, *Queue.FIFO_ATTRIBUTES, *Queue.KMS_ATTRIBUTES]
        assert [vars(models)["camelcase_to_underscores"](n) for n in names * 2] == [
            camelcase_to_underscores(n) for n in names * 2
        ]
        got = attributes()
    assert got == expected
    assert expected[1]["ContentBasedDeduplication"] == "true"
    assert expected[0]["ApproximateNumberOfMessages"] == "1"


def test_receipt_handles_are_motos_shape_from_its_seeded_random(dynamodb: Any) -> None:
    from moto.moto_api._internal import mock_random

    sqs = client("sqs", dynamodb.meta.endpoint_url)
    url = sqs.create_queue(QueueName="handles")["QueueUrl"]
    for body in ("a", "b", "c"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    handles = [m["ReceiptHandle"] for m in got]
    assert len(set(handles)) == 3
    assert all(len(h) == 185 and h.isascii() and h.isalpha() and h.islower() for h in handles)
    for m in got:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (left["ApproximateNumberOfMessages"], left["ApproximateNumberOfMessagesNotVisible"]) == (
        "0",
        "0",
    )
    # moto's random, seeded (moto's `/moto-api/seed`), gives the same handles again.
    from moto.sqs import models

    drawn = []
    for _ in range(2):
        mock_random.seed(7)
        drawn.append([vars(models)["generate_receipt_handle"]() for _ in range(3)])
    assert drawn[0] == drawn[1]


def test_content_based_deduplication_still_drops_a_repeated_body(dynamodb: Any) -> None:
    sqs = client("sqs", dynamodb.meta.endpoint_url)
    url = sqs.create_queue(
        QueueName="dedup.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]
    for body in ("same", "same", "other"):
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="g")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in got] == ["same", "other"]
