"""The records table adapter: one append-only item per record version, written in batches.

An entity's versions share a partition (`pk` = "<type>#<natural key>") and sort by `sk` =
"v#<ingested_at, normalised>#<record id>", so the newest version is the last in the
partition whatever the delivery order, and a redelivered record overwrites its own item with
the same content. The payload is stored as its compact JSON text, zlib-compressed into a
binary attribute (`payload_attribute`): exact numbers, no DynamoDB typing limits, and a 1 KB
record's item within one 1 KB write unit (the text alone made it two; docs/decisions.md).
Writes are `BatchWriteItem` (25 items a request) of attribute-value dicts built here, on the
low-level client; reads take the partition's last item (`latest`). Every reader decodes an
item with `decode_item`, which also reads the older payload forms (JSON text, typed map).
Items DynamoDB would refuse are refused here, per record, before batching.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.attributes import json_attribute, json_from_attribute
from sluice.config import get_settings
from sluice.errors import PermanentError, TransientError
from sluice.lazy import first_use
from sluice.observability import get_logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = get_logger(__name__)

# The table's schema (infra/platform.yaml, RecordsTable): pk and sk, both strings.
PARTITION_KEY = "pk"
SORT_KEY = "sk"
VERSION_PREFIX = "v#"

# DynamoDB limits: an item is at most 400 KB (names and values); a partition key value at
# most 2048 bytes, a sort key value 1024.
MAX_ITEM_BYTES = 400 * 1024
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024

Item = dict[str, Any]


class RecordsTableError(TransientError):
    """The records table could not be read or written (throttle, 5xx, permissions): retry."""


@lru_cache(maxsize=256)  # a chunk's records share their object's time
def sort_time(ingested_at: str) -> str:
    """`ingested_at` as it goes into the sort key: UTC, microseconds, a `Z`, fixed width.

    Stages write milliseconds (`utc_now_iso`, S3 LastModified), but an envelope only promises
    ISO 8601: "…06:00:00Z", "…06:00:00.000Z" and "…08:00:00+02:00" must sort as the times they
    are, so every form is parsed and written again as "YYYY-MM-DDTHH:MM:SS.ffffffZ" (a naive
    time is taken as UTC; digits past microseconds are dropped). Fixed width makes string
    order time order. `PermanentError` if it is not an ISO 8601 time.
    """
    try:
        at = datetime.fromisoformat(ingested_at)
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):
        shown = ingested_at if len(ingested_at) <= 64 else ingested_at[:64] + "…"
        raise PermanentError(f"ingested_at {shown!r} is not an ISO 8601 time") from None
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# Digits of the zero-padded ordinal in a version's sort key (a line number within an object).
ORDINAL_DIGITS = 10


def version_key(
    record_type: str, natural_key: str, ingested_at: str, record_id: str, ordinal: int = 0
) -> Item:
    """The item key of one record version: `v#<ingested_at>#<ordinal>#<record id>`.

    Versions sort in landing order: by the time their object landed (`ingested_at`), then
    by their line in it (the ordinal, zero-padded), so a key repeated later in the same
    object is newer. The record id keeps two records apart that share both (two objects
    landed in the same microsecond; landing order is not defined finer than that).
    """
    line = f"{ordinal:0{ORDINAL_DIGITS}d}"
    return {
        PARTITION_KEY: {"S": f"{record_type}#{natural_key}"},
        SORT_KEY: {"S": f"{VERSION_PREFIX}{sort_time(ingested_at)}#{line}#{record_id}"},
    }


def key_parts(pk: str, sk: str) -> dict[str, str]:
    """What a version's keys hold: its type, natural key and record id."""
    record_type, _, natural_key = pk.partition("#")
    return {"type": record_type, "natural_key": natural_key, "record_id": sk.rsplit("#", 1)[-1]}


def payload_attribute(value: Any) -> dict[str, Any]:
    """A JSON payload as the binary attribute `sluice.attributes` writes (compressed JSON)."""
    try:
        return json_attribute(value)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"payload cannot be stored as JSON: {exc}") from None


def payload_value(attribute: Mapping[str, Any]) -> Any:
    """The payload of a stored item, numbers as Decimal (exact), in any form it was written:
    compressed JSON (`B`), JSON text (`S`), or a typed map (the first items)."""
    return json_from_attribute(attribute)


def decode_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A stored version item (attribute-value dicts, as the low-level client returns it) as
    plain values: its attributes (numbers as Decimal), the payload decoded whatever its form,
    and what the keys hold (`type`, `natural_key`, `record_id`)."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    found = {
        name: payload_value(value) if name == "payload" else deserializer.deserialize(value)
        for name, value in item.items()
    }
    return {**found, **key_parts(str(found[PARTITION_KEY]), str(found[SORT_KEY]))}


