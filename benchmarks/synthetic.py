"""Synthetic order records for the benchmarks: valid for cleanse's `order` schema, ~1 KB each.

Deterministic (seeded), written as JSON Lines; about 5% of orders are above 1,000, so nearly
every chunk splits into a high and a normal priority group and the alerts consumer gets some.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

RECORD_BYTES = 1024
CURRENCIES = ("EUR", "EUR", "EUR", "EUR", "USD", "USD", "USD", "GBP", "JPY", "ZAR")


def order(n: int, rng: random.Random, target: int = RECORD_BYTES) -> str:
    """One order as a JSON line of about `target` bytes (without the newline)."""
    customer = rng.randrange(100_000)
    doc = {
        "order_id": f"o-{n:09d}",
        "customer_id": f"c-{customer:06d}",
        "email": f"customer{customer}@example.com",
        "amount": round(rng.uniform(1200, 5000) if rng.random() < 0.05 else rng.uniform(1, 900), 2),
        "currency": rng.choice(CURRENCIES),
        "created_at": f"2026-11-27T{rng.randrange(24):02d}:{rng.randrange(60):02d}:"
        f"{rng.randrange(60):02d}.{rng.randrange(1000):03d}Z",
        "items": [],
    }
    items: list[dict[str, object]] = doc["items"]  # type: ignore[assignment]
    line = json.dumps(doc, separators=(",", ":"))
    while len(line) < target - 70:
        items.append(
            {
                "sku": f"sku-{rng.randrange(10**8):08d}-{rng.randrange(10**6):06d}",
                "quantity": rng.randrange(1, 9),
                "unit_price": round(rng.uniform(0.5, 99), 2),
            }
        )
        line = json.dumps(doc, separators=(",", ":"))
    pad = target - len(line)
    if pad > 0 and items:
        items[-1]["sku"] = str(items[-1]["sku"]) + "x" * min(pad, 64 - len(str(items[-1]["sku"])))
        line = json.dumps(doc, separators=(",", ":"))
    return line


def write_orders(path: Path, count: int, seed: int = 7) -> int:
    """Write `count` orders to `path` (JSON Lines); returns the file's size in bytes."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            out.write(order(n, rng) + "\n")
    return path.stat().st_size
