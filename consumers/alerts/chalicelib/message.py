"""The text of an alert: short, human-readable, one per record; no I/O here."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from sluice.envelope import Chunk, Record

SUBJECT_MAX = 100  # SNS subject limit


def _amount(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return f"{Decimal(str(value)):,.2f}"
    except InvalidOperation:
        return None


def alert_text(record: Record, chunk: Chunk) -> str:
    """E.g. "High-value order o-123: 1,250.00 EUR from customer c-9 (correlation corr-1)"."""
    payload = record.payload if isinstance(record.payload, dict) else {}
    tail = f"(correlation {chunk.correlation_id}, record {record.id})"
    if chunk.type == "order":
        order_id = payload.get("order_id") or record.id
        amount = _amount(payload.get("amount"))
        text = f"High-value order {order_id}"
        if amount is not None:
            text += f": {amount} {payload.get('currency') or ''}".rstrip()
        if payload.get("customer_id"):
            text += f" from customer {payload['customer_id']}"
        return f"{text} {tail}"
    key = payload.get(f"{chunk.type}_id") or payload.get("id") or record.id
    return f"High-priority {chunk.type} {key} {tail}"


def alert_subject(record: Record, chunk: Chunk) -> str:
    """An ASCII subject line within SNS's 100 characters."""
    text = f"Sluice alert: {chunk.type} {record.id}"
    return text.encode("ascii", "replace").decode("ascii")[:SUBJECT_MAX]
