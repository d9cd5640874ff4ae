"""`records_z` is a zlib stream whichever codec made it: ISA-L's (when installed) or the standard
library's. A chunk either one wrote decodes with the other, so stages of old and new code, with
and without ISA-L, read each other's messages; a broken stream is a malformed envelope."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable
from types import ModuleType

import pytest

from sluice import envelope
from sluice.envelope import Chunk, Record, chunk_from_sqs_body
from sluice.errors import MalformedEnvelopeError

isal_zlib = pytest.importorskip("isal.isal_zlib")
CODECS: dict[str, ModuleType] = {"zlib": zlib, "isal": isal_zlib}


def big_chunk() -> Chunk:
    records = tuple(
        Record(
            f"r-{i:04d}",
            i,
            "2026-11-27T06:00:00.000Z",
            {"order_id": f"o-{i}", "amount": i * 1.25, "note": "zürich — 東京 " * (i % 5)},
        )
        for i in range(300)
    )
    return Chunk("c-big", "order", "s3://landing/o.jsonl", "ingest-1", records, {"p": "high"})


@pytest.fixture
def use_codec(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Call with a codec's name: the envelope makes and reads `records_z` with it from then on."""

    def use(name: str) -> None:
        monkeypatch.setattr(envelope, "_deflate", CODECS[name])

    return use


def test_the_envelope_uses_isal_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envelope, "_deflate", None)
    assert envelope.zlib_codec() is isal_zlib


@pytest.mark.parametrize(("writer", "reader"), [("zlib", "isal"), ("isal", "zlib")])
def test_a_chunk_one_codec_wrote_decodes_with_the_other(
    use_codec: Callable[[str], None], writer: str, reader: str
) -> None:
    chunk = big_chunk()
    use_codec(writer)
    body = chunk.encode()
    assert "records_z" in json.loads(body)
    use_codec(reader)
    assert chunk_from_sqs_body(body) == chunk
    assert chunk_from_sqs_body(body, lazy_payloads=True) == chunk


def test_what_isal_writes_is_a_plain_zlib_stream(use_codec: Callable[[str], None]) -> None:
    chunk = big_chunk()
    use_codec("isal")
    packed = json.loads(chunk.encode())["records_z"]
    plain = zlib.decompress(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
    assert plain == chunk.records_json()
    assert json.loads(plain) == [r.to_wire() for r in chunk.records]


@pytest.mark.parametrize("codec", ["zlib", "isal"])
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda z: z[:-40], "truncated|unreadable"),
        (lambda z: "AAAA" + z[4:], "unreadable"),
        (lambda z: z[:100] + "!" + z[101:], "unreadable"),
    ],
)
def test_a_damaged_stream_is_a_malformed_envelope_with_either_codec(
    use_codec: Callable[[str], None], codec: str, damage: Callable[[str], str], message: str
) -> None:
    use_codec("zlib")
    wire = json.loads(big_chunk().encode())
    wire["records_z"] = damage(wire["records_z"])
    use_codec(codec)
    with pytest.raises(MalformedEnvelopeError, match=message):
        Chunk.decode(json.dumps(wire))


@pytest.mark.parametrize("codec", ["zlib", "isal"])
def test_a_stream_that_inflates_past_the_bound_is_refused(
    use_codec: Callable[[str], None], codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_codec("zlib")
    chunk = big_chunk()
    body = chunk.encode()
    monkeypatch.setattr(envelope, "MAX_RECORDS_BYTES", len(chunk.records_json()) // 2)
    use_codec(codec)
    with pytest.raises(MalformedEnvelopeError, match="expands past"):
        Chunk.decode(body)


def _stdlib(packed: str) -> object:
    try:
        return base64.b64decode(packed + "=" * (-len(packed) % 4), altchars=b"-_", validate=True)
    except ValueError as error:  # binascii.Error too
        return type(error)


@pytest.mark.parametrize(
    "packed",
    [
        base64.urlsafe_b64encode(bytes(range(256)) * 3).decode().rstrip("="),
        "YWJj",
        "YWI",  # unpadded
        "YWI=",  # padded
        "YQ",
        "Y",  # no length base64 has
        "",
        "YW+/",  # the standard alphabet's two: read as the stdlib reads them
        "YW-_",
        "YW J",
        'YW"J',
        "YW\\J",
        "YW\\u0041",
        "YQ==YWJj",
        "YWJj====",
        "YWé=",
        "\n",
    ],
)
def test_records_z_base64_is_read_as_the_standard_library_reads_it(packed: str) -> None:
    try:
        got: object = envelope._unbase64(packed)
    except ValueError as error:
        got = type(error)
    assert got == _stdlib(packed)


@pytest.mark.parametrize(
    "record",
    [
        Record("r-1", 0, "2026-11-27T06:00:00.000Z", {"a": [1, 2.5, None], "b": "zürich"}),
        Record("r-2", 7, "2026-11-27T06:00:00.000Z", None),
        Record("r-3", 8, "2026-11-27T06:00:00.000Z", None, "s3://payloads/r-3.json"),
        Record("r-4", 9, "2026-11-27T06:00:00.000Z", ["x", {"y": True}]),
    ],
)
def test_a_records_json_is_its_wire_form_compact_whether_its_payload_was_decoded_or_not(
    record: Record,
) -> None:
    expected = json.dumps(record.to_wire(), separators=(",", ":"), ensure_ascii=False).encode()
    assert record.wire_json() == expected
    chunk = Chunk("c-1", "order", "s3://l/o", "ingest-1", (record,))
    lazy = chunk_from_sqs_body(chunk.encode(), lazy_payloads=True).records[0]
    assert lazy.wire_json() == expected


def test_a_record_with_another_payload_is_the_record_built_with_it() -> None:
    original = Record("r-1", 4, "2026-11-27T06:00:00.000Z", None, "s3://payloads/r-1.json")
    original.wire_json()  # its JSON is made: the new record must not inherit it
    changed = original.with_payload({"a": 1})
    assert changed == Record("r-1", 4, "2026-11-27T06:00:00.000Z", {"a": 1})
    assert changed.payload_ref is None
    assert changed.raw_payload() is None
    assert changed.wire_json() == Record.from_wire(changed.to_wire()).wire_json()
