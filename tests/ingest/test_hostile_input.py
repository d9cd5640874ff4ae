"""Hostile input costs only itself (issue 24): deep nesting, any failure of a parser, text in
UTF-16 or UTF-32, compression told by the bytes; reasons name lines as editors count them."""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import json
import lzma
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ingest_support import Platform, s3_event

from chalicelib import parsers
from chalicelib.parsers import MAX_NESTING
from chalicelib.service import Ingestor
from sluice import aws

GOOD = [{"id": 1, "name": "Zoë 😀"}, {"id": 2, "name": "李小龙"}, {"id": 3, "name": "a,b"}]


def lines(*items: str) -> bytes:
    return "".join(i + "\n" for i in items).encode()


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def payloads(platform: Platform) -> list[dict[str, Any]]:
    """Payloads sent, in record order (SQS does not keep the order of chunks)."""
    records = sorted((r for c in platform.raw_chunks() for r in c.records), key=lambda r: r.ordinal)
    return [r.payload for r in records]


def reasons(platform: Platform) -> list[str]:
    return [d["reason"] for d in platform.quarantined()]


def deep(depth: int) -> str:
    """A JSON object whose field holds `depth` nested arrays (the object is one level more)."""
    return '{"deep": ' + "[" * depth + "]" * depth + "}"


def nested(levels: int) -> dict[str, Any]:
    """A record nested exactly `levels` deep, itself included."""
    value: Any = []
    for _ in range(levels - 2):
        value = [value]
    return {"deep": value}


def put(platform: Platform, key: str, body: bytes, **extra: Any) -> dict[str, Any]:
    """Upload with extra PutObject arguments (ContentEncoding) and return the S3 event."""
    bucket = platform.names.landing_bucket
    response = aws.s3().put_object(Bucket=bucket, Key=key, Body=body, **extra)
    return s3_event(bucket, key, response["ETag"].strip('"'))


# ---------------------------------------------------------------------------- nesting


@pytest.mark.parametrize(
    ("name", "body", "where"),
    [
        ("deep.jsonl", lines(dumps(GOOD[0]), deep(100_000), *map(dumps, GOOD[1:])), "line 2"),
        (
            "deep.json",
            ("[" + ",".join([dumps(GOOD[0]), deep(100_000), *map(dumps, GOOD[1:])]) + "]").encode(),
            "element 2",
        ),
    ],
)
def test_a_record_nested_a_hundred_thousand_deep_is_quarantined_and_its_neighbours_go_on(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    name: str,
    body: bytes,
    where: str,
) -> None:
    event = platform.put(f"incoming/order/{name}", body)

    make_ingestor(read_block_bytes=4096).handle_s3_event(event)

    assert payloads(platform) == GOOD
    assert reasons(platform) == [f"{where}: JSON nested more than {MAX_NESTING} levels deep"]
    assert platform.ledger_totals() == {"records_in": 4, "out": 3, "quarantined": 1}


@pytest.mark.parametrize("name", ["limit.jsonl", "limit.json"])
def test_a_record_nested_past_the_limit_is_quarantined_and_one_at_the_limit_goes_on(
    platform: Platform, make_ingestor: Callable[..., Ingestor], name: str
) -> None:
    # Shallow enough for every parser: only the fixed limit refuses the deeper one, so a
    # record that passes ingest cannot break a later stage whose stack is deeper.
    records = [GOOD[0], nested(MAX_NESTING), nested(MAX_NESTING + 1), GOOD[1]]
    body = lines(*map(dumps, records)) if name.endswith(".jsonl") else dumps(records).encode()
    event = platform.put(f"incoming/order/{name}", body)

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == [GOOD[0], nested(MAX_NESTING), GOOD[1]]
    [reason] = reasons(platform)
    assert reason.endswith(f" 3: JSON nested more than {MAX_NESTING} levels deep")


