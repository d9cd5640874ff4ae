"""Where each chunk went: one conditional item per chunk naming the curated object it is in.

The warehouse writes several chunks into one object, and a redelivered chunk can arrive in a
batch of other chunks, so an object's key cannot derive from one chunk id. Instead each
chunk is *placed* before the object is written: a conditional PutItem in the idempotency
table (`pk` = "consumer-warehouse#<chunk id>") records the object key chosen for it and who
chose it (`owner`), and lasts until `in_progress_expiry`, at least the rest of the placing
invocation's Lambda time. The argument for exactly once is in docs/decisions.md
(2026-12-04); this module only translates it into DynamoDB calls:

- `place`: ONE PutItem, if no placement exists (or its TTL passed); otherwise the existing
  placement comes back in the same call (`ReturnValuesOnConditionCheckFailure=ALL_OLD`). A
  placement whose write landed but whose answer was lost comes back as ours (same owner).
- `take_over`: replace a placement whose holder is gone (its expiry passed and its object
  does not hold the chunk), conditional on the old owner, so one taker wins.

A placement is never completed: the object's manifest says the chunk is there, so a placed
chunk costs one write unit, and a redelivery one refused write and one HEAD.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import TransientError
from sluice.idempotency import IdempotencyStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# The idempotency table's schema (infra/platform.yaml, IdempotencyTable): one string key.
KEY_ATTR = "pk"
OBJECT_ATTR = "object"
OWNER_ATTR = "owner"
IN_PROGRESS_EXPIRY_ATTR = "in_progress_expiry"  # epoch ms: the placing invocation is over
EXPIRES_AT_ATTR = "expires_at"  # epoch s: the table's TTL
# Longer than a message can live (SQS keeps one at most 14 days, a DLQ redrive included),
# so a placement is never forgotten while its chunk can still be delivered.
PLACEMENT_TTL_S = 15 * 24 * 3600
# Added to the invocation's remaining time: clock skew between the hosts that compare it.
EXPIRY_MARGIN_MS = 5_000
# Without a Lambda context: the longest a Lambda can run.
DEFAULT_REMAINING_MS = 15 * 60 * 1000


class PlacementStoreError(TransientError):
    """The placements could not be read or written: the chunk is retried."""


@dataclass(frozen=True, slots=True)
class Placement:
    """A chunk's placement: the object it goes to, who placed it, until when they may write.

    `held`: ours (we may write the chunk into `key`); else another invocation's, as found.
    """

    chunk_id: str
    key: str
    owner: str
    in_progress_expiry: int
    held: bool


class Placements:
    """Chunk placements in the idempotency table under `namespace` (the table, client and
    clock are the idempotency store's)."""

    def __init__(
        self,
        namespace: str,
        client: DynamoDBClient | None = None,
        *,
        table_name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = namespace
        self.table = IdempotencyStore(client, table_name=table_name, clock=clock)
        self.clock = clock

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def place(self, chunk_id: str, key: str, owner: str, remaining_ms: int | None) -> Placement:
        """Place the chunk into `key` unless it is placed already; the placement either way."""
        now_s = int(self.clock())
        return self._put(
            chunk_id,
            key,
            owner,
            remaining_ms,
            "attribute_not_exists(#pk) OR #expires_at < :now_s",
            {"#pk": KEY_ATTR, "#expires_at": EXPIRES_AT_ATTR},
            {":now_s": {"N": str(now_s)}},
        )

    def take_over(
        self, found: Placement, key: str, owner: str, remaining_ms: int | None
    ) -> Placement:
        """Place the chunk into `key` instead of `found` (whose holder is gone), if `found` is
        still the placement; else the placement that replaced it."""
        return self._put(
            found.chunk_id,
            key,
            owner,
            remaining_ms,
            "#owner = :old_owner",
            {"#owner": OWNER_ATTR},
            {":old_owner": {"S": found.owner}},
        )

    def _put(
        self,
        chunk_id: str,
        key: str,
        owner: str,
        remaining_ms: int | None,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
    ) -> Placement:
        now = self.clock()
        remaining = DEFAULT_REMAINING_MS if remaining_ms is None else max(0, remaining_ms)
        expiry = int(now * 1000) + remaining + EXPIRY_MARGIN_MS
        pk = f"{self.namespace}#{chunk_id}"
        try:
            self.table.client.put_item(
                TableName=self.table.table_name,
                Item={
                    KEY_ATTR: {"S": pk},
                    OBJECT_ATTR: {"S": key},
                    OWNER_ATTR: {"S": owner},
                    IN_PROGRESS_EXPIRY_ATTR: {"N": str(expiry)},
                    EXPIRES_AT_ATTR: {"N": str(int(now) + PLACEMENT_TTL_S)},
                },
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except aws.client_errors() as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise PlacementStoreError(f"could not place chunk {chunk_id}: {exc}") from exc
            old = getattr(exc, "response", {}).get("Item") or {}
            found = Placement(
                chunk_id,
                _string(old, OBJECT_ATTR),
                _string(old, OWNER_ATTR),
                int(_string(old, IN_PROGRESS_EXPIRY_ATTR, "N") or 0),
                held=False,
            )
            # Our own write whose answer was lost (the SDK retried it): ours.
            if found.owner == owner:
                return Placement(chunk_id, found.key, owner, found.in_progress_expiry, True)
            return found
        return Placement(chunk_id, key, owner, expiry, True)


def _string(item: dict[str, Any], name: str, kind: str = "S") -> str:
    value = item.get(name)
    return str(value.get(kind, "")) if isinstance(value, dict) else ""
