"""Reading what the ledger reconciles: the ledger table, the landing bucket, the claims."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sluice.idempotency import EXPIRES_AT_ATTR, IN_PROGRESS_EXPIRY_ATTR, KEY_ATTR, STATUS_ATTR
from sluice.ledger import SORT_KEY, is_entry
from sluice_tools.ledger.reconcile import (
    COMPLETED,
    INCOMING_PREFIX,
    INPROGRESS,
    ClaimState,
    LandedObject,
    LedgerEntry,
)
from sluice_tools.stages import INGEST


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
    # The objects' progress items and ingest's "done" markers are not stage entries.
    return [
        entry
        for item in _pages(operation, args)
        if is_entry(str((item.get(SORT_KEY) or {}).get("S", "")))
        for entry in LedgerEntry.all_from_item(item)
    ]


def _pages(operation: Any, args: dict[str, Any]) -> Iterable[dict[str, Any]]:
    while True:
        page = operation(**args)
        yield from page.get("Items") or []
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        args["ExclusiveStartKey"] = last


def landed_objects(s3: Any, bucket: str, prefix: str = INCOMING_PREFIX) -> list[LandedObject]:
    """Every version of every object under `prefix`, oldest first within a key (a bucket
    never versioned lists each object once, as version "null"); delete markers are not
    objects."""
    found: list[LandedObject] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions") or []:
            version = v.get("VersionId")
            found.append(
                LandedObject(
                    bucket=bucket,
                    key=str(v["Key"]),
                    etag=str(v.get("ETag") or "").strip('"'),
                    version_id=None if version in (None, "null") else str(version),
                    landed_at=v["LastModified"],
                )
            )
    return found[::-1]  # S3 lists a key's versions newest first


def read_claims(client: Any, table: str) -> list[ClaimState]:
    """The idempotency items the ledger needs: INPROGRESS claims of every stage and ingest's
    claims on objects (COMPLETED says ingest finished the object). One filtered Scan."""
    args: dict[str, Any] = {
        "TableName": table,
        "ConsistentRead": True,
        "FilterExpression": "#s = :inprogress OR (begins_with(#pk, :ingest) AND #s = :completed)",
        "ProjectionExpression": "#pk, #s, #ipe, #exp",
        "ExpressionAttributeNames": {
            "#pk": KEY_ATTR,
            "#s": STATUS_ATTR,
            "#ipe": IN_PROGRESS_EXPIRY_ATTR,
            "#exp": EXPIRES_AT_ATTR,
        },
        "ExpressionAttributeValues": {
            ":inprogress": {"S": INPROGRESS},
            ":completed": {"S": COMPLETED},
            ":ingest": {"S": f"{INGEST}#"},
        },
    }

    def n(item: dict[str, Any], name: str) -> int:
        return int((item.get(name) or {}).get("N", "0"))

    return [
        ClaimState(
            pk=str(item[KEY_ATTR]["S"]),
            status=str((item.get(STATUS_ATTR) or {}).get("S", "")),
            in_progress_expiry=n(item, IN_PROGRESS_EXPIRY_ATTR),
            expires_at=n(item, EXPIRES_AT_ATTR),
        )
        for item in _pages(client.scan, args)
    ]
