"""The chunk envelope: wire round trips, ids, versions and the chunker's bounds."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import string
import subprocess
import sys
import zlib
from itertools import pairwise

import pytest

from sluice.config import DEFAULT_CHUNK_MAX_BYTES, SNS_MAX_MESSAGE_BYTES
from sluice.envelope import (
    ENVELOPE_VERSION,
    Chunk,
    ChunkLimits,
    Record,
    chunk_from_sns_record,
    chunk_from_sqs_body,
    chunk_id,
    derive_chunk_id,
    pack_records,
    record_id,
)
from sluice.errors import MalformedEnvelopeError, OversizeRecordError, UnsupportedVersionError

URL_SAFE = string.ascii_letters + string.digits + "-_"
SOURCE = "s3://landing/incoming/order/2026/11/27/orders.jsonl"
VERSION = '"9b2cf535f27731c974343645a3985328"'


def make_records(n: int, payload_size: int = 40, text: str = "x") -> list[Record]:
    return [
        Record(
            id=record_id(SOURCE, VERSION, i),
            ordinal=i,
            ingested_at="2026-11-27T06:00:00.000Z",
            payload={"order_id": f"o-{i}", "note": text * payload_size},
        )
        for i in range(n)
    ]


def make_chunk(ordinal: int, records: tuple[Record, ...]) -> Chunk:
    return Chunk(
        chunk_id=chunk_id(SOURCE, VERSION, ordinal),
        type="order",
        source=SOURCE,
        correlation_id="corr-1",
        records=records,
    )


def attributes_bytes(chunk: Chunk) -> int:
    """What SNS counts for message attributes: name, type and value of each."""
    return sum(
        len(name.encode()) + len(a["DataType"].encode()) + len(a["StringValue"].encode())
        for name, a in chunk.message_attributes().items()
    )


def test_record_and_chunk_ids_are_distinct() -> None:
    assert record_id(SOURCE, VERSION, 3) != record_id(SOURCE, VERSION, 4)
    assert record_id(SOURCE, VERSION, 3) != record_id(SOURCE, '"other-etag"', 3)
    assert chunk_id(SOURCE, VERSION, 0) != record_id(SOURCE, VERSION, 0)
    assert derive_chunk_id("c-1", "cleanse") != derive_chunk_id("c-1", "router", "high")


def test_ids_are_the_same_in_another_process() -> None:
    # A retry may run in another Lambda instance: an id must not depend on the process (a
    # hash seed, a salt, a counter). Equal within one process would prove none of that.
    ids = (
        f"record_id({SOURCE!r}, {VERSION!r}, 3)",
        f"chunk_id({SOURCE!r}, {VERSION!r}, 0)",
        "derive_chunk_id('c-1', 'router', 'high')",
    )
    code = f"from sluice.envelope import *\nprint({', '.join(ids)})"
    env = {"PYTHONPATH": os.pathsep.join(sys.path), "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )

    assert done.stdout.split() == [
        record_id(SOURCE, VERSION, 3),
        chunk_id(SOURCE, VERSION, 0),
        derive_chunk_id("c-1", "router", "high"),
    ]


def test_envelope_round_trips_through_an_sqs_body_with_unicode() -> None:
    records = make_records(3, payload_size=4, text="zürich — 東京 🚀")
    chunk = make_chunk(0, tuple(records)).derive(
        records, chunk_id="c-x", attributes={"priority": "high"}
    )
    body = chunk.encode()
    assert "東京" in body  # small: plain JSON, kept as UTF-8, not \u-escaped
    decoded = chunk_from_sqs_body(body)
    assert decoded == chunk
    assert decoded.records[1].payload["note"].startswith("zürich")


def test_envelope_round_trips_through_an_sns_notification_and_sns_event() -> None:
    chunk = make_chunk(0, tuple(make_records(2, text="ü")))
    notification = json.dumps(
        {
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:sluice-test-records",
            "Message": chunk.encode(),
        }
    )
    assert chunk_from_sqs_body(notification) == chunk
    sns_event_record = {"EventSource": "aws:sns", "Sns": {"Message": chunk.encode()}}
    assert chunk_from_sns_record(sns_event_record) == chunk


def test_message_attributes_carry_type_correlation_and_routing_attributes() -> None:
    chunk = make_chunk(0, ()).derive([], chunk_id="c-y", attributes={"priority": "high"})
    attrs = chunk.message_attributes()
    assert attrs["record_type"] == {"DataType": "String", "StringValue": "order"}
    assert attrs["correlation_id"]["StringValue"] == "corr-1"
    assert attrs["chunk_id"]["StringValue"] == "c-y"
    assert attrs["priority"]["StringValue"] == "high"


def test_message_attributes_refuse_more_than_sqs_allows() -> None:
    many = {f"a{i}": "v" for i in range(8)}
    chunk = make_chunk(0, ()).derive([], chunk_id="c-z", attributes=many)
    with pytest.raises(ValueError, match="allow 10"):
        chunk.message_attributes()


def test_unknown_envelope_version_is_rejected_clearly() -> None:
    wire = make_chunk(0, tuple(make_records(1))).to_wire()
    wire["v"] = ENVELOPE_VERSION + 1
    with pytest.raises(UnsupportedVersionError, match="envelope version 3 is not supported"):
        Chunk.decode(json.dumps(wire))


def test_a_large_chunk_travels_compressed_and_decodes_to_the_same_chunk() -> None:
    records = make_records(200, text="zürich — 東京 ")
    chunk = make_chunk(0, tuple(records)).derive(records, chunk_id="c-big")

    body = chunk.encode()

    wire = json.loads(body)
    assert wire["v"] == 2
    assert "records" not in wire
    assert set(wire["records_z"]) <= set(URL_SAFE)  # no escaping in JSON, none in a form body
    assert len(body) < chunk.encoded_size() / 4
    assert chunk_from_sqs_body(body) == chunk


def test_chunk_budgets_are_measured_on_plain_json_not_the_compressed_message() -> None:
    records = make_records(200)
    chunk = make_chunk(0, tuple(records)).derive(records, chunk_id="c-big")
    plain = {**chunk.to_wire(), "v": 2}

    assert chunk.encoded_size() == len(json.dumps(plain, separators=(",", ":")).encode())
    assert len(chunk.encode()) < chunk.encoded_size()


def test_incompressible_records_travel_plain() -> None:
    import random

    rng = random.Random(7)
    noise = "".join(rng.choice(URL_SAFE) for _ in range(3000))
    records = (Record("r-1", 0, "2026-11-27T06:00:00.000Z", {"blob": noise}),)
    chunk = make_chunk(0, records)

    wire = json.loads(chunk.encode())

    assert wire["records"][0]["payload"]["blob"] == noise
    assert "records_z" not in wire


@pytest.mark.parametrize("n", [0, 1, 3, 40])
@pytest.mark.parametrize("attributes", [{}, {"priority": "high", "region": "eu"}])
def test_encoding_from_each_records_json_gives_the_bytes_of_encoding_the_whole_envelope(
    n: int, attributes: dict[str, str]
) -> None:
    # Records are serialised once (sized, then encoded); the message must not change for it.
    records = tuple(make_records(n, text='é\u2028"x'))
    chunk = Chunk("c-1", "order", SOURCE, "corr-1", records, attributes)
    whole = chunk.to_wire()
    whole["v"] = ENVELOPE_VERSION
    plain = json.dumps(whole, separators=(",", ":"), ensure_ascii=False)
    for record in records:
        record.encoded_size()  # cached now

    body = chunk.encode()

    assert chunk.encoded_size() == len(plain.encode("utf-8"))
    assert Chunk.decode(body) == chunk
    if len(json.dumps([r.to_wire() for r in records], separators=(",", ":"))) < 2048:
        assert body == plain


def test_a_records_json_is_made_afresh_for_a_changed_copy() -> None:
    record = make_records(1)[0]
    record.encoded_size()

    stand_in = dataclasses.replace(record, payload=None, payload_ref="s3://bucket/key")

    assert b"payload_ref" in stand_in.wire_json()
    assert b"payload_ref" not in record.wire_json()
    assert stand_in != record


def test_version_1_envelopes_are_still_read() -> None:
    chunk = make_chunk(0, tuple(make_records(50)))
    v1 = json.dumps({**chunk.to_wire(), "v": 1})

    assert chunk_from_sqs_body(v1).records == chunk.records


def compressed(chunk_text: str, field: str) -> str:
    wire = json.loads(chunk_text)
    wire["records_z"] = field
    return json.dumps(wire)


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("***", "unreadable"),
        ("eJwrSSwpSQQACn8CvA", "truncated|unreadable"),
        (
            base64.urlsafe_b64encode(zlib.compress(b"[" + b"0," * 40_000_000 + b"0]", 9))
            .decode()
            .rstrip("="),
            "expands past",
        ),
        (base64.urlsafe_b64encode(zlib.compress(b"not json")).decode(), "not JSON"),
    ],
)
def test_a_damaged_compressed_field_is_a_malformed_envelope(field: str, reason: str) -> None:
    body = compressed(make_chunk(0, tuple(make_records(100))).encode(), field)
    with pytest.raises(MalformedEnvelopeError, match=reason):
        chunk_from_sqs_body(body)


def test_a_compressed_field_in_a_version_1_envelope_is_malformed() -> None:
    wire = json.loads(make_chunk(0, tuple(make_records(100))).encode())
    wire["v"] = 1
    with pytest.raises(MalformedEnvelopeError, match="needs envelope version 2"):
        chunk_from_sqs_body(json.dumps(wire))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"records": []}', "no envelope version"),
        ('{"v": 1, "chunk_id": "c", "type": "t", "source": "s"}', "lacks field"),
        (
            '{"v": 1, "chunk_id": "c", "type": "t", "source": "s", "correlation_id": "x", '
            '"records": [{"id": "r", "ordinal": 0, "ingested_at": "t"}]}',
            "neither payload nor payload_ref",
        ),
    ],
)
def test_malformed_bodies_are_permanent_errors_with_a_reason(body: str, reason: str) -> None:
    with pytest.raises(MalformedEnvelopeError, match=reason):
        chunk_from_sqs_body(body)


def test_chunker_never_exceeds_byte_or_count_limits() -> None:
    records = make_records(500, payload_size=900, text="é")  # ~1.9 KB each, 2-byte chars
    limits = ChunkLimits(max_records=100, max_bytes=64 * 1024)
    chunks = list(pack_records(records, make_chunk, limits))
    assert [r for c in chunks for r in c.records] == records  # nothing lost, order kept
    for chunk in chunks:
        assert len(chunk.records) <= limits.max_records
        assert chunk.encoded_size() <= limits.max_bytes
    # tight packing: each chunk but the last could not take the next record
    for chunk, following in pairwise(chunks):
        grown = chunk.derive([*chunk.records, following.records[0]], chunk_id=chunk.chunk_id)
        assert grown.encoded_size() > limits.max_bytes or len(grown.records) > 100


def test_chunk_at_the_default_limit_fits_sns_with_its_attributes() -> None:
    records = make_records(2000, payload_size=1000)
    limits = ChunkLimits(max_records=10_000, max_bytes=DEFAULT_CHUNK_MAX_BYTES)
    first = next(pack_records(records, make_chunk, limits))
    size = first.encoded_size()
    assert DEFAULT_CHUNK_MAX_BYTES - 1100 < size <= DEFAULT_CHUNK_MAX_BYTES
    assert size + attributes_bytes(first) <= SNS_MAX_MESSAGE_BYTES
    assert chunk_from_sqs_body(first.encode()) == first


def test_chunker_is_deterministic() -> None:
    limits = ChunkLimits(max_records=7, max_bytes=4096)
    once = list(pack_records(make_records(60), make_chunk, limits))
    again = list(pack_records(make_records(60), make_chunk, limits))
    assert once == again
    assert len({c.chunk_id for c in once}) == len(once)


def test_chunker_continues_from_a_given_ordinal() -> None:
    limits = ChunkLimits(max_records=10, max_bytes=100_000)
    whole = list(pack_records(make_records(30), make_chunk, limits))
    tail = list(pack_records(make_records(30)[10:], make_chunk, limits, first_ordinal=1))
    assert tail == whole[1:]


def test_oversize_record_goes_to_the_stand_in_callback() -> None:
    records = make_records(3)
    big = Record(id="r-big", ordinal=1, ingested_at="2026-11-27T06:00:00Z", payload="x" * 5000)
    records[1] = big
    seen: list[str] = []

    def stand_in(record: Record) -> Record:
        seen.append(record.id)
        return Record(record.id, record.ordinal, record.ingested_at, None, "s3://p/r-big.json")

    chunks = list(pack_records(records, make_chunk, ChunkLimits(10, 2048), on_oversize=stand_in))
    assert seen == ["r-big"]
    assert [r.payload_ref for r in chunks[0].records] == [None, "s3://p/r-big.json", None]


def test_oversize_record_without_a_stand_in_is_a_clear_error() -> None:
    big = Record(id="r-big", ordinal=0, ingested_at="2026-11-27T06:00:00Z", payload="x" * 5000)
    with pytest.raises(OversizeRecordError, match="r-big is 50"):
        list(pack_records([big], make_chunk, ChunkLimits(10, 2048)))


def test_dropped_oversize_record_is_skipped_and_the_rest_packed() -> None:
    records = make_records(3)
    records[0] = Record(id="r-big", ordinal=0, ingested_at="t", payload="x" * 5000)
    limits = ChunkLimits(10, 2048)
    chunks = list(pack_records(records, make_chunk, limits, on_oversize=lambda r: None))
    assert [r.ordinal for c in chunks for r in c.records] == [1, 2]


def test_attributes_size_counts_each_name_type_and_value_in_utf8_bytes() -> None:
    from sluice.envelope import attributes_size

    attributes = {"a": {"DataType": "String", "StringValue": "é"}, "bb": {"DataType": "String"}}

    assert attributes_size(attributes) == (1 + 6 + 2) + (2 + 6)


# --- records as they arrived: kept for the claim's hash, payloads left undecoded if asked


def _body_with(records_json: bytes) -> str:
    """A plain (uncompressed) v2 body holding `records_json` verbatim."""
    head = json.dumps(
        {"v": 2, "chunk_id": "c-1", "type": "order", "source": SOURCE, "correlation_id": "k"},
        separators=(",", ":"),
    )
    return head[:-1] + ',"records":' + records_json.decode("utf-8") + "}"


# Valid JSON that re-encoding would write differently (spaces, exponent, escape, key order).
UNUSUAL = (
    b'[{"id":"r-1","ordinal":0,"ingested_at":"2026-11-27T06:00:00.000Z",'
    b'"payload":{"b": 1.50e1, "a":"caf\\u00e9", "n":[1, 2]}},'
    b'{"ordinal":1,"id":"r-2","ingested_at":"2026-11-27T06:00:00.000Z","payload_ref":"s3://b/k"}]'
)


@pytest.mark.parametrize("compressed", [False, True])
def test_a_decoded_chunk_keeps_its_records_json_as_it_arrived(compressed: bool) -> None:
    body = _body_with(UNUSUAL)
    if compressed:
        packed = base64.urlsafe_b64encode(zlib.compress(UNUSUAL)).rstrip(b"=").decode()
        wire = json.loads(body)
        del wire["records"]
        body = json.dumps({**wire, "records_z": packed})
    chunk = chunk_from_sqs_body(body)
    assert chunk.records_json() == UNUSUAL
    assert chunk.records[0].payload == {"b": 15.0, "a": "café", "n": [1, 2]}
    # A chunk made in the process (or derived) has the bytes `encode` writes.
    derived = chunk.derive(chunk.records, chunk_id="c-2")
    assert derived.encode().endswith(',"records":' + derived.records_json().decode() + "}")
    assert json.loads(derived.records_json()) == json.loads(UNUSUAL)


@pytest.mark.parametrize("compressed", [False, True])
def test_lazy_payloads_decode_when_read_and_pass_through_as_they_came(compressed: bool) -> None:
    records = tuple(make_records(60 if compressed else 2))
    sent = make_chunk(0, records).encode()
    assert ("records_z" in sent) is compressed
    eager = chunk_from_sqs_body(sent)
    lazy = chunk_from_sqs_body(sent, lazy_payloads=True)
    assert lazy.records[0].raw_payload() is not None  # nothing decoded yet
    assert lazy == eager  # comparing reads the payloads
    assert lazy.records[0].raw_payload() is None  # decoded once read, and kept

    unusual = chunk_from_sqs_body(_body_with(UNUSUAL), lazy_payloads=True)
    out = unusual.derive(unusual.records, chunk_id="c-2").encode()
    assert '"payload":{"b": 1.50e1, "a":"caf\\u00e9", "n":[1, 2]}' in out  # not re-encoded
    assert chunk_from_sqs_body(out).records == chunk_from_sqs_body(_body_with(UNUSUAL)).records
    assert unusual.records[1].payload is None
    assert unusual.records[1].payload_ref == "s3://b/k"


def test_lazy_records_copy_and_print_like_decoded_ones() -> None:
    lazy = chunk_from_sqs_body(_body_with(UNUSUAL), lazy_payloads=True).records[0]
    moved = dataclasses.replace(lazy, payload=None, payload_ref="s3://b/k2")
    assert (moved.payload, moved.payload_ref) == (None, "s3://b/k2")
    assert "1.50e1" not in moved.wire_json().decode()
    assert "payload={'b': 15.0" in repr(lazy)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lazy.payload = {}  # type: ignore[misc]


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize(
    ("records", "reason"),
    [
        (b'[{"id":"r-1","ordinal":0,"ingested_at":"t"}]', "neither payload nor payload_ref"),
        (b'[{"id":"r-1","ordinal":"0","ingested_at":"t","payload":1}]', "wrong types"),
        (b'[{"id":"r-1","ingested_at":"t","payload":1}]', "lacks field 'ordinal'"),
        (b'{"id":"r-1"}', "'records' is not a list"),
    ],
)
def test_malformed_records_are_refused_alike_eager_or_lazy(
    lazy: bool, records: bytes, reason: str
) -> None:
    with pytest.raises(MalformedEnvelopeError, match=reason):
        chunk_from_sqs_body(_body_with(records), lazy_payloads=lazy)


def test_lazy_payloads_still_refuse_bytes_that_are_not_utf8() -> None:
    bad = b'[{"id":"r-1","ordinal":0,"ingested_at":"t","payload":{"a":"\xff"}}]'
    packed = base64.urlsafe_b64encode(zlib.compress(bad)).rstrip(b"=").decode()
    body = json.dumps(
        {
            "v": 2,
            "chunk_id": "c",
            "type": "t",
            "source": "s",
            "correlation_id": "k",
            "records_z": packed,
        }
    )
    for lazy in (False, True):
        with pytest.raises(MalformedEnvelopeError):
            chunk_from_sqs_body(body, lazy_payloads=lazy)
