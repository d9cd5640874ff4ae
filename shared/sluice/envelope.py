"""The chunk envelope every message between stages carries, its ids, and the chunker.

A chunk holds records of one type from one source. Ids are deterministic, so a duplicate
event, a retry or a redelivery produces the same chunks with the same ids. This module does
no I/O.

Envelope v2 carries the records compressed when that makes the message smaller: the JSON
array of records, a zlib stream (RFC 1950) made at level 1, URL-safe base64 without padding,
in `records_z` (about a third of the size of JSON orders; base64 of that alphabet needs no
escaping in SQS's JSON nor percent-encoding in SNS's form body). Small or incompressible
chunks carry `records` as in v1. Chunk boundaries are always measured on the plain JSON
(`Record.encoded_size`), so they never depend on the compressor. Readers take v1 and v2.

The stream is made and read with ISA-L (`isal`, loaded on first use) when it is installed: the
same zlib format, any zlib reads it, at a quarter of zlib's CPU to compress and under half to
inflate (and ~10% smaller at its level 1). Without it the standard library's zlib does both.

A decoded chunk keeps its records' JSON as it arrived (`Chunk.records_json`: what the claim
hashes, with no re-encoding), and can leave each payload undecoded until it is read
(`lazy_payloads`: a stage that passes records on, like the router, then writes them out from
the bytes they came in as).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypedDict

from sluice import jsonx
from sluice.errors import MalformedEnvelopeError, OversizeRecordError, UnsupportedVersionError

ENVELOPE_VERSION = 2
SUPPORTED_VERSIONS = frozenset({1, 2})
COMPRESSED_FIELD = "records_z"
# Below this many bytes of records JSON, compressing saves too little to be worth it.
COMPRESS_MIN_BYTES = 2048
ZLIB_LEVEL = 1  # zlib: ~150 MB/s (level 6 is 2.5x slower for ~15% less); ISA-L: ~600 MB/s
# The most a compressed records field may expand to: a message is at most 1 MiB, and JSON
# records do not compress 64-fold, so more is a decompression bomb, not a chunk.
MAX_RECORDS_BYTES = 64 * 1024 * 1024

# Message attributes every chunk carries; routing attributes come on top of them.
ATTR_TYPE = "record_type"
ATTR_CORRELATION_ID = "correlation_id"
ATTR_CHUNK_ID = "chunk_id"
BASE_ATTRIBUTES = (ATTR_TYPE, ATTR_CORRELATION_ID, ATTR_CHUNK_ID)
# SQS accepts at most 10 message attributes; SNS raw delivery to SQS inherits that bound.
MAX_MESSAGE_ATTRIBUTES = 10


class StringAttribute(TypedDict):
    DataType: str
    StringValue: str


# A payload not decoded yet (`lazy_payloads`): the record holds its JSON in `_raw`.
_UNDECODED: Any = type("_Undecoded", (), {"__repr__": lambda self: "<undecoded>"})()
_record_decoders: dict[bool, Any] = {}
_ABSENT: Any = None  # msgspec.UNSET once a records decoder is built: a row without payload
_envelope_decoder: Any = None
_deflate: Any = None  # the zlib-format codec in use (`zlib_codec`): ISA-L's, else zlib itself
_base64_decoder: Any = None
_TO_STANDARD_BASE64 = bytes.maketrans(b"-_", b"+/")


class RecordWire(TypedDict, total=False):
    id: str
    ordinal: int
    ingested_at: str
    payload: Any
    payload_ref: str
    payload_json: str  # only in a quarantined record whose payload no stage could decode


def _digest(*parts: object) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(str(part).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def record_id(source: str, version: str, ordinal: int) -> str:
    """Id of the `ordinal`-th record of one version (or ETag) of a source object."""
    return "r-" + _digest("record", source, version, ordinal)


def chunk_id(source: str, version: str, ordinal: int) -> str:
    """Id of the `ordinal`-th chunk cut from one version of a source."""
    return "c-" + _digest("chunk", source, version, ordinal)


def derive_chunk_id(parent: str, *parts: object) -> str:
    """Id of a chunk a stage makes from `parent` (same parent and parts, same id)."""
    return "c-" + _digest("derived", parent, *parts)


def utc_now_iso() -> str:
    """Now in UTC, ISO 8601 with milliseconds and a `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Record:
    """One record: its id, position in its source, ingestion time and payload (or a claim check)."""

    id: str
    ordinal: int
    ingested_at: str
    payload: Any = None
    payload_ref: str | None = None
    # The record's JSON, made once (`wire_json`): sizing a record for a chunk and encoding the
    # chunk then serialise it once, not twice. Not compared, not copied by `replace`.
    _json: bytes | None = field(default=None, init=False, compare=False, repr=False)
    # The payload's JSON (a `msgspec.Raw`) while `payload` is not decoded (`lazy_payloads`).
    _raw: Any = field(default=None, init=False, compare=False, repr=False)

    def to_wire(self) -> RecordWire:
        """The record as a JSON object. A payload left undecoded (`lazy_payloads`) that cannot
        be decoded after all (a number out of range) is given as its text, in `payload_json`
        instead of `payload`: its record can still be quarantined, and no stage reads it."""
        wire: RecordWire = {"id": self.id, "ordinal": self.ordinal, "ingested_at": self.ingested_at}
        if self.payload_ref is not None:
            wire["payload_ref"] = self.payload_ref
            return wire
        try:
            wire["payload"] = self.payload
        except MalformedEnvelopeError:
            wire["payload_json"] = bytes(self._raw).decode("utf-8")
        return wire

    def raw_payload(self) -> Any:
        """The payload's JSON as it arrived (a `msgspec.Raw`) while it is not decoded, else
        None: a reader that needs a few fields can decode only those."""
        return self._raw if _payload_slot.__get__(self, Record) is _UNDECODED else None

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Record:
        try:
            rid, ordinal, at = wire["id"], wire["ordinal"], wire["ingested_at"]
        except (KeyError, TypeError) as exc:
            raise MalformedEnvelopeError(f"record lacks field {exc}") from None
        if not isinstance(rid, str) or not isinstance(ordinal, int) or not isinstance(at, str):
            raise MalformedEnvelopeError("record id/ordinal/ingested_at have the wrong types")
        ref = wire.get("payload_ref")
        if ref is not None and not isinstance(ref, str):
            raise MalformedEnvelopeError("record payload_ref is not a string")
        if ref is None and "payload" not in wire:
            raise MalformedEnvelopeError(f"record {rid} has neither payload nor payload_ref")
        return cls(rid, ordinal, at, wire.get("payload"), ref)

    def wire_json(self) -> bytes:
        """The record as compact JSON, as it stands in a chunk's records (made once).

        A payload must not be changed in place once its record has been sized or sent.
        """
        encoded = self._json
        if encoded is None:
            with_payload, with_ref = _wire_rows or _make_wire_rows()
            if self.payload_ref is not None:
                row = with_ref(self.id, self.ordinal, self.ingested_at, self.payload_ref)
            else:
                payload = _payload_slot.__get__(self, Record)
                if payload is _UNDECODED:
                    payload = self._raw  # its JSON, written as it came
                row = with_payload(self.id, self.ordinal, self.ingested_at, payload)
            encoded = jsonx.dumps(row)
            _set_json(self, encoded)
        return encoded

    def encoded_size(self) -> int:
        """Bytes this record takes in the plain (uncompressed) JSON of a chunk's records."""
        return len(self.wire_json())

    def with_payload(self, payload: Any) -> Record:
        """This record (id, ordinal, ingestion time) holding `payload` (no claim check):
        `Record(self.id, self.ordinal, self.ingested_at, payload)`, made faster."""
        return _new_record(self.id, self.ordinal, self.ingested_at, payload, None, None)


# `payload` read through a property: an undecoded payload (`lazy_payloads`) is decoded on
# first read and kept. The dataclass's own code (init, eq, repr, replace, pickling) goes
# through it too, so an undecoded record compares, copies and prints as a decoded one.
_payload_slot: Any = Record.__dict__["payload"]


def _read_payload(record: Record) -> Any:
    value = _payload_slot.__get__(record, Record)
    if value is _UNDECODED:
        try:
            value = jsonx.loads(record._raw)
        except ValueError as exc:
            raise MalformedEnvelopeError(f"record {record.id} payload is not JSON: {exc}") from None
        _payload_slot.__set__(record, value)
    return value


def _write_payload(record: Record, value: Any) -> None:
    _payload_slot.__set__(record, value)  # only `object.__setattr__` gets here (frozen)


setattr(Record, "payload", property(_read_payload, _write_payload))  # noqa: B010

_SLOT_SETTERS = tuple(
    Record.__dict__[name].__set__
    for name in ("id", "ordinal", "ingested_at", "payload_ref", "_json", "_raw")
)


_set_json = _SLOT_SETTERS[4]
# `to_wire` as msgspec structs (the same JSON as its dict, made faster): built on first use.
_wire_rows: tuple[Any, Any] | None = None


def _make_wire_rows() -> tuple[Any, Any]:
    global _wire_rows
    import msgspec

    common = [("id", str), ("ordinal", int), ("ingested_at", str)]
    _wire_rows = (
        msgspec.defstruct("RecordWithPayload", [*common, ("payload", Any)]),
        msgspec.defstruct("RecordWithRef", [*common, ("payload_ref", str)]),
    )
    return _wire_rows


def _new_record(rid: str, ordinal: int, at: str, payload: Any, ref: str | None, raw: Any) -> Record:
    """`Record(rid, ordinal, at, payload, ref)` with `_raw` set, for the decoder's typed rows
    (already checked): its slots written directly, at half the cost of the frozen `__init__`."""
    record: Record = object.__new__(Record)
    set_id, set_ordinal, set_at, set_ref, set_json, set_raw = _SLOT_SETTERS
    set_id(record, rid)
    set_ordinal(record, ordinal)
    set_at(record, at)
    _payload_slot.__set__(record, payload)
    set_ref(record, ref)
    set_json(record, None)
    set_raw(record, raw)
    return record


@dataclass(frozen=True, slots=True)
class Chunk:
    """The unit of work between stages: records of one type from one source."""

    chunk_id: str
    type: str
    source: str
    correlation_id: str
    records: tuple[Record, ...]
    attributes: Mapping[str, str] = field(default_factory=dict)
    v: int = ENVELOPE_VERSION
    # The records' JSON array as it arrived (decoded chunks); not compared, not derived.
    _arrived: bytes | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def unit_id(self) -> str:
        """What the stage runtime claims and names the chunk by (`sluice.stage.Unit`)."""
        return self.chunk_id

    def to_wire(self) -> dict[str, Any]:
        wire = self._header()
        wire["records"] = [r.to_wire() for r in self.records]
        return wire

    def encode(self) -> str:
        """The message body: envelope v2 as compact JSON (UTF-8 text; non-ASCII kept as is),
        its records compressed into `records_z` when that is smaller."""
        wire = self._header()
        wire["v"] = ENVELOPE_VERSION
        plain = self._records_json()
        if len(plain) >= COMPRESS_MIN_BYTES:
            packed = _compress(plain)
            if len(packed) < len(plain):
                wire[COMPRESSED_FIELD] = packed
                return jsonx.dumps(wire).decode("utf-8")
        # `"records":[]` closes the header's JSON; the records' own JSON goes between the
        # brackets (the same bytes as encoding the whole envelope at once).
        wire["records"] = []
        head = jsonx.dumps(wire)
        return (head[:-3] + plain + b"}").decode("utf-8")

    def encoded_size(self) -> int:
        """Bytes of the chunk as plain JSON: what chunk budgets are measured in (a compressed
        message is never larger)."""
        wire = self._header()
        wire["records"] = []
        commas = max(len(self.records) - 1, 0)
        return len(jsonx.dumps(wire)) + sum(r.encoded_size() for r in self.records) + commas

    def _header(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "v": self.v,
            "chunk_id": self.chunk_id,
            "type": self.type,
            "source": self.source,
            "correlation_id": self.correlation_id,
        }
        if self.attributes:
            wire["attributes"] = dict(self.attributes)
        return wire

    def _records_json(self) -> bytes:
        return b"[" + b",".join(r.wire_json() for r in self.records) + b"]"

    def records_json(self) -> bytes:
        """The records as a JSON array, as they travel: the bytes a decoded chunk arrived with
        (plain, after decompressing), else the bytes `encode` writes."""
        arrived = self._arrived
        return arrived if arrived is not None else self._records_json()

    def derive(
        self,
        records: Iterable[Record],
        *,
        chunk_id: str,
        attributes: Mapping[str, str] | None = None,
    ) -> Chunk:
        """A chunk of the same type, source and correlation id holding `records`."""
        return replace(
            self,
            chunk_id=chunk_id,
            records=tuple(records),
            attributes=dict(self.attributes if attributes is None else attributes),
            v=ENVELOPE_VERSION,
        )

    def message_attributes(self) -> dict[str, StringAttribute]:
        """SQS/SNS message attributes: type, correlation id, chunk id and routing attributes.

        Raises `ValueError` if a routing attribute clashes with a base one or they are too many.
        """
        values = {
            ATTR_TYPE: self.type,
            ATTR_CORRELATION_ID: self.correlation_id,
            ATTR_CHUNK_ID: self.chunk_id,
        }
        for name, value in self.attributes.items():
            if name in values:
                raise ValueError(f"routing attribute {name!r} clashes with a base attribute")
            values[name] = value
        if len(values) > MAX_MESSAGE_ATTRIBUTES:
            raise ValueError(
                f"{len(values)} message attributes; SQS and SNS raw delivery allow "
                f"{MAX_MESSAGE_ATTRIBUTES}"
            )
        return {k: {"DataType": "String", "StringValue": str(v)} for k, v in values.items()}

    @classmethod
    def decode(cls, body: str | bytes | Mapping[str, Any], *, lazy_payloads: bool = False) -> Chunk:
        """Parse an envelope; `MalformedEnvelopeError` for garbage, a clear version error.

        `lazy_payloads`: each record's payload is decoded when first read (see `Record`).
        """
        if isinstance(body, str | bytes):
            wire, arrived = _load_envelope(body)
            return cls._from_fields(wire, arrived, lazy_payloads)
        return cls._from_fields(body, None, lazy_payloads)

    @classmethod
    def _from_fields(cls, wire: Any, arrived: bytes | None, lazy_payloads: bool) -> Chunk:
        """`decode` of a parsed envelope; `arrived`: its `records` as JSON text, if it had them."""
        if not isinstance(wire, Mapping):
            raise MalformedEnvelopeError("message body is not a JSON object")
        v = wire.get("v")
        if v is None:
            raise MalformedEnvelopeError("message body has no envelope version 'v'")
        if v not in SUPPORTED_VERSIONS:
            raise UnsupportedVersionError(
                f"envelope version {v!r} is not supported by this stage "
                f"(supported: {sorted(SUPPORTED_VERSIONS)}); upgrade the stage and redrive"
            )
        try:
            header = {k: wire[k] for k in ("chunk_id", "type", "source", "correlation_id")}
            plain = _records_of(wire, v, arrived)
        except KeyError as exc:
            raise MalformedEnvelopeError(f"envelope lacks field {exc}") from None
        for name, value in header.items():
            if not isinstance(value, str) or not value:
                raise MalformedEnvelopeError(f"envelope field {name!r} is not a non-empty string")
        if isinstance(plain, bytes):
            records = _records_from_json(plain, lazy_payloads)
        elif isinstance(plain, list):
            records = tuple(Record.from_wire(r) for r in plain)
        else:
            raise MalformedEnvelopeError("envelope 'records' is not a list")
        attributes = wire.get("attributes") or {}
        if not isinstance(attributes, Mapping):
            raise MalformedEnvelopeError("envelope 'attributes' is not an object")
        chunk = cls(
            chunk_id=header["chunk_id"],
            type=header["type"],
            source=header["source"],
            correlation_id=header["correlation_id"],
            records=records,
            attributes={str(k): str(val) for k, val in attributes.items()},
            v=v,
        )
        if isinstance(plain, bytes):
            object.__setattr__(chunk, "_arrived", plain)
        return chunk


def attributes_size(attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """Bytes SQS and SNS count for message attributes: each one's name, type and value."""
    size = 0
    for name, attribute in attributes.items():
        size += len(name.encode("utf-8")) + len(str(attribute.get("DataType", "")).encode("utf-8"))
        size += len(str(attribute.get("StringValue", "")).encode("utf-8"))
    return size


def _load(body: str | bytes) -> Any:
    try:
        return jsonx.loads(body)
    except ValueError as exc:
        raise MalformedEnvelopeError(f"message body is not JSON: {exc}") from None


def zlib_codec() -> Any:
    """The module that makes and reads `records_z`'s zlib streams (chosen on first use): ISA-L's
    `isal_zlib` if installed (the same API and format, ~4x faster to compress), else `zlib`."""
    global _deflate
    if _deflate is None:
        try:
            from isal import isal_zlib
        except ImportError:
            _deflate = zlib
        else:
            _deflate = isal_zlib
    return _deflate


def _compress(plain: bytes) -> str:
    packed = base64.urlsafe_b64encode(zlib_codec().compress(plain, ZLIB_LEVEL))
    return packed.rstrip(b"=").decode("ascii")


def _unbase64(packed: str) -> bytes:
    """`records_z`'s bytes (URL-safe base64, padding optional). msgspec's base64 decoder (twice
    binascii's speed) reads the standard alphabet, strictly; what it refuses goes to the
    standard library's strict decoder, which accepts the same and says what is wrong."""
    global _base64_decoder
    if _base64_decoder is None:
        import msgspec

        _base64_decoder = msgspec.json.Decoder(bytes)
    padded = packed + "=" * (-len(packed) % 4)
    try:
        data: bytes = _base64_decoder.decode(
            b'"' + padded.encode("ascii").translate(_TO_STANDARD_BASE64) + b'"'
        )
    except Exception:  # not ASCII, not base64, or a quote or escape msgspec would read
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    return data


def _load_envelope(body: str | bytes) -> tuple[Any, bytes | None]:
    """An envelope's fields, and its `records` as the JSON text they came in (None if absent).

    A body that is not a JSON object comes back as what it is, for `Chunk.decode` to refuse.
    """
    global _envelope_decoder
    if _envelope_decoder is None:
        import msgspec

        _envelope_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
    try:
        fields = _envelope_decoder.decode(body)
    except Exception:  # not an object (or not JSON): the general parse says which
        return _load(body), None
    records = fields.pop("records", None)
    wire = {name: _load(value) for name, value in fields.items()}
    if records is not None:
        wire["records"] = None  # present; its text is returned apart
    return wire, None if records is None else bytes(records)


def _records_of(wire: Mapping[str, Any], version: int, arrived: bytes | None) -> Any:
    """An envelope's records: the JSON text of `records` (as it arrived, when the envelope was
    text), `records_z` decompressed (v2), or the list of a decoded envelope."""
    packed = wire.get(COMPRESSED_FIELD)
    if packed is None:
        return wire["records"] if arrived is None else arrived
    if version < 2:
        raise MalformedEnvelopeError(f"'{COMPRESSED_FIELD}' needs envelope version 2")
    if not isinstance(packed, str):
        raise MalformedEnvelopeError(f"envelope '{COMPRESSED_FIELD}' is not a string")
    codec = zlib_codec()
    try:
        data = _unbase64(packed)
        inflate = codec.decompressobj()
        plain = inflate.decompress(data, MAX_RECORDS_BYTES)
    except (binascii.Error, ValueError, zlib.error, codec.error) as exc:
        raise MalformedEnvelopeError(
            f"envelope '{COMPRESSED_FIELD}' is unreadable: {exc}"
        ) from None
    # zlib leaves the input it did not inflate in `unconsumed_tail`; ISA-L may have taken it in.
    if inflate.unconsumed_tail or (not inflate.eof and len(plain) >= MAX_RECORDS_BYTES):
        raise MalformedEnvelopeError(
            f"envelope '{COMPRESSED_FIELD}' expands past {MAX_RECORDS_BYTES} bytes"
        )
    if not inflate.eof:
        raise MalformedEnvelopeError(f"envelope '{COMPRESSED_FIELD}' is truncated")
    return plain


def _record_decoder(lazy: bool) -> Any:
    """msgspec's decoder of a records array into typed rows (payloads kept as JSON if lazy)."""
    global _ABSENT
    decoder = _record_decoders.get(lazy)
    if decoder is None:
        import msgspec

        _ABSENT = msgspec.UNSET
        row = msgspec.defstruct(
            "WireRecord",
            [
                ("id", str),
                ("ordinal", int),
                ("ingested_at", str),
                ("payload", msgspec.Raw if lazy else Any, msgspec.UNSET),
                ("payload_ref", str | None, None),
            ],
        )
        decoder = _record_decoders[lazy] = msgspec.json.Decoder(list[row])  # type: ignore[valid-type]
    return decoder


def _records_from_json(plain: bytes, lazy: bool) -> tuple[Record, ...]:
    """The records of a records array's JSON text. Typed rows when every record is well
    formed; anything else goes the general way (`Record.from_wire`), which says what is wrong."""
    try:
        rows = _record_decoder(lazy).decode(plain)
        if lazy:
            plain.decode("utf-8")  # what stays undecoded is still checked to be text
    except Exception:
        rows = None
    if rows is not None and all(
        row.payload_ref is not None or row.payload is not _ABSENT for row in rows
    ):
        if lazy:
            return tuple(
                _new_record(row.id, row.ordinal, row.ingested_at, None, row.payload_ref, None)
                if row.payload is _ABSENT
                else _new_record(
                    row.id, row.ordinal, row.ingested_at, _UNDECODED, row.payload_ref, row.payload
                )
                for row in rows
            )
        return tuple(
            _new_record(
                row.id,
                row.ordinal,
                row.ingested_at,
                None if row.payload is _ABSENT else row.payload,
                row.payload_ref,
                None,
            )
            for row in rows
        )
    wire = _load(plain)
    if not isinstance(wire, list):
        raise MalformedEnvelopeError("envelope 'records' is not a list")
    return tuple(Record.from_wire(r) for r in wire)


def chunk_from_sqs_body(body: str, *, lazy_payloads: bool = False) -> Chunk:
    """Decode an SQS body: an envelope, or an SNS notification wrapping one (non-raw delivery)."""
    wire, arrived = _load_envelope(body)
    if isinstance(wire, Mapping) and wire.get("Type") == "Notification" and "Message" in wire:
        return Chunk.decode(wire["Message"], lazy_payloads=lazy_payloads)
    return Chunk._from_fields(wire, arrived, lazy_payloads)


def chunk_from_sns_record(record: Mapping[str, Any], *, lazy_payloads: bool = False) -> Chunk:
    """Decode one `Records[]` entry of an SNS → Lambda event."""
    try:
        message = record["Sns"]["Message"]
    except (KeyError, TypeError):
        raise MalformedEnvelopeError("SNS record has no Sns.Message") from None
    return Chunk.decode(message, lazy_payloads=lazy_payloads)


@dataclass(frozen=True)
class ChunkLimits:
    """Chunk boundaries: at most `max_records` records and `max_bytes` encoded bytes."""

    max_records: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_bytes < 256:
            raise ValueError(f"unusable chunk limits {self}")


def pack_records(
    records: Iterable[Record],
    make_chunk: Callable[[int, tuple[Record, ...]], Chunk],
    limits: ChunkLimits,
    *,
    first_ordinal: int = 0,
    on_oversize: Callable[[Record], Record | None] | None = None,
) -> Iterator[Chunk]:
    """Pack `records` into chunks within `limits`, in order; boundaries depend only on input.

    `make_chunk(ordinal, records)` builds a chunk (and so its id). A record too big for a
    chunk on its own is passed to `on_oversize`, which returns a smaller stand-in (a claim
    check) or None (it was quarantined); without it, or if the stand-in is still too big,
    `OversizeRecordError` is raised.
    """
    ordinal = first_ordinal
    overhead = _overhead(make_chunk, ordinal)
    batch: list[Record] = []
    size = overhead
    for record in records:
        rsize = record.encoded_size()
        if overhead + rsize > limits.max_bytes:
            if on_oversize is None:
                raise OversizeRecordError(
                    f"record {record.id} is {rsize} bytes encoded; a chunk holds "
                    f"{limits.max_bytes - overhead}"
                )
            stand_in = on_oversize(record)
            if stand_in is None:
                continue
            record, rsize = stand_in, stand_in.encoded_size()
            if overhead + rsize > limits.max_bytes:
                raise OversizeRecordError(f"record {record.id} is still too large ({rsize} B)")
        added = rsize + (1 if batch else 0)
        if batch and (len(batch) >= limits.max_records or size + added > limits.max_bytes):
            yield make_chunk(ordinal, tuple(batch))
            ordinal += 1
            overhead = _overhead(make_chunk, ordinal)
            batch, size, added = [], overhead, rsize
        batch.append(record)
        size += added
    if batch:
        yield make_chunk(ordinal, tuple(batch))


def _overhead(make_chunk: Callable[[int, tuple[Record, ...]], Chunk], ordinal: int) -> int:
    return make_chunk(ordinal, ()).encoded_size()


def object_correlation_id(bucket: str, key: str, etag: str) -> str:
    """The correlation id of one landed object: deterministic from (bucket, key, ETag), so a
    duplicate event converges on the same id, and two versions with the same bytes share it.

    `etag` without the quotes S3 puts around it in listings and `HeadObject`."""
    return "ingest-" + _digest(bucket, key, etag)


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "ATTR_CORRELATION_ID",
    "ATTR_TYPE",
    "BASE_ATTRIBUTES",
    "MAX_MESSAGE_ATTRIBUTES",
    "Chunk",
    "ChunkLimits",
    "Record",
    "StringAttribute",
    "attributes_size",
    "chunk_id",
    "derive_chunk_id",
    "object_correlation_id",
    "pack_records",
    "record_id",
    "utc_now_iso",
]
