"""moto's server, made to behave as the local runtime needs (patches, undone by `unquiet`).

What each patch is for is in `quiet`'s docstring; `sluice_tools.motocompat` checks before
patching that moto is the version these were written for and that every patched name is
still where it was.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sluice_tools.motocompat import guard

# Every (owner, attribute) `quiet` replaces; `guard` checks they still exist before patching.
PATCHED = (
    ("moto.sqs.models:Queue", "lambda_event_source_mappings"),
    ("moto.s3.notifications", "_invoke_awslambda"),
    ("moto.s3.notifications", "_get_s3_event"),
    ("moto.awslambda.models:LambdaBackend", "send_sns_message"),
    ("moto.s3.models:FakeBucket", "get_permission"),
    ("moto.backends", "list_of_moto_modules"),
    ("moto.dynamodb.models:DynamoDBBackend", "transact_write_items"),
    ("moto.dynamodb.responses:DynamoHandler", "transact_write_items"),
    ("moto.sqs.models:SQSBackend", "is_message_valid_based_on_retention_period"),
    ("moto.sqs.models:Queue", "messages"),
    ("moto.sqs.models:Queue", "approximate_number_of_messages"),
    ("moto.sqs.models:Queue", "approximate_number_of_messages_not_visible"),
    ("moto.sqs.models:Queue", "approximate_number_of_messages_delayed"),
    ("moto.core.responses", "method_names_from_class"),
    ("moto.core.responses:BaseResponse", "_enrich_response"),
    ("moto.dynamodb.responses:DynamoHandler", "parse_parameters"),
    ("moto.dynamodb.responses:DynamoHandler", "serialized"),
    ("moto.dynamodb.models.dynamo_type:Item", "__init__"),
    ("moto.dynamodb.comparisons", "create_condition_expression_parser"),
    ("moto.dynamodb.models", "create_condition_expression_parser"),
    ("moto.dynamodb.responses", "create_condition_expression_parser"),
    ("moto.iam.models:IAMBackend", "get_role_by_arn"),
    ("moto.moto_server.werkzeug_app:DomainDispatcherApplication", "get_backend_for_host"),
    ("moto.sqs.models:Queue", "wait_for_messages"),
    ("moto.sqs.models:SQSBackend", "receive_message"),
    ("moto.events.models:Rule", "send_to_targets"),
    ("moto.dynamodb.parsing.expressions:UpdateExpressionParser", "make"),
    ("moto.dynamodb.parsing.validators:Validator", "__init__"),
    ("moto.dynamodb.parsing.validators:UpdateExpressionValidator", "validate"),
    ("moto.dynamodb.parsing.ast_nodes:DepthFirstTraverser", "traverse"),
    ("moto.sqs.models", "generate_receipt_handle"),
    ("moto.sqs.models", "camelcase_to_underscores"),
    ("moto.core.exceptions:JsonRESTError", "__init__"),
    ("moto.sns.models:Subscription", "get_post_data"),
    ("moto.dynamodb.responses:DynamoHandler", "batch_write_item"),
    ("moto.sqs.models:Message", "body_md5"),
)

log = logging.getLogger("sluice.local")
_patch_lock = threading.Lock()
_ABSENT = object()
_originals: list[tuple[Any, str, Any]] = []


class _Discarded(dict[str, Any]):
    """A dict that forgets what is stored in it (see `quiet`)."""

    def __setitem__(self, key: str, value: Any) -> None:
        pass


def _no_mappings(_queue: Any) -> dict[str, Any]:
    return _Discarded()


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


def _plain_http_only(statement: Any) -> bool:
    """A statement that applies only to requests without TLS (`aws:SecureTransport` false)."""
    condition = statement.get("Condition") if isinstance(statement, dict) else None
    if not isinstance(condition, dict):
        return False
    secure = (condition.get("Bool") or {}).get("aws:SecureTransport")
    return str(secure).lower() == "false"


def _bucket_permission(bucket: Any, action: str, resource: str) -> Any:
    """moto's bucket policy check, with TLS-only statements understood.

    moto 5.2.5 does not know the `Bool` operator, so it applies a TLS-only bucket policy's
    `Deny ... aws:SecureTransport false` to every request: every PutObject is 403. The
    loopback endpoint stands in for AWS's TLS endpoint, so such statements do not apply.
    """
    from moto.iam.access_control import IAMPolicy, PermissionResult

    if bucket.policy is None:
        return PermissionResult.NEUTRAL
    doc = json.loads(bucket.policy.decode())
    statements = doc.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    doc["Statement"] = [st for st in statements or [] if not _plain_http_only(st)]
    if not doc["Statement"]:
        return PermissionResult.NEUTRAL
    return IAMPolicy(json.dumps(doc)).is_action_permitted(action, resource)


_transaction_lock = threading.Lock()
_TRANSACT_OPERATIONS = frozenset({"ConditionCheck", "Put", "Delete", "Update"})


def _transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
    """moto's TransactWriteItems, all or nothing, without copying whole tables.

    moto 5.2.5 deep-copies each table a transaction touches, once per action, so that it can
    put the copy back if an action fails. With 50 actions on the shared idempotency table
    that is ~300 ms a call; the copy races with other threads' writes ("dictionary changed
    size during iteration"); and putting the copy back undoes every write other functions
    made to the table meanwhile. Here every condition is checked first and the actions are
    applied only if all hold; if applying one fails, the items already changed get their
    previous state back. Transactions are serialised with each other (on AWS they are
    isolated); the checks and errors are moto's own.
    """
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with _transaction_lock:
        planned: list[tuple[str, dict[str, Any], dict[str, Any], Any]] = []
        reasons: list[tuple[str, str, Any] | tuple[None, None, None]] = []
        seen: set[tuple[str, str]] = set()
        conditions: dict[str, Any] = {}
        for entry in transact_items:
            if len(entry) != 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(entry.items()))
            if op_type not in _TRANSACT_OPERATIONS:
                raise ValueError("Unsupported transaction operation")
            table = backend.get_table(op["TableName"])
            if op_type == "Put":
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            identity = (op["TableName"], json.dumps(key, sort_keys=True))
            if identity in seen:
                raise MultipleTransactionsException()
            seen.add(identity)
            current = backend.get_item(op["TableName"], key)
            condition = op.get("ConditionExpression")
            holds = True
            if condition is not None:
                # The actions of one transaction often share a condition (a batch of
                # claims): parse each distinct one once.
                names, values = (
                    op.get("ExpressionAttributeNames"),
                    op.get("ExpressionAttributeValues"),
                )
                parsed_key = json.dumps([condition, names, values], sort_keys=True)
                parsed = conditions.get(parsed_key)
                if parsed is None:
                    parsed = conditions[parsed_key] = get_filter_expression(
                        condition, names, values
                    )
                holds = parsed.expr(current)
            if holds:
                reasons.append((None, None, None))
            else:
                old = None
                if (
                    current is not None
                    and op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
                ):
                    old = current.to_json()["Attributes"]
                reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
            before = None if current is None else current.to_json()["Attributes"]
            planned.append((op_type, op, key, before))
        if any(code is not None for code, _, _ in reasons):
            raise TransactionCanceledException(reasons)
        applied: list[tuple[str, dict[str, Any], Any]] = []
        try:
            for op_type, op, key, before in planned:
                _apply_transact_action(backend, op_type, op, key)
                applied.append((op["TableName"], key, before))
        except Exception:
            for table_name, key, before in reversed(applied):
                if before is None:
                    backend.delete_item(table_name, key)
                else:
                    backend.put_item(table_name, before)
            raise


# DynamoDB keeps a TransactWriteItems ClientRequestToken for 10 minutes.
TRANSACTION_TOKEN_TTL_S = 600.0
_token_lock = threading.Lock()
_tokens: dict[str, tuple[str, float]] = {}  # token -> (digest of the items, when it ran)


def _transact_with_token(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """moto's TransactWriteItems handler, honouring `ClientRequestToken` as DynamoDB does.

    moto 5.2.5 ignores the token, so a retried transaction whose first answer was lost is
    applied (or cancelled) a second time. DynamoDB instead answers a repeat of a successful
    call with the same token and the same items with success and no change, for 10 minutes,
    and refuses the token with other items (`IdempotentParameterMismatchException`). A call
    that failed leaves no token behind: its retry runs anew.
    """

    def handler(self: Any) -> Any:
        token = self.body.get("ClientRequestToken")
        if not token:
            return original(self)
        from moto.core.exceptions import JsonRESTError
        from moto.core.responses import ActionResult

        items = json.dumps(self.body.get("TransactItems"), sort_keys=True)
        digest = hashlib.sha256(items.encode("utf-8")).hexdigest()
        with _token_lock:  # check, run and record as one step: a concurrent repeat waits
            now = time.monotonic()
            for old in [t for t, (_, at) in _tokens.items() if now - at > TRANSACTION_TOKEN_TTL_S]:
                del _tokens[old]
            seen = _tokens.get(str(token))
            if seen is not None:
                if seen[0] != digest:
                    raise JsonRESTError(
                        "IdempotentParameterMismatchException",
                        "The request uses the same client token as a previous, but non-identical "
                        "request.",
                    )
                return ActionResult({"ConsumedCapacity": [], "ItemCollectionMetrics": {}})
            result = original(self)
            _tokens[str(token)] = (digest, now)
            return result

    return handler


_sequencer_lock = threading.Lock()
_sequencer = [0]


def _s3_event_with_version(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's S3 notification body, with the object's `versionId` and a `sequencer` as S3 sends.

    moto 5.2.5 leaves both out. Without the version id, an event for a versioned bucket names
    only "the key with this ETag": once the key is overwritten, the first version cannot be
    read by its event (it is not gone, just not the latest) and was skipped. S3 sends
    `versionId` for every object of a versioned bucket; `sequencer` orders the events of one
    key (a hex string, compared as such after padding).
    """

    def build(event_name: str, bucket: Any, key: Any, notification_id: str) -> Any:
        body = original(event_name, bucket, key, notification_id)
        version = getattr(key, "version_id", None)
        with _sequencer_lock:
            _sequencer[0] += 1
            sequencer = f"{time.time_ns():016X}{_sequencer[0]:08X}"
        for record in body.get("Records") or []:
            obj = record.get("s3", {}).get("object")
            if obj is None:
                continue
            if version and version != "null":
                obj["versionId"] = str(version)
            obj.setdefault("sequencer", sequencer)
        return body

    return build


