"""The text of an alert: short, human-readable, one per record; no I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from sluice.envelope import Chunk, Record
from sluice.registry import load_registry

SUBJECT_MAX = 100  # SNS subject limit


def _amount(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return f"{Decimal(str(value)):,.2f}"
    except InvalidOperation:
        return None


def alert_text(record: Record, chunk: Chunk) -> str:
    """E.g. "High-value order o-123: 1,250.00 EUR from customer c-9 (correlation corr-1, …)".

    Worded from the type's registry entry: its natural key names the record, and its
    optional `alert` block (type.json) gives the title, an amount (with currency) and a
    party ("from customer c-9"). A type without one: "High-priority <type> <key>".
    """
    payload = record.payload if isinstance(record.payload, dict) else {}
    tail = f"(correlation {chunk.correlation_id}, record {record.id})"
    registry = load_registry()
    spec = registry.get(chunk.type) if chunk.type in registry else None
    wording: Mapping[str, str] = spec.extras.get("alert", {}) if spec is not None else {}
    key = (payload.get(spec.natural_key) if spec is not None else None) or record.id
    text = f"{wording.get('title') or f'High-priority {chunk.type}'} {key}"
    amount = _amount(payload.get(wording["amount_field"])) if "amount_field" in wording else None
    if amount is not None:
        currency = payload.get(wording["currency_field"]) if "currency_field" in wording else None
        text += f": {amount} {currency or ''}".rstrip()
    party = payload.get(wording["party_field"]) if "party_field" in wording else None
    if party:
        text += f" from {wording.get('party_label') or wording['party_field']} {party}"
    return f"{text} {tail}"


def alert_subject(record: Record, chunk: Chunk) -> str:
    """An ASCII subject line within SNS's 100 characters."""
    text = f"Sluice alert: {chunk.type} {record.id}"
    return text.encode("ascii", "replace").decode("ascii")[:SUBJECT_MAX]
