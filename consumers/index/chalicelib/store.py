"""The records table adapter: a conditional put that never lets an older record win.

Last writer by `ingested_at`, then by record id, so the outcome does not depend on delivery
order, and a redelivered record costs one refused write.
"""

from __future__ import annotations

import decimal
import json
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.config import get_settings
from sluice.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# The table's schema (infra/platform.yaml, RecordsTable): pk = "<type>#<natural key>".
PARTITION_KEY = "pk"
SORT_KEY = "sk"
LATEST = "latest"

CONDITION = (
    "attribute_not_exists(pk) OR ingested_at < :at OR (ingested_at = :at AND record_id < :rid)"
)


class RecordsTableError(TransientError):
    """The records table could not be written (throttle, 5xx, permissions): retry the chunk."""


def item_key(record_type: str, natural_key: str) -> dict[str, Any]:
    return {PARTITION_KEY: {"S": f"{record_type}#{natural_key}"}, SORT_KEY: {"S": LATEST}}


def to_attribute(value: Any) -> dict[str, Any]:
    """A JSON value as a DynamoDB attribute; floats become Decimal via a JSON round trip."""
    from boto3.dynamodb.types import TypeSerializer

    try:
        exact = json.loads(json.dumps(value, allow_nan=False), parse_float=decimal.Decimal)
        return dict(TypeSerializer().serialize(exact))
    except (TypeError, ValueError, decimal.DecimalException) as exc:
        raise PermanentError(f"payload cannot be stored in DynamoDB: {exc}") from None


class RecordsTable:
    """Latest-state items in the records table (`names.records_table`)."""

    def __init__(self, client: DynamoDBClient | None = None, *, table_name: str | None = None):
        self._client = client
        self._table_name = table_name

    @property
    def client(self) -> DynamoDBClient:
        if self._client is None:
            self._client = aws.dynamodb()
        return self._client

    @property
    def table_name(self) -> str:
        if self._table_name is None:
            self._table_name = get_settings().names.records_table
        return self._table_name

    def put_latest(self, key: dict[str, Any], attributes: dict[str, Any]) -> bool:
        """Store the item unless the table holds a newer (or this very) record; True if stored.

        `attributes` must hold `ingested_at` and `record_id` as string attributes.
        """
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={**attributes, **key},
                ConditionExpression=CONDITION,
                ExpressionAttributeValues={
                    ":at": attributes["ingested_at"],
                    ":rid": attributes["record_id"],
                },
            )
        except aws.client_errors() as exc:
            code = aws.error_code(exc)
            if code == "ConditionalCheckFailedException":
                return False
            if code == "ValidationException":
                # e.g. an item over 400 KB: no retry can store it.
                raise PermanentError(f"records table refused the item: {exc}") from exc
            raise RecordsTableError(f"could not write {key[PARTITION_KEY]['S']}: {exc}") from exc
        return True