def test_brackets_inside_strings_do_not_count_as_nesting(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    record = {"text": "[{" * MAX_NESTING, "escaped": '\\"[' * MAX_NESTING}
    event = platform.put("incoming/order/strings.jsonl", lines(dumps(record)))

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == [record]


# ---------------------------------------------------------------------------- any failure


@pytest.mark.parametrize(("name", "where"), [("boom.jsonl", "line 2"), ("boom.json", "element 2")])
def test_any_error_while_parsing_one_record_costs_that_record_only(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    where: str,
) -> None:
    real = parsers.loads_object

    def fragile(text: str) -> tuple[dict[str, Any] | None, str | None]:
        if "boom" in text:
            raise TypeError("a parser bug")
        return real(text)

    monkeypatch.setattr(parsers, "loads_object", fragile)
    records = [GOOD[0], {"id": "boom"}, *GOOD[1:]]
    body = lines(*map(dumps, records)) if name.endswith("l") else dumps(records).encode()
    event = platform.put(f"incoming/order/{name}", body)

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == GOOD
    assert reasons(platform) == [f"{where}: could not be parsed (TypeError: a parser bug)"]
    assert platform.ledger_totals() == {"records_in": 4, "out": 3, "quarantined": 1}


def test_any_error_while_reading_one_csv_row_costs_that_row_only(
    platform: Platform, make_ingestor: Callable[..., Ingestor], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = csv.reader

    class Fragile:
        """A reader that fails on one row and reads on after it, as `csv.reader` does."""

        def __init__(self, lines: Any, **options: Any) -> None:
            self.rows = real(lines, **options)

        def __iter__(self) -> Iterator[list[str]]:
            return self

        def __next__(self) -> list[str]:
            row = next(self.rows)
            if row[:1] == ["boom"]:
                raise RuntimeError("a reader bug")
            return row

    monkeypatch.setattr(csv, "reader", Fragile)  # the module the parser reads CSV with
    rows = ["id,name", "1,Ann", "boom,Bob", "3,Cy"]
    event = platform.put("incoming/customer/boom.csv", lines(*rows))

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == [{"id": "1", "name": "Ann"}, {"id": "3", "name": "Cy"}]
    line = rows.index("boom,Bob") + 1
    assert reasons(platform) == [f"line {line}: could not be parsed (RuntimeError: a reader bug)"]


def test_a_csv_whose_gzip_breaks_is_quarantined_once_from_the_first_line_not_read(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    # The stream failing under the CSV reader is the rest of the object, not a bad row.
    rows = ["id,name", *[f"{i},name-{i}" for i in range(2000)]]
    body = gzip.compress(lines(*rows))
    event = platform.put("incoming/customer/short.csv.gz", body[: len(body) // 2])

    make_ingestor(read_block_bytes=1024).handle_s3_event(event)

    sent = payloads(platform)
    assert sent == [{"id": str(i), "name": f"name-{i}"} for i in range(len(sent))]
    [reason] = reasons(platform)
    assert reason.startswith(f"rest of the object from line {len(sent) + 2} unreadable: gzip")


# ---------------------------------------------------------------------------- line numbers


def test_reasons_name_json_lines_by_their_line_in_the_file(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    rows = ['{"id": 1}', "", "{not json", "   ", '{"id": 2}', "[1, 2]", "", '"text"']
    event = platform.put("incoming/order/numbered.jsonl", lines(*rows))

    make_ingestor().handle_s3_event(event)

    bad = [i + 1 for i, row in enumerate(rows) if row.strip() and not row.startswith('{"id"')]
    assert sorted(int(r.split(":")[0].removeprefix("line ")) for r in reasons(platform)) == bad


def test_reasons_name_csv_rows_by_the_physical_line_they_start_on(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    text = 'id,note\r\n1,"two\r\nlines"\r\n2,x,extra\r\n\r\n3,ok\r\n4\r\n'
    event = platform.put("incoming/customer/numbered.csv", text.encode())

    make_ingestor().handle_s3_event(event)

    physical = text.split("\n")
    bad = [physical.index("2,x,extra\r") + 1, physical.index("4\r") + 1]
    assert sorted(int(r.split(":")[0].removeprefix("line ")) for r in reasons(platform)) == bad
    assert payloads(platform) == [{"id": "1", "note": "two\r\nlines"}, {"id": "3", "note": "ok"}]


def test_reasons_name_json_array_elements_counting_from_one(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    elements: list[Any] = [GOOD[0], [1], GOOD[1], "text"]
    event = platform.put("incoming/order/numbered.json", dumps(elements).encode())

    make_ingestor().handle_s3_event(event)

    bad = [f"element {i + 1}" for i, e in enumerate(elements) if not isinstance(e, dict)]
    assert sorted(r.split(":")[0] for r in reasons(platform)) == bad


def test_an_unreadable_rest_is_named_by_the_first_line_not_read(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    rows = [dumps({"id": i}) for i in range(3000)]
    body = gzip.compress(lines(*rows)) + b"this is not gzip" * 100
    event = platform.put("incoming/order/corrupt.jsonl.gz", body)

    make_ingestor(read_block_bytes=4096).handle_s3_event(event)

    [reason] = reasons(platform)
    assert reason.startswith(f"rest of the object from line {len(rows) + 1} unreadable: ")


def test_an_unreadable_rest_of_a_json_array_is_named_by_its_first_element_not_read(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/broken.json", b'[{"id": 1}, {"id": 2}, {"id": 3 oops}]')

    make_ingestor().handle_s3_event(event)

    [reason] = reasons(platform)
    assert reason.startswith("rest of the object from element 3 unreadable: ")


# ---------------------------------------------------------------------------- encodings

BOMS = {
    "utf-16-le": codecs.BOM_UTF16_LE,
    "utf-16-be": codecs.BOM_UTF16_BE,
    "utf-32-le": codecs.BOM_UTF32_LE,
    "utf-32-be": codecs.BOM_UTF32_BE,
}
CSV_TEXT = 'id,name\r\n1,Zoë 😀\r\n2,李小龙\r\n3,"a,b"\r\n'
TEXTS = {
    "jsonl": ("".join(dumps(r) + "\n" for r in GOOD), GOOD),
    "json": (json.dumps(GOOD, ensure_ascii=False, indent=1), GOOD),
    "csv": (CSV_TEXT, [{k: str(v) for k, v in r.items()} for r in GOOD]),
}


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("fmt", list(TEXTS))
@pytest.mark.parametrize("encoding", list(BOMS))
def test_text_in_utf16_or_utf32_with_a_bom_is_decoded(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    encoding: str,
    fmt: str,
    gz: bool,
) -> None:
    text, expected = TEXTS[fmt]
    record_type = "customer" if fmt == "csv" else "order"
    key = f"incoming/{record_type}/wide.{fmt}" + (".gz" if gz else "")
    event = platform.put(key, BOMS[encoding] + text.encode(encoding), gz=gz)

    # Blocks of 7 bytes split code units and surrogate pairs between blocks.
    make_ingestor(read_block_bytes=7).handle_s3_event(event)

    assert payloads(platform) == expected
    assert platform.quarantined() == []


def test_utf16_that_breaks_midway_is_quarantined_once_and_keeps_the_records_before(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    before = "".join(dumps(r) + "\n" for r in GOOD).encode("utf-16-le")
    lone_surrogate = b"\x00\xd8" + '{"id": 9}\n'.encode("utf-16-le")
    body = codecs.BOM_UTF16_LE + before + lone_surrogate + before
    event = platform.put("incoming/order/broken-utf16.jsonl", body)

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == GOOD
    [reason] = reasons(platform)
    assert reason.startswith(f"rest of the object from line {len(GOOD) + 1} unreadable: ")
    assert "invalid UTF-16-LE text" in reason


# ---------------------------------------------------------------------------- compression


def test_gzip_bytes_under_a_key_without_gz_are_gunzipped(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    event = platform.put("incoming/order/packed.jsonl", lines(*map(dumps, GOOD)), gz=True)

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == GOOD
    assert platform.quarantined() == []


def test_an_object_stored_with_content_encoding_gzip_is_gunzipped(
    platform: Platform, make_ingestor: Callable[..., Ingestor]
) -> None:
    body = gzip.compress(lines(*map(dumps, GOOD)))
    event = put(platform, "incoming/order/encoded.jsonl", body, ContentEncoding="gzip")

    make_ingestor().handle_s3_event(event)

    assert payloads(platform) == GOOD
    assert platform.quarantined() == []


@pytest.mark.parametrize(
    ("key", "body", "extra", "reason"),
    [
        (
            "incoming/order/plain.jsonl",
            lines(*map(dumps, GOOD)),
            {"ContentEncoding": "gzip"},
            "its Content-Encoding is gzip but the data is not gzip",
        ),
        (
            "incoming/order/brotli.jsonl",
            lines(*map(dumps, GOOD)),
            {"ContentEncoding": "br"},
            "Content-Encoding br is not supported",
        ),
        (
            "incoming/order/packed.jsonl.gz",
            bz2.compress(lines(*map(dumps, GOOD))),
            {},
            "bzip2 compressed data is not supported",
        ),
        (
            "incoming/order/packed.jsonl",
            lzma.compress(lines(*map(dumps, GOOD))),
            {},
            "xz compressed data is not supported",
        ),
        (
            "incoming/order/packed.json",
            b"\x28\xb5\x2f\xfd" + bytes(range(64)),
            {},
            "zstd compressed data is not supported",
        ),
    ],
)
def test_a_compression_ingest_cannot_read_is_one_quarantine_entry_with_a_clear_reason(
    platform: Platform,
    make_ingestor: Callable[..., Ingestor],
    key: str,
    body: bytes,
    extra: dict[str, str],
    reason: str,
) -> None:
    event = put(platform, key, body, **extra)

    make_ingestor().handle_s3_event(event)

    assert platform.raw_chunks() == []
    [doc] = platform.quarantined()
    assert reason in doc["reason"]
    assert platform.ledger_totals() == {"records_in": 1, "out": 0, "quarantined": 1}
