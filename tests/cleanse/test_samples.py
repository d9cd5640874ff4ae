"""Every sample file against cleanse's types: the counts and rejections samples/README.md states."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chalicelib.catalogue import Catalogue
from sluice.errors import PermanentError

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
README = (SAMPLES / "README.md").read_text(encoding="utf-8")
ROW_RE = re.compile(r"^\| (incoming/\S+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", re.M)
REJECT_RE = re.compile(r"^- `([^`]+)`: `(.+?)`", re.M)


@dataclass
class Expected:
    records: int
    unparseable: int
    quarantined: int
    good: int
    priority_high: int
    reasons: dict[str, str] = field(default_factory=dict)


def expected_by_file() -> dict[str, Expected]:
    found = {}
    for path, *counts in ROW_RE.findall(README):
        section = README.split(f"## {path}\n", 1)[1].split("\n## ", 1)[0]
        records, unparseable, quarantined, good, high = (int(n) for n in counts)
        reasons = dict(REJECT_RE.findall(section))
        found[path] = Expected(records, unparseable, quarantined, good, high, reasons)
    return found


EXPECTED = expected_by_file()


def parse(path: Path) -> tuple[list[Any], int]:
    """(payloads, unparseable pieces) the way ingest splits each format."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        payloads, bad = [], 0
        for line in text.splitlines():
            try:
                payloads.append(json.loads(line))
            except ValueError:
                bad += 1
        return payloads, bad
    if path.suffix == ".json":
        return json.loads(text), 0
    return list(csv.DictReader(io.StringIO(text, newline=""))), 0


def natural_key(payload: Any, record_type: str) -> str:
    return str(payload.get(f"{record_type}_id", "")).strip()


def test_the_readme_table_covers_every_sample_file() -> None:
    files = sorted(str(p.relative_to(SAMPLES)) for p in (SAMPLES / "incoming").rglob("*.*"))
    assert sorted(EXPECTED) == files
    assert any(p.endswith(".jsonl") for p in files)
    assert any(p.endswith(".csv") for p in files)
    assert any(p.endswith(".json") for p in files)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_file_yields_the_good_and_bad_counts_the_readme_states(name: str) -> None:
    expected = EXPECTED[name]
    record_type = name.split("/")[1]
    kind = Catalogue().get(record_type)
    assert kind is not None
    payloads, unparseable = parse(SAMPLES / name)

    good: list[dict[str, Any]] = []
    reasons: dict[str, str] = {}
    for payload in payloads:
        try:
            good.append(kind.cleanse(payload))
        except PermanentError as error:
            reasons[natural_key(payload, record_type)] = error.reason

    assert (len(payloads), unparseable) == (expected.records, expected.unparseable)
    assert (len(reasons), len(good)) == (expected.quarantined, expected.good)
    assert reasons == expected.reasons
    high = [o for o in good if record_type == "order" and o["amount"] > 1000]
    assert len(high) == expected.priority_high


def test_the_totals_row_adds_up() -> None:
    total = re.search(
        r"^\| \*\*total\*\* \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", README, re.M
    )
    assert total is not None
    sums = [
        sum(getattr(e, f) for e in EXPECTED.values())
        for f in ("records", "unparseable", "quarantined", "good", "priority_high")
    ]
    assert [int(n) for n in total.groups()] == sums


def test_the_order_samples_include_amounts_over_1000_and_non_ascii_text() -> None:
    text = "".join((SAMPLES / n).read_text(encoding="utf-8") for n in EXPECTED if "/order/" in n)
    assert not text.isascii()
    assert sum(e.priority_high for n, e in EXPECTED.items() if "/order/" in n) >= 5
