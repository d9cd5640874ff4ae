"""Reading the ledger table (Query for one correlation id, Scan for all, every page)."""

from __future__ import annotations

from typing import Any

from sluice_tools.ledger.reconcile import LedgerEntry


def read_ledger(client: Any, table: str, correlation_id: str | None = None) -> list[LedgerEntry]:
    """Every entry of `table` (a DynamoDB client), or only those of `correlation_id`."""
    args: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    operation = client.scan
    if correlation_id is not None:
        operation = client.query
        args.update(
            KeyConditionExpression="#c = :c",
            ExpressionAttributeNames={"#c": "correlation_id"},
            ExpressionAttributeValues={":c": {"S": correlation_id}},
        )
    entries: list[LedgerEntry] = []
    while True:
        page = operation(**args)
        entries.extend(LedgerEntry.from_item(item) for item in page.get("Items") or [])
        last = page.get("LastEvaluatedKey")
        if not last:
            return entries
        args["ExclusiveStartKey"] = last
