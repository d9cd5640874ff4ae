"""Ingest counts objects, records, chunks and bytes in its metrics, and binds its logs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from ingest_support import Platform

from chalicelib.service import Ingestor
from sluice.observability import default_metrics


@pytest.fixture
def metrics() -> Iterator[Callable[[], Counter[str]]]:
    """Sums of every metric added since the test started."""
    default_metrics().clear()

    def totals() -> Counter[str]:
        sums: Counter[str] = Counter()
        for blob in default_metrics().blobs():
            for directive in blob["_aws"]["CloudWatchMetrics"]:
                for definition in directive["Metrics"]:
                    value = blob[definition["Name"]]
                    sums[definition["Name"]] += sum(value) if isinstance(value, list) else value
        return sums

    yield totals
    default_metrics().clear()


def test_an_object_adds_its_records_chunks_and_bytes_to_the_metrics(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    metrics: Callable[[], Counter[str]],
) -> None:
    body = b'{"id": 1}\n{oops\n{"id": 2}\n'
    event = platform.put("incoming/order/m.jsonl", body)
    ingestor = make_ingestor()

    ingestor.handle_s3_event(event)
    ingestor.handle_s3_event(event)

    totals = metrics()
    assert totals["ObjectsIn"] == 2
    assert totals["ObjectsDuplicate"] == 1
    assert totals["RecordsIn"] == 3
    assert totals["RecordsOut"] == 2
    assert totals["RecordsQuarantined"] == 1
    assert totals["ChunksOut"] == 1
    assert totals["BytesRead"] == len(body)


def test_a_quarantined_object_is_counted_as_such(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    metrics: Callable[[], Counter[str]],
) -> None:
    make_ingestor().handle_s3_event(platform.put("incoming/order/empty.csv", b""))

    assert metrics()["ObjectsQuarantined"] == 1


def test_logs_while_reading_an_object_carry_its_correlation_id(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    from sluice.observability import get_context

    seen: list[object] = []
    ingestor = make_ingestor()
    quarantine = ingestor.runtime.quarantine
    original = quarantine.reject_raw

    def spy(**kwargs: object) -> str:
        seen.append(get_context().get("correlation_id"))
        return original(**kwargs)  # type: ignore[arg-type]

    quarantine.reject_raw = spy  # type: ignore[method-assign]
    event = platform.put("incoming/order/log.jsonl", b'{"id": 1}\n{oops\n')

    ingestor.handle_s3_event(event)

    [chunk] = platform.raw_chunks()
    assert seen == [chunk.correlation_id]