def _apply_transact_action(
    backend: Any, op_type: str, op: dict[str, Any], key: dict[str, Any]
) -> None:
    """One checked action of a transaction, applied as moto applies it."""
    table_name = op["TableName"]
    names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
    if op_type == "Put":
        backend.put_item(
            table_name,
            op["Item"],
            expression_attribute_names=names,
            expression_attribute_values=values,
        )
    elif op_type == "Delete":
        backend.delete_item(
            table_name, key, expression_attribute_names=names, expression_attribute_values=values
        )
    elif op_type == "Update":
        backend.update_item(
            table_name,
            key,
            update_expression=op["UpdateExpression"],
            expression_attribute_names=names,
            expression_attribute_values=values,
        )


def _within_retention(backend: Any, queue_name: str, message: Any) -> bool:
    """moto's retention check of a received message, reading only the retention period.

    moto 5.2.5 builds every attribute of the queue for each message it hands out, its
    approximate counts included, each a scan of every message with two clock reads apiece:
    receiving from a queue n messages deep costs O(n) per message.
    """
    from moto.core.utils import unix_time

    queue = backend.get_queue(queue_name)
    retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
    return bool(retain_until > unix_time())


def _body_md5(message: Any) -> str:
    """moto's `Message.body_md5`, computed once per body instead of on every read.

    moto hashes the body each time it answers with it: the send's `MD5OfMessageBody`, then
    every ReceiveMessage of it again (a chunk of ~200 KB: ~0.3 ms each time). A message sent
    through the API is now hashed once, at its send; one SNS delivers is hashed at its first
    receive (moto answers from a copy of the message, which does not keep the digest). The
    digest is kept beside the body it was made from and made anew if the body is another
    object.
    """
    from moto.utilities.utils import md5_hash

    body = message.body
    known = message.__dict__.get("_sluice_body_md5")
    if known is not None and known[0] is body:
        return str(known[1])
    md5 = md5_hash()
    md5.update(body.encode("utf-8"))
    digest = str(md5.hexdigest())
    message.__dict__["_sluice_body_md5"] = (body, digest)
    return digest


def _now_ms() -> float:
    from moto.core.utils import unix_time_millis

    return float(unix_time_millis())


def _visible_messages(queue: Any) -> list[Any]:
    """`Queue.messages`: visible and not delayed, against one clock reading for the queue."""
    now = _now_ms()
    return [m for m in queue._messages if now > m.visible_at and not now < m.delayed_until]


def _count_visible(queue: Any) -> int:
    return len(_visible_messages(queue))


def _count_not_visible(queue: Any) -> int:
    now = _now_ms()
    return sum(1 for m in queue._messages if not now > m.visible_at)


def _count_delayed(queue: Any) -> int:
    now = _now_ms()
    return sum(1 for m in queue._messages if now < m.delayed_until)


def _method_names_once() -> Callable[[object], frozenset[str]]:
    """moto's `method_names_from_class`, remembered per class (classes do not change)."""
    import inspect

    known: dict[object, frozenset[str]] = {}

    def method_names(clazz: object) -> frozenset[str]:
        names = known.get(clazz)
        if names is None:
            names = frozenset(n for n, _ in inspect.getmembers(clazz, inspect.isfunction))
            known[clazz] = names
        return names

    return method_names


def _enrich_response(headers: dict[str, str], body: Any) -> tuple[dict[str, str], Any]:
    """moto's `_enrich_response`, with its RequestId regex run only on bodies that have one.

    moto runs a look-behind regex over every response body to put the request id into XML
    responses, JSON ones included: a ReceiveMessage of ten large chunks is a megabyte scanned
    for nothing.
    """
    from moto.utilities.aws_headers import gen_amzn_requestid_long

    if "status" in headers:
        headers["status"] = str(headers["status"])
    request_id = gen_amzn_requestid_long(headers)
    if isinstance(body, str) and "<RequestId>" in body:
        body = _REQUEST_ID.sub(request_id, body)
    return headers, body