def item_size(item: Mapping[str, Any]) -> int:
    """An upper bound of the item's size as DynamoDB counts it against 400 KB.

    DynamoDB's rules: attribute names and strings by UTF-8 bytes, binary by bytes, a number
    about one byte per two significant digits plus one (at most 21), null and booleans one
    byte, a list or map 3 bytes plus one per element. Numbers are counted as their text plus
    one, which is never less.
    """
    size = 0
    for name, value in item.items():
        size += _text_size(name)
        # The index's own items are strings and one binary: counted here without the
        # general walk (~10 us a record less); anything else by `_value_size`.
        if len(value) == 1:
            text = value.get("S")
            if text is not None:
                size += _text_size(str(text))
                continue
            data = value.get("B")
            if isinstance(data, bytes | bytearray):
                size += len(data)
                continue
        size += _value_size(value)
    return size


def _text_size(text: str) -> int:
    """UTF-8 bytes of `text` (its length when it is ASCII, without encoding it)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _value_size(value: Mapping[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(str(data).encode("utf-8"))
    if kind == "N":
        return min(len(str(data)) + 1, 21)
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + _value_size(v) for k, v in data.items())
    if kind == "SS":
        return sum(len(str(s).encode("utf-8")) for s in data)
    if kind == "NS":
        return sum(min(len(str(n)) + 1, 21) for n in data)
    if kind == "BS":
        return sum(len(b) for b in data)
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def check_item(item: Item) -> Item:
    """`item` if DynamoDB can store it, else `PermanentError` (keys or item too large).

    One refused item would fail its whole BatchWriteItem request, so the check is made per
    record, before batching, where the record can still be quarantined on its own.
    """
    pk, sk = item[PARTITION_KEY]["S"], item[SORT_KEY]["S"]
    if len(pk.encode("utf-8")) > MAX_PARTITION_KEY_BYTES:
        raise PermanentError(f"partition key is over {MAX_PARTITION_KEY_BYTES} bytes: {pk[:80]}…")
    if len(sk.encode("utf-8")) > MAX_SORT_KEY_BYTES:
        raise PermanentError(f"sort key is over {MAX_SORT_KEY_BYTES} bytes: {sk[:80]}…")
    size = item_size(item)
    if size > MAX_ITEM_BYTES:
        raise PermanentError(
            f"item for {pk} is about {size} bytes, over DynamoDB's {MAX_ITEM_BYTES}-byte limit"
        )
    return item


class RecordsTable:
    """Record versions in the records table (`names.records_table`).

    `sleep` waits between retries of unprocessed items (tests pass a recorder).
    """

    def __init__(
        self,
        client: DynamoDBClient | None = None,
        *,
        table_name: str | None = None,
        sleep: Callable[[float], None] | None = None,
        max_attempts: int = aws.BATCH_WRITE_ATTEMPTS,
    ):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = client
        self._table_name = table_name
        self._sleep = sleep or time.sleep
        self.max_attempts = max_attempts

    client: first_use[DynamoDBClient] = first_use(lambda self: aws.dynamodb())
    table_name: first_use[str] = first_use(lambda self: get_settings().names.records_table)

    def put_versions(self, items: Iterable[Item]) -> int:
        """Write every item (checked by `check_item`) with BatchWriteItem; the number written.

        Items with the same key are written once (BatchWriteItem refuses a request that
        repeats a key; the same key is the same record version), the first one kept. Raises
        `RecordsTableError` if a request fails or items stay unprocessed after
        `max_attempts`; items already written are then written again by the retry, unchanged.
        """
        unique: dict[tuple[str, str], Item] = {}
        for item in items:
            unique.setdefault((item[PARTITION_KEY]["S"], item[SORT_KEY]["S"]), item)
        requests = [{"PutRequest": {"Item": item}} for item in unique.values()]
        try:
            aws.batch_write(
                self.client,
                self.table_name,
                requests,
                max_attempts=self.max_attempts,
                sleep=self._sleep,
            )
        except aws.UnprocessedItemsError as exc:
            raise RecordsTableError(str(exc)) from exc
        except aws.client_errors() as exc:
            # ValidationException included: the items were checked one by one, so a refusal
            # here is not one record's fault; the chunk is retried, then dead-lettered, never
            # half-quarantined.
            raise RecordsTableError(f"could not write {len(requests)} item(s): {exc}") from exc
        return len(requests)

    def latest(self, record_type: str, natural_key: str) -> dict[str, Any] | None:
        """The newest version of an entity as plain values (numbers as Decimal), or None.

        One strongly consistent Query: the partition's last `v#` item, by `decode_item`.
        """
        try:
            response = self.client.query(
                TableName=self.table_name,
                KeyConditionExpression="#pk = :pk AND begins_with(#sk, :v)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY, "#sk": SORT_KEY},
                ExpressionAttributeValues={
                    ":pk": {"S": f"{record_type}#{natural_key}"},
                    ":v": {"S": VERSION_PREFIX},
                },
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            )
        except aws.client_errors() as exc:
            raise RecordsTableError(f"could not read {record_type}#{natural_key}: {exc}") from exc
        items = response.get("Items") or []
        return decode_item(items[0]) if items else None
