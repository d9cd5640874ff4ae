"""The repository's sample files: good ones make the records samples/README.md promises, bad
ones (samples/ingest-bad) are quarantined without stopping their good records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from ingest_support import Platform

from chalicelib.service import Ingestor

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

# (records sent, unparseable) per file, as in samples/README.md.
EXPECTED = {
    "incoming/order/orders-2026-11-27.jsonl": (29, 1),
    "incoming/order/orders-big-spenders.json": (8, 0),
    "incoming/customer/customers.csv": (13, 0),
}

BAD = {
    "incoming/order/bad-lines.jsonl": (2, 3),
    "incoming/order/not-utf8.jsonl": (1, 1),
    "incoming/order/empty.jsonl": (0, 1),
    "incoming/order/corrupt.jsonl.gz": (50, 1),
    "incoming/order/broken-array.json": (1, 1),
    "incoming/customer/wrong-field-count.csv": (1, 2),
    "incoming/invoice/unknown-type.jsonl": (0, 1),
    "incoming/order/deep-nesting.jsonl": (2, 1),  # a line nested 5,000 deep
    "incoming/order/utf16-bom.jsonl": (3, 1),  # UTF-16 LE with its BOM; one line cut off
    "incoming/order/gzip-bytes.jsonl": (2, 0),  # gzip, though the key does not say so
}


def _ingest(platform: Platform, ingestor: Ingestor, path: Path, key: str) -> tuple[int, int]:
    ingestor.handle_s3_event(platform.put(key, path.read_bytes()))
    sent = sum(len(c.records) for c in platform.raw_chunks())
    return sent, len(platform.quarantined())


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_a_good_sample_makes_the_records_its_readme_promises(
    platform: Platform, make_ingestor: Callable[..., Ingestor], key: str
) -> None:
    assert _ingest(platform, make_ingestor(), SAMPLES / key, key) == EXPECTED[key]


@pytest.mark.parametrize("key", sorted(BAD))
def test_a_bad_sample_is_quarantined_and_its_good_records_go_on(
    platform: Platform, make_ingestor: Callable[..., Ingestor], key: str
) -> None:
    path = SAMPLES / "ingest-bad" / key
    assert _ingest(platform, make_ingestor(), path, key) == BAD[key]
    totals = platform.ledger_totals()
    assert totals["records_in"] == totals["out"] + totals["quarantined"]