_REQUEST_ID = re.compile(r"(?<=<RequestId>).*(?=<\/RequestId>)")
# DynamoDB operations whose requests hold only JSON's own types once blobs and nulls are ruled
# out, so that moto's shape-driven parse gives back what `json.loads` does.
_PLAIN_DYNAMODB_ACTIONS = frozenset(
    {
        "BatchGetItem",
        "BatchWriteItem",
        "DeleteItem",
        "GetItem",
        "PutItem",
        "Query",
        "TransactGetItems",
        "TransactWriteItems",
        "UpdateItem",
    }
)
# Bodies holding `null` take moto's parse (it drops null members); a string that merely
# contains the word does too, which costs time, never correctness. A substring test: a regex
# over a 40 KB body took 1 ms, this 0.03 ms.
_NOT_PLAIN = b"null"
_BLOB_TOKENS = (b'"B"', b'"BS"')


class _NotPlain(Exception):
    """A blob that is not a string (or a list of strings): left to moto's parse."""


def _with_blobs(obj: dict[str, Any]) -> dict[str, Any]:
    """`json.loads`' object hook: a binary attribute value (`{"B": text}`, `{"BS": [text]}`)
    as moto's parse gives it, the base64 text decoded to bytes (with moto's own decoder,
    which refuses what moto's parse refuses).

    Only an attribute value is a one-member object keyed `B` or `BS` whose value is a string
    or a list: an attribute *named* `B` holds an attribute value (an object), and members of
    the request itself are never so named.
    """
    if len(obj) == 1:
        if "B" in obj and type(obj["B"]) is str:
            return {"B": base64.b64decode(obj["B"])}
        if "BS" in obj and type(obj["BS"]) is list:
            if not all(type(v) is str for v in obj["BS"]):
                raise _NotPlain
            return {"BS": [base64.b64decode(v) for v in obj["BS"]]}
    return obj


def _dynamodb_parameters(handler: Any, request: Any) -> None:
    """DynamoDB's request parameters without moto's shape-driven parse, where it changes nothing.

    For the item operations the parse walks every attribute value of every item only to
    rebuild the same dicts (a fifth of a BatchWriteItem's time in moto). It differs from
    `json.loads` only for blobs (`B`, `BS`: base64 to bytes, done here by `_with_blobs`),
    `null` members (dropped) and members the operation does not know (dropped); a request
    with `null` in it takes moto's own parse, and moto reads no unknown member.
    """
    from moto.core.responses import BaseResponse

    if handler._get_action() in _PLAIN_DYNAMODB_ACTIONS:
        body = request.data
        if body and _NOT_PLAIN not in body:
            if any(token in body for token in _BLOB_TOKENS):
                try:
                    handler.params = json.loads(body, object_hook=_with_blobs)
                    return
                except (ValueError, _NotPlain):  # binascii.Error is a ValueError
                    pass  # moto's parse answers it as it would
            else:
                # Parsed already by the IAM check (iam.PARSED_BODY) when it read the names.
                parsed = getattr(request, "environ", {}).get("sluice.iam.body")
                handler.params = parsed if isinstance(parsed, dict) else json.loads(body)
                return
    BaseResponse.parse_parameters(handler, request)


def _plain_json(value: Any) -> bool:
    """Only strings, numbers, booleans, lists and dicts (no None, bytes, dates) all through."""
    kind = type(value)
    if kind is dict:
        return all(_plain_json(v) for v in value.values())
    if kind is list:
        return all(_plain_json(v) for v in value)
    return kind in _JSON_SCALARS


_JSON_SCALARS = frozenset({str, int, float, bool})
_output_members: dict[str, frozenset[str]] = {}


def _dynamodb_serialized(handler: Any, action_result: Any) -> Any:
    """DynamoDB's item operation results as `json.dumps`, where moto's serializer would agree.

    moto's serializer walks the output shape of every response, looking each member up
    through its alias providers (7% of the emulator's time at 100k records). For the item
    operations moto builds results that already are the output: AWS member names, DynamoDB
    JSON values. `json.dumps` gives the same document whenever every top-level key is an
    output member and the values are plain JSON: moto's serializer drops `None` members and
    base64-encodes bytes, so results with either take it, as do errors.
    """
    from moto.core.responses import BaseResponse
    from moto.core.utils import get_service_model

    action = handler._get_action()
    result = action_result.result
    if action in _PLAIN_DYNAMODB_ACTIONS and type(result) is dict and _plain_json(result):
        members = _output_members.get(action)
        if members is None:
            model = get_service_model("dynamodb")
            output = model.operation_model(action).output_shape
            members = frozenset(output.members) if output is not None else frozenset()
            _output_members[action] = members
        if result.keys() <= members:
            version = get_service_model("dynamodb").metadata["jsonVersion"]
            headers = {"Content-Type": f"application/x-amz-json-{version}"}
            headers.update(handler.response_headers)
            return 200, headers, json.dumps(result)
    return BaseResponse.serialized(handler, action_result)


ITEM_SIZE_LIMIT = 405000  # moto's own figure for DynamoDB's 400 KB (see LimitedSizeDict)


def _new_item(item: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
    """moto's `Item.__init__`, with the item's size added up once instead of once per attribute.

    moto's `LimitedSizeDict` sums the sizes of every attribute already stored each time one
    is added, so building an item of n attributes sizes n²/2 values (each a UTF-8 encode of
    its text): a third of a BatchWriteItem's time in moto. Sizes are never negative, so
    checking the sum once refuses exactly the items the per-attribute checks refuse.
    Attributes changed later (UpdateItem) still go through moto's own check. A scalar or set
    attribute becomes its `DynamoType` without `DynamoType.__init__`'s type tests (the same
    two fields it sets); lists and maps take `__init__`, which converts their members. A
    string's or number's size is taken as `DynamoType.size` takes it (UTF-8 length, text
    length) without its five type tests: with them, sizing was half of building an item.
    """
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict
    from moto.dynamodb.models.utilities import bytesize

    item.hash_key = hash_key
    item.range_key = range_key
    typed: dict[str, Any] = {}
    size = 0
    for key, value in attrs.items():
        kind = next(iter(value)) if type(value) is dict and len(value) == 1 else None
        if kind is None or kind in _NESTED_TYPES:
            converted = DynamoType(value)
            value_size = converted.size()
        else:
            raw = value[kind]
            converted = object.__new__(DynamoType)
            converted.type = kind
            converted.value = raw
            if kind == "S" and type(raw) is str:  # `DynamoType.size` of a string: its UTF-8
                value_size = len(raw.encode("utf-8"))
            elif kind == "N" and type(raw) is str:  # of a number: its text's length
                value_size = len(raw)
            else:
                value_size = converted.size()
        typed[key] = converted
        size += (len(key.encode("utf-8")) if type(key) is str else bytesize(key)) + value_size
    if size > ITEM_SIZE_LIMIT:
        raise ItemSizeTooLarge
    stored = LimitedSizeDict.__new__(LimitedSizeDict)
    dict.update(stored, typed)
    item.attrs = stored


_NESTED_TYPES = frozenset({"L", "M"})

# moto's message for an empty key in a BatchWriteItem put (its `batch_write_item` passes it).
_BATCH_EMPTY_KEY = (
    "One or more parameter values are not valid. The AttributeValue for a key attribute "
    "cannot contain an empty string value. Key: {}"
)


def _scalar_size(kind: str, raw: Any) -> int | None:
    """`DynamoType.size` of a scalar attribute value as BatchWriteItem's JSON gives it; None
    for any other value (left to moto)."""
    kind_of = type(raw)
    if kind == "S" and kind_of is str:
        return len(raw.encode("utf-8"))
    if kind == "N" and kind_of is str:
        return len(raw)
    if kind == "B" and kind_of is bytes:
        return len(raw)
    if kind == "BOOL" and kind_of is bool:
        return 1
    return None


class _TableKeys:
    """What BatchWriteItem's checks read of a table, read once per request, not per item."""

    def __init__(self, table: Any) -> None:
        from moto.dynamodb.limits import HASH_KEY_MAX_LENGTH, RANGE_KEY_MAX_LENGTH

        self.table = table
        self.checked = frozenset(table.attribute_keys) | frozenset(
            key["AttributeName"] for index in table.global_indexes for key in index.schema
        )
        self.sized = [(name, HASH_KEY_MAX_LENGTH) for name in table.hash_key_names] + [
            (name, RANGE_KEY_MAX_LENGTH) for name in table.range_key_names
        ]

    def empty_key(self, item: Any) -> bool:
        """Whether moto's `validate_put_has_empty_keys` could refuse `item`: a key attribute
        (of the table or an index) that is an S or B "", or anything its reading of every
        attribute's first type and value would fail on."""
        if type(item) is not dict:
            return True
        for value in item.values():
            if type(value) is not dict or not value:
                return True
        for name in self.checked:
            value = item.get(name)
            if value is not None:
                kind, raw = next(iter(value.items()))
                if kind in ("S", "B") and raw == "":
                    return True
        return False

    def put(self, item: dict[str, Any]) -> None:
        """`Table.put_item(item)` (no condition), skipping what cannot change its outcome.

        For an item of scalar attributes (S, N, B, BOOL) in a table without a stream, moto's
        put checks the key attributes' presence, types and sizes, walks every attribute for
        type errors none of these can have, looks the current item up for a condition there
        is none of, builds the item (`Item.__init__`, sized as `_new_item` sizes it) and
        stores it. Here the attributes are typed and sized in one pass and the key checks
        made on the raw values (sizes as `DynamoType.size` takes them); if any check would
        fail, or the item or table is of any other kind, moto's own put runs and answers.
        The item is stored as moto stores it.
        """
        from moto.dynamodb.exceptions import ItemSizeTooLarge
        from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

        table = self.table
        if table.stream_shard is not None:
            table.put_item(item)
            return
        typed: dict[str, Any] = {}
        size = 0
        for name, value in item.items():
            if type(value) is not dict or len(value) != 1:
                table.put_item(item)
                return
            kind, raw = next(iter(value.items()))
            value_size = _scalar_size(kind, raw)
            if value_size is None:
                table.put_item(item)
                return
            converted = object.__new__(DynamoType)
            converted.type = kind
            converted.value = raw
            typed[name] = converted
            size += len(name.encode("utf-8")) + value_size
        hash_attr, range_attr = table.hash_key_attr, table.range_key_attr
        hash_typed = typed.get(hash_attr)
        range_typed = typed.get(range_attr) if range_attr is not None else None
        if (
            hash_typed is None
            or hash_typed.type != table.hash_key_type
            or (
                range_attr is not None
                and (range_typed is None or range_typed.type != table.range_key_type)
            )
        ):
            table.put_item(item)  # moto's error for a missing or mistyped key
            return
        for name, limit in self.sized:
            found = typed.get(name)
            if found is not None and (_scalar_size(found.type, found.value) or 0) > limit:
                table.put_item(item)  # moto's error for a key too long
                return
        if size > ITEM_SIZE_LIMIT:
            raise ItemSizeTooLarge
        hash_value = _copy_scalar(hash_typed)
        range_value = _copy_scalar(range_typed) if range_typed is not None else None
        stored = object.__new__(Item)
        stored.hash_key = hash_value
        stored.range_key = range_value
        attrs = LimitedSizeDict.__new__(LimitedSizeDict)
        dict.update(attrs, typed)
        stored.attrs = attrs
        if range_value is not None:
            table.items[hash_value][range_value] = stored
        else:
            table.items[hash_value] = stored


def _copy_scalar(value: Any) -> Any:
    """A new `DynamoType` of the same scalar (moto's put keys the table with its own)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    copied = object.__new__(DynamoType)
    copied.type = value.type
    copied.value = value.value
    return copied


def _put_fingerprint(item: Any) -> Any:
    """What two puts moto's duplicate check finds equal (same JSON dump) must share: the same
    attribute names in order and the same scalar values. Unequal fingerprints, unequal dumps."""
    if type(item) is not dict:
        return None
    parts: list[Any] = [tuple(item)]
    for value in item.values():
        if type(value) is dict and len(value) == 1:
            raw = next(iter(value.values()))
            if type(raw) is str:
                parts.append(raw)
                if len(parts) > 3:  # three values tell apart the puts of one batch
                    break
    return tuple(parts)


def _batch_write_item(handler: Any) -> Any:
    """moto's `DynamoHandler.batch_write_item`, its per-item work cut to what can matter.

    moto 5.2.5 spends ~70 us on each put of a BatchWriteItem: its duplicate check writes every
    item as JSON and compares the texts pairwise, the empty-key check reads every attribute,
    and each put walks the item for type errors, builds its key values twice over and looks
    the current item up for a condition a batch put never has. Here the duplicate check
    compares the JSON texts only of puts whose names and scalar values agree (others cannot
    be equal), moto's empty-key check runs only on an item with an empty or unreadable key
    attribute, and each put takes `_TableKeys.put`. The order of the checks and puts, and
    every error, are moto's (its functions raise them); deletes are moto's.
    """
    from moto.core.responses import ActionResult
    from moto.dynamodb.exceptions import MockValidationException
    from moto.dynamodb.models.utilities import dynamo_json_dump
    from moto.dynamodb.responses import validate_put_has_empty_keys

    table_batches = handler.body["RequestItems"]
    backend = handler.dynamodb_backend
    put_requests: list[tuple[_TableKeys, dict[str, Any]]] = []
    delete_requests: list[tuple[str, Any]] = []
    for table_name, table_requests in table_batches.items():
        keys = _TableKeys(backend.get_table(table_name))
        for table_request in table_requests:
            # moto's reading, its IndexError for an empty request included.
            request_type = list(table_request.keys())[0]  # noqa: RUF015
            request = list(table_request.values())[0]  # noqa: RUF015
            if request_type == "PutRequest":
                item = request["Item"]
                if keys.empty_key(item):
                    validate_put_has_empty_keys(item, keys.table, custom_error_msg=_BATCH_EMPTY_KEY)
                put_requests.append((keys, item))
            elif request_type == "DeleteRequest":
                delete_requests.append((table_name, request["Key"]))
    if handler._contains_duplicates([dynamo_json_dump(k) for _, k in delete_requests]) or (
        _may_repeat([item for _, item in put_requests])
        and handler._contains_duplicates([dynamo_json_dump(item) for _, item in put_requests])
    ):
        raise MockValidationException("Provided list of item keys contains duplicates")
    for keys, item in put_requests:
        keys.put(item)
    for table_name, key in delete_requests:
        backend.delete_item(table_name, key)
    return ActionResult(
        {
            "ConsumedCapacity": [
                {"TableName": name, "CapacityUnits": 1.0, "Table": {"CapacityUnits": 1.0}}
                for name in table_batches
            ],
            "ItemCollectionMetrics": {},
            "UnprocessedItems": {},
        }
    )


def _may_repeat(items: list[Any]) -> bool:
    """Whether two of `items` could be duplicates in moto's sense (see `_put_fingerprint`)."""
    seen: set[Any] = set()
    for item in items:
        fingerprint = _put_fingerprint(item)
        if fingerprint is None or fingerprint in seen:
            return True
        seen.add(fingerprint)
    return False


CONDITION_CACHE_SIZE = 512
_conditions_lock = threading.Lock()
_conditions: dict[str, tuple[Any, list[str], list[str]]] = {}


class _ParsedCondition:
    """A `ConditionExpressionParser` whose `parse` gives the tree parsed before for the same input.

    moto parses a condition expression each time it meets one: TransactWriteItems' handler
    parses every action's condition to validate it, and the backend once more to check it;
    a transaction of 50 claims sharing one condition lexed it 100 times (8% of the
    emulator's time). The tree depends only on the expression, the names and the values
    (its nodes are read, never changed, when an item is checked), so the same three give
    the same tree and the same names and values found. A condition that fails to parse is
    not remembered: it raises moto's error every time.
    """

    def __init__(
        self, expression: str | None, names: dict[str, str] | None, values: dict[str, Any] | None
    ) -> None:
        self.condition_expression = expression
        self.expression_attribute_names = names
        self.expression_attribute_values = values
        self.expr_attr_names_found: list[str] = []
        self.expr_attr_values_found: list[str] = []

    def parse(self) -> Any:
        from moto.dynamodb.comparisons import ConditionExpressionParser, OpDefault

        names, values = self.expression_attribute_names, self.expression_attribute_values
        if not self.condition_expression:
            return OpDefault(None, None)  # type: ignore[arg-type]  # moto's own, always holds
        key = json.dumps([self.condition_expression, names, values], sort_keys=True, default=repr)
        with _conditions_lock:
            found = _conditions.get(key)
        if found is None:
            parser = ConditionExpressionParser(self.condition_expression, names, values)
            found = (parser.parse(), parser.expr_attr_names_found, parser.expr_attr_values_found)
            with _conditions_lock:
                if len(_conditions) >= CONDITION_CACHE_SIZE:
                    _conditions.clear()
                _conditions[key] = found
        tree, names_found, values_found = found
        self.expr_attr_names_found = list(names_found)
        self.expr_attr_values_found = list(values_found)
        return tree


UPDATE_CACHE_SIZE = 512
_updates_lock = threading.Lock()
_updates: dict[str, _ParsedUpdate] = {}  # expression text -> its parse
_updates_by_tree: dict[int, _ParsedUpdate] = {}  # id(tree) -> the same entries


class _ParsedUpdate:
    """One update expression's tree, parsed once, with a pickle to copy it from and the
    (names, key attributes) it has passed moto's item-independent checks with."""

    def __init__(self, tree: Any) -> None:
        import pickle

        self.tree = tree
        try:
            self.pickled: bytes | None = pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # a tree pickle cannot hold: copied as moto does
            self.pickled = None
        self.passed: set[tuple[str, tuple[str, ...]]] = set()


def _parse_update_once(original: Callable[[str], Any]) -> Callable[[Any, str], Any]:
    """moto's `UpdateExpressionParser.make`, giving the tree parsed before for the same text.

    moto 5.2.5 parses an UpdateItem's expression twice (the handler, to find the names it
    uses, then the backend), and a transaction's Update twice too: ~0.6 ms for the ledger's
    progress update (6 SETs, ~8 ADDs) each time. The tree depends on the text alone, and moto
    never changes it: its validator works on a deep copy (see `_validator_init`) and the
    handlers only read it. A text that fails to parse is not remembered (moto's error each
    time).
    """

    def make(_cls: Any, expression: str) -> Any:
        with _updates_lock:
            found = _updates.get(expression)
        if found is None:
            found = _ParsedUpdate(original(expression))
            with _updates_lock:
                if len(_updates) >= UPDATE_CACHE_SIZE:
                    _updates.clear()
                    _updates_by_tree.clear()
                _updates[expression] = found
                _updates_by_tree[id(found.tree)] = found
        return found.tree

    return make


def _remembered_update(tree: Any) -> _ParsedUpdate | None:
    with _updates_lock:
        found = _updates_by_tree.get(id(tree))
    return found if found is not None and found.tree is tree else None


def _validator_init(
    validator: Any,
    expression: Any,
    expression_attribute_names: dict[str, str],
    expression_attribute_values: dict[str, dict[str, Any]],
    item: Any,
    table: Any,
) -> None:
    """moto's `Validator.__init__`, copying a remembered tree from its pickle.

    The validator replaces nodes of the tree it checks (values and paths by what they
    resolve to), so moto deep-copies the tree first: `copy.deepcopy` of the progress
    update's ~120 nodes took 0.65 ms, unpickling the same tree 0.1 ms. Both give a tree
    of new nodes equal to the original; a tree not parsed by `_parse_update_once` (or one
    pickle refused) is deep-copied as moto does.
    """
    import copy
    import pickle

    validator.expression_attribute_names = expression_attribute_names
    validator.expression_attribute_values = expression_attribute_values
    validator.item = item
    validator.table = table
    validator.processors = validator.get_ast_processors()
    remembered = _remembered_update(expression)
    validator._sluice_update = remembered
    if remembered is not None and remembered.pickled is not None:
        validator.node_to_validate = pickle.loads(remembered.pickled)  # our own bytes
    else:
        validator.node_to_validate = copy.deepcopy(expression)


def _item_independent() -> tuple[type, ...]:
    from moto.dynamodb.parsing.validators import (
        ActionCountValidator,
        OverlappingPathsValidator,
        UpdateHashRangeKeyValidator,
    )

    return (ActionCountValidator, OverlappingPathsValidator, UpdateHashRangeKeyValidator)


def _validate_update(validator: Any) -> Any:
    """moto's `Validator.validate` for update expressions, skipping checks already passed.

    Of moto's ten passes over the tree, the first three (at most one clause of each kind,
    no overlapping paths, no key attribute updated) read only the untouched tree, the
    attribute names and the table's key attributes, and change nothing: ~1.3 ms of the
    progress update's validation, the action count check walking the tree once per node.
    A remembered tree that passed them with the same names and key attributes passes them
    again, so they are skipped; every other pass (values, the item's attributes, types,
    sizes) runs each time, and any tree or names not seen passing run all ten.
    """
    remembered: _ParsedUpdate | None = getattr(validator, "_sluice_update", None)
    node = validator.node_to_validate
    passed_key: tuple[str, tuple[str, ...]] | None = None
    skip: tuple[type, ...] = ()
    if remembered is not None:
        names = json.dumps(validator.expression_attribute_names or {}, sort_keys=True)
        passed_key = (names, tuple(validator.table.table_key_attrs))
        if passed_key in remembered.passed:
            skip = _item_independent()
    for processor in validator.processors:
        if skip and isinstance(processor, skip):
            continue
        node = processor.traverse(node)
    if remembered is not None and passed_key is not None:
        remembered.passed.add(passed_key)  # every pass held, the three among them
    return node


def _traverse(traverser: Any, node: Any) -> Any:
    """moto's `DepthFirstTraverser.traverse`, its node types looked up once per walk.

    moto's walk builds the traverser's map of node types to handlers twice for every node
    it visits (once to test the node, once to process it); the map is fixed for a traverser
    (bound methods of it). The walk, the order, the child hook and the replacement of
    processed nodes in their parent are moto's.
    """
    # moto's parsing modules are untyped: mypy sees none of their names.
    from moto.dynamodb.parsing.ast_nodes import Node  # type: ignore[attr-defined]

    handlers = list(traverser._processing_map().items())
    kinds = tuple(kind for kind, _ in handlers)
    before_child = traverser.pre_processing_of_child

    def walk(current: Any, child_id: int) -> Any:
        if isinstance(current, Node):
            parent = current.parent
            if current.children is not None:
                for i, child in enumerate(current.children):
                    before_child(current, i)
                    walk(child, i)
            if isinstance(current, kinds):
                current = next(h for k, h in handlers if isinstance(current, k))(current)
                current.parent = parent
                if parent:
                    parent.children[child_id] = current
        return current

    return walk(node, -1)


RECEIPT_HANDLE_LENGTH = 185  # moto's (sqs.utils.generate_receipt_handle)


def _receipt_handle() -> str:
    """moto's receipt handle (185 random lowercase letters from moto's own, seedable random),
    drawn in one call instead of one `choice` per letter: 54 -> 16 us a received message."""
    import string

    from moto.moto_api._internal import mock_random

    return "".join(mock_random.choices(string.ascii_lowercase, k=RECEIPT_HANDLE_LENGTH))


def _underscored_once(original: Callable[[str], str]) -> Callable[[str], str]:
    """moto's `camelcase_to_underscores`, as SQS's models call it, remembered per name.

    moto 5.2.5 builds every attribute of a queue to read one (`ContentBasedDeduplication`) on
    each message it enqueues, converting ~14 attribute names character by character (~7 us
    each): ~0.1 ms per message, 3 ms of a PublishBatch of 10 to three queues. The conversion
    is a pure function of a name, and SQS's names are a fixed few.
    """
    known: dict[str, str] = {}

    def underscored(argument: str) -> str:
        found = known.get(argument)
        if found is None:
            found = original(argument)
            if len(known) < 1024:  # attribute names, not data: a few dozen at most
                known[argument] = found
        return found

    return underscored


def _json_error_init(
    error: Any, error_type: str, message: str, _: str = "", **_kwargs: Any
) -> None:
    """moto's `JsonRESTError.__init__`, without the XML body it overwrites.

    moto 5.2.5 builds every JSON error (`_RESTError.__init__`) by first rendering an XML
    error document with xmltodict, then replacing it with the JSON one: ~30 us an error.
    DynamoDB's update expressions raise and catch such errors for control flow (an
    `if_not_exists` or `ADD` of an attribute the item does not have yet raises
    `ProvidedKeyDoesNotExist` internally), eight per progress update of a new object. The
    fields set are those moto ends up with: the werkzeug exception's own, the type, the
    message, the JSON body and its content type.
    """
    from werkzeug.exceptions import HTTPException

    HTTPException.__init__(error)
    error.error_type = error_type
    error.message = message
    error.description = json.dumps({"__type": error_type, "message": message})
    error.content_type = "application/json"


def _sns_post_data(
    subscription: Any,
    message: str,
    message_id: str,
    subject: str | None,
    message_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """moto's `Subscription.get_post_data`, with one signing certificate per subscription.

    moto 5.2.5 makes a new X.509 certificate (an RSA signature of its own) for every message
    it delivers in an SNS envelope, and keeps every one in memory: ~1 ms and a PEM per
    message. The subscription's key is the same each time (moto caches it per
    subscription), so here its certificate is made once and its URL reused; each message is
    still signed with that key (SignatureVersion 2, SHA256), the signature verifiable with
    the certificate the URL names, and the envelope is moto's, field for field.
    """
    import base64
    from datetime import timedelta

    import cryptography.x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.x509 import Name, NameAttribute
    from cryptography.x509.oid import NameOID
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.core.utils import iso_8601_datetime_with_milliseconds, utcnow
    from moto.moto_api._internal import mock_random
    from moto.sns.models import sns_backends

    key = subscription.private_key()
    region = subscription.topic.sns_backend.region_name
    with _sns_signing_lock:
        key_name = subscription.__dict__.get("_sluice_signing_key_name")
        if key_name is None:
            issuer = [
                NameAttribute(NameOID.COUNTRY_NAME, "US"),
                NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon"),
                NameAttribute(NameOID.COMMON_NAME, "Amazon RSA 2048 M01"),
            ]
            cert = (
                cryptography.x509.CertificateBuilder()
                .subject_name(Name([NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")]))
                .issuer_name(Name(issuer))
                .public_key(key.public_key())
                .serial_number(cryptography.x509.random_serial_number())
                .not_valid_before(utcnow())
                .not_valid_after(utcnow() + timedelta(days=365))
                .sign(key, hashes.SHA256())
            )
            key_name = f"SimpleNotificationService-{str(mock_random.uuid4()).replace('-', '')}.pem"
            # Where moto keeps it: the default account's backend of the region (the PEM is
            # fetched without credentials).
            sns_backends[DEFAULT_ACCOUNT_ID][region]._message_public_keys[key_name] = (
                cert.public_bytes(serialization.Encoding.PEM)
            )
            subscription.__dict__["_sluice_signing_key_name"] = key_name
    timestamp = iso_8601_datetime_with_milliseconds()
    to_sign = (
        f"Message\n{message}\nMessageId\n{message_id}\nTimestamp\n{timestamp}\n"
        f"TopicArn\n{subscription.topic.arn}\nType\nNotification\n"
    )
    signature = key.sign(to_sign.encode("UTF-8"), padding.PKCS1v15(), hashes.SHA256())
    post_data: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": subscription.topic.arn,
        "Message": message,
        "Timestamp": timestamp,
        "SignatureVersion": "2",
        "Signature": base64.b64encode(signature).decode("utf-8"),
        "SigningCertURL": f"https://sns.{region}.amazonaws.com/{key_name}",
        "UnsubscribeURL": (
            "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn="
            f"arn:aws:sns:us-east-1:{subscription.account_id}:{subscription.topic.name}"
            ":2bcfbf39-05c3-41de-beaa-fcfcc21c8f55"
        ),
    }
    if subject:
        post_data["Subject"] = subject
    if message_attributes:
        post_data["MessageAttributes"] = message_attributes
    return post_data


_sns_signing_lock = threading.Lock()


def _role_by_arn(backend: Any, arn: str) -> Any:
    """moto's `IAMBackend.get_role_by_arn`, remembering which role has which ARN.

    moto looks the role of a request's credentials up on every request (to record when the
    role was last used) by building the ARN of every role in the account until one matches:
    2% of the emulator's time with the deploy's roles. A remembered role is taken only while
    it is still the account's role of that id and still has that ARN (a deleted or
    re-created role is looked up again); the error for an unknown ARN is moto's.
    """
    from moto.iam.exceptions import NotFoundException

    known: dict[str, Any] = backend.__dict__.setdefault("_sluice_roles_by_arn", {})
    role = known.get(arn)
    if role is not None and backend.roles.get(role.id) is role and role.arn == arn:
        return role
    for role in backend.get_roles():
        if role.arn == arn:
            known[arn] = role
            return role
    raise NotFoundException(f"Role {arn} not found")


def _backend_for_host_once(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's `get_backend_for_host`, remembered per host name.

    moto matches the host it infers for every request against each backend's URL patterns in
    turn (12-30 us a request); the patterns are fixed when the dispatcher is made, so a host
    maps to the same backend for its whole life. A host that maps to none is not remembered.
    """

    def backend_for_host(dispatcher: Any, host: str | None) -> Any:
        known: dict[str, Any] = dispatcher.__dict__.setdefault("_sluice_backends", {})
        found = known.get(host) if host is not None else None
        if found is None:
            found = original(dispatcher, host)
            if found is not None and host is not None:
                known[host] = found
        return found

    return backend_for_host


DYNAMODB_TARGET_PREFIX = "DynamoDB_20120810."


def backend_app(service: str) -> Any:
    """moto's `create_backend_app(service)`; DynamoDB's answers its API calls without Flask.

    Every request to moto's server goes through Flask: a request context, URL routing to the
    one DynamoDB view, `convert_to_flask_response`, after-request hooks (CORS), then
    werkzeug's response. For DynamoDB, whose every API call is a POST to `/` naming its
    operation in `X-Amz-Target`, that is 10-15% of a BatchWriteItem's CPU in the emulator.
    Here such a call goes straight to what the view calls: moto's request normalisation and
    recorder, then `DynamoHandler.dispatch` with the same URL and headers, its answer made
    the werkzeug response the view makes (a `ClientError` answered 400 as the view does, a
    werkzeug HTTP error by that error's own response as Flask does), with the
    `Access-Control-Allow-Origin: *` flask-cors adds. Anything else (other paths, requests
    with an `Origin`, the `moto-api`) takes the app's own Flask path.
    """
    from moto.moto_server.werkzeug_app import create_backend_app

    app = create_backend_app(service)  # type: ignore[arg-type]
    if service == "dynamodb":
        app.wsgi_app = _direct_dynamodb(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _direct_dynamodb(flask_wsgi: Callable[..., Any]) -> Callable[..., Any]:
    from botocore.exceptions import ClientError
    from moto.core.request import normalize_request
    from moto.dynamodb.responses import DynamoHandler
    from moto.moto_api import recorder
    from moto.moto_server.werkzeug_app import BackendRequest
    from moto.settings import DISABLE_GLOBAL_CORS
    from werkzeug.exceptions import HTTPException
    from werkzeug.wrappers import Response

    cors = not DISABLE_GLOBAL_CORS

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        target = environ.get("HTTP_X_AMZ_TARGET") or ""
        if not (
            target.startswith(DYNAMODB_TARGET_PREFIX)
            and environ.get("PATH_INFO") == "/"
            and environ.get("REQUEST_METHOD") == "POST"
            and "HTTP_ORIGIN" not in environ  # a browser's: flask-cors answers it
        ):
            return flask_wsgi(environ, start_response)
        request = normalize_request(BackendRequest(environ))
        try:
            recorder._record_request(request)
            try:
                result = DynamoHandler.dispatch(request, request.raw_url, dict(request.headers))
            except ClientError as exc:
                result = 400, {}, exc.response["Error"]["Message"]
        except HTTPException as error:
            return error(environ, start_response)
        if len(result) == 3:
            status, headers, content = result
        else:
            status, headers, content = 200, {}, result
        response = Response(response=content, status=status, headers=headers)
        if cors:  # what flask-cors adds to a response to a request without Origin
            response.headers["Access-Control-Allow-Origin"] = "*"
        return response(environ, start_response)

    return app


def _listed_once(list_modules: Callable[[], Iterable[str]]) -> Callable[[], tuple[str, ...]]:
    names = tuple(list_modules())
    return lambda: names


# ---------------------------------------------------------------- long polls cut at stop

_stopping = threading.Event()


class _LongPollCut(Exception):
    """A long poll's wait ended by `cut_long_polls` (caught by the ReceiveMessage wrapper)."""


def _wait_unless_stopping(queue: Any, timeout: int) -> None:
    """moto's wait for a message to arrive, which also ends when the runtime stops."""
    with queue._messages_lock:
        queue._messages_lock.wait_for(lambda: queue.messages or _stopping.is_set(), timeout)
    if _stopping.is_set():
        raise _LongPollCut


def _receive_unless_stopping(receive: Callable[..., Any]) -> Callable[..., Any]:
    def receive_message(backend: Any, *args: Any, **kwargs: Any) -> Any:
        # moto waits only after a pass that found nothing (any message ends the poll at
        # the top of its loop), so a cut poll has nothing received to lose: it answers empty.
        try:
            return receive(backend, *args, **kwargs)
        except _LongPollCut:
            return []

    return receive_message


def cut_long_polls(on: bool) -> None:
    """While on, every ReceiveMessage waiting for messages answers at once with none, and
    none starts waiting: the runtime's pollers stop without sitting out their 2 s waits."""
    if not on:
        _stopping.clear()
        return
    _stopping.set()
    from moto.sqs.models import sqs_backends

    for _account, _region, backend in sqs_backends.iter_backends():
        for queue in list(getattr(backend, "queues", {}).values()):
            with queue._messages_lock:
                queue._messages_lock.notify_all()


# ---------------------------------------------------------------- EventBridge targets

EventTargetHandler = Callable[[Any, dict[str, Any], dict[str, Any]], None]
"""(moto's rule, one of its targets, the event as EventBridge built it) → deliver it."""

_event_targets: EventTargetHandler | None = None
# Targets moto cannot deliver to (it raises NotImplementedError for them): the runtime's.
HANDED_OVER_SERVICES = frozenset({"lambda", "sns"})


def route_event_targets(handler: EventTargetHandler | None) -> None:
    """Hand rules' Lambda and SNS targets to `handler` (None: they are logged and dropped)."""
    global _event_targets
    _event_targets = handler


def _send_to_targets(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's `Rule.send_to_targets`, as EventBridge decides what a rule delivers.

    A rule delivers nothing while DISABLED, and a rule with a schedule and no event pattern
    matches no event (moto takes its empty pattern for "match everything"). Lambda and SNS
    targets go to the handler `route_event_targets` set; every other target to moto, one
    target at a time (a copy of the rule holding only that target), input transformers as
    moto applies them, and without one the whole event with every field EventBridge sends.
    """

    def send_to_targets(rule: Any, event: dict[str, Any], transform_input: bool = True) -> None:
        if rule.state != "ENABLED":
            return
        if rule.scheduled_expression and not rule.event_pattern.get_pattern():
            return
        if not rule.event_pattern.matches_event(event):
            return
        for target in list(rule.targets):
            service = str(target.get("Arn", "")).split(":")[2:3]
            if service and service[0] in HANDED_OVER_SERVICES:
                if _event_targets is None:
                    log.warning(
                        "event %s for %s dropped: no local runtime delivers to it",
                        event.get("id"),
                        target.get("Arn"),
                    )
                    continue
                _event_targets(rule, target, copy.deepcopy(event))
                continue
            alone = copy.copy(rule)
            alone.targets = [target]
            if transform_input and not target.get("InputTransformer"):
                # The whole event, as EventBridge sends it: moto's default template would
                # drop `account`; `ingestion-time` is moto's own.
                plain = {k: v for k, v in event.items() if k != "ingestion-time"}
                original(alone, copy.deepcopy(plain), False)
            else:
                original(alone, copy.deepcopy(event), transform_input)

    return send_to_targets


def quiet() -> None:
    """Stop moto's attempts to run Lambda functions, in this process (undo: `unquiet`).

    moto 5.2.5 keeps, per SQS queue, the event source mappings on it
    (`Queue.lambda_event_source_mappings`, written by `create_event_source_mapping`) and on
    every SendMessage receives from the queue and "invokes" the function, which fails
    without Docker: receive counts rise and messages reach the DLQ for no reason. That dict
    is used for nothing else, so the queue gets one that never holds anything; the mappings
    themselves (`list_event_source_mappings`, enabled) are untouched, so `doctor` sees them
    as deployed. S3 events carry the object's version id and a sequencer, as S3's do
    (`_s3_event_with_version`). S3 (`_invoke_awslambda`) and SNS (`send_sns_message`)
    deliveries to Lambda become no-ops: the runtime delivers those events through SQS queues
    of its own. Bucket policies get a check that understands TLS-only statements
    (`_bucket_permission`).

    One patch is for speed only: moto's server finds the backend of every request by listing
    its own package directory (`list_of_moto_modules`: a listdir and ~200 isdir calls, under
    the dispatcher's lock); the list never changes while the process runs, so it is read
    once. TransactWriteItems gets an implementation that does not copy whole tables
    (`_transact_write_items`: moto's is slow, and a cancelled transaction undoes other
    functions' writes) and honours `ClientRequestToken` (`_transact_with_token`), and
    ReceiveMessage a retention check that does not scan the queue for each message
    (`_within_retention`). moto reads the clock (building two datetimes) for every message
    each time it counts a queue's messages, which SendMessage and GetQueueAttributes do
    several times a call: at 500 messages deep a SendMessage cost ~15 ms. The counts and
    `Queue.messages` read the clock once per pass instead (`_visible_messages` and friends).
    Three more are for the cost of every request: the list of a response class's methods is
    made once per class, not by `inspect` on each request (`_method_names_once`); the
    RequestId regex runs only on bodies that hold one (`_enrich_response`); DynamoDB's item
    operations skip a parse that gives back their JSON unchanged (`_dynamodb_parameters`)
    and a serializer that gives back their result unchanged (`_dynamodb_serialized`). A new
    DynamoDB item is sized once, not once per attribute (`_new_item`). A condition expression
    is parsed once per distinct expression, names and values, not once per action and check
    (`_ParsedCondition`), and the role behind a request's credentials is found by its ARN
    without building every role's ARN (`_role_by_arn`). An update expression is parsed once
    per text (`_parse_update_once`), its tree copied for validation from a pickle
    (`_validator_init`), moto's item-independent checks skipped for a tree that passed them
    with the same names and key attributes (`_validate_update`), and moto's tree walks look
    their node types up once per walk, not twice per node (`_traverse`). SQS draws a receipt
    handle in one call (`_receipt_handle`) and converts each attribute name once
    (`_underscored_once`). moto's JSON errors skip the XML body they overwrite
    (`_json_error_init`): update expressions raise them internally. SNS signs its envelopes
    with one certificate per subscription, not one made per message (`_sns_post_data`).
    BatchWriteItem puts scalar items without moto's per-item checks that cannot fail for
    them (`_batch_write_item`), and an SQS message's body is hashed once (`_body_md5`).
    A stopping runtime ends its pollers' long polls at once (`cut_long_polls`). EventBridge
    rules skip events while disabled or schedule-only, and hand Lambda and SNS targets
    (which moto refuses) to the runtime (`_send_to_targets`, `route_event_targets`).
    """
    with _patch_lock:
        if _originals:
            return
        guard(PATCHED)
        from moto import backends
        from moto.awslambda.models import LambdaBackend
        from moto.core import responses
        from moto.core.exceptions import JsonRESTError
        from moto.dynamodb import comparisons
        from moto.dynamodb import models as dynamodb_models
        from moto.dynamodb import responses as dynamodb_responses
        from moto.dynamodb.models import DynamoDBBackend
        from moto.dynamodb.models.dynamo_type import Item
        from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser  # type: ignore[attr-defined]
        from moto.dynamodb.parsing.expressions import (  # type: ignore[attr-defined]
            UpdateExpressionParser,
        )
        from moto.dynamodb.parsing.validators import UpdateExpressionValidator, Validator
        from moto.dynamodb.responses import DynamoHandler
        from moto.events.models import Rule
        from moto.iam.models import IAMBackend
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication
        from moto.s3 import notifications
        from moto.s3.models import FakeBucket
        from moto.sns.models import Subscription
        from moto.sqs import models as sqs_models
        from moto.sqs.models import Message, Queue, SQSBackend

        patches: list[tuple[Any, str, Any]] = [
            (Queue, "lambda_event_source_mappings", property(_no_mappings, _ignore)),
            (notifications, "_invoke_awslambda", _ignore),
            (notifications, "_get_s3_event", _s3_event_with_version(notifications._get_s3_event)),
            (LambdaBackend, "send_sns_message", _ignore),
            (FakeBucket, "get_permission", _bucket_permission),
            (backends, "list_of_moto_modules", _listed_once(backends.list_of_moto_modules)),
            (DynamoDBBackend, "transact_write_items", _transact_write_items),
            (
                DynamoHandler,
                "transact_write_items",
                _transact_with_token(DynamoHandler.transact_write_items),
            ),
            (SQSBackend, "is_message_valid_based_on_retention_period", _within_retention),
            (Queue, "messages", property(_visible_messages)),
            (Queue, "approximate_number_of_messages", property(_count_visible)),
            (Queue, "approximate_number_of_messages_not_visible", property(_count_not_visible)),
            (Queue, "approximate_number_of_messages_delayed", property(_count_delayed)),
            (responses, "method_names_from_class", _method_names_once()),
            (responses.BaseResponse, "_enrich_response", staticmethod(_enrich_response)),
            (DynamoHandler, "parse_parameters", _dynamodb_parameters),
            (DynamoHandler, "serialized", _dynamodb_serialized),
            (Item, "__init__", _new_item),
            (comparisons, "create_condition_expression_parser", _ParsedCondition),
            (dynamodb_models, "create_condition_expression_parser", _ParsedCondition),
            (dynamodb_responses, "create_condition_expression_parser", _ParsedCondition),
            (IAMBackend, "get_role_by_arn", _role_by_arn),
            (
                DomainDispatcherApplication,
                "get_backend_for_host",
                _backend_for_host_once(DomainDispatcherApplication.get_backend_for_host),
            ),
            (Queue, "wait_for_messages", _wait_unless_stopping),
            (SQSBackend, "receive_message", _receive_unless_stopping(SQSBackend.receive_message)),
            (Rule, "send_to_targets", _send_to_targets(Rule.send_to_targets)),
            (
                UpdateExpressionParser,
                "make",
                classmethod(_parse_update_once(UpdateExpressionParser.make)),
            ),
            (Validator, "__init__", _validator_init),
            (UpdateExpressionValidator, "validate", _validate_update),
            (DepthFirstTraverser, "traverse", _traverse),
            (sqs_models, "generate_receipt_handle", _receipt_handle),
            (
                sqs_models,
                "camelcase_to_underscores",
                _underscored_once(vars(sqs_models)["camelcase_to_underscores"]),
            ),
            (JsonRESTError, "__init__", _json_error_init),
            (Subscription, "get_post_data", _sns_post_data),
            (DynamoHandler, "batch_write_item", _batch_write_item),
            (Message, "body_md5", property(_body_md5)),
        ]
        for owner, name, value in patches:
            _originals.append((owner, name, owner.__dict__.get(name, _ABSENT)))
            setattr(owner, name, value)


def unquiet() -> None:
    """Give moto its own behaviour back (other in-process moto users, e.g. tests, expect it)."""
    with _patch_lock:
        while _originals:
            owner, name, value = _originals.pop()
            if value is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, value)
