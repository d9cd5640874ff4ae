"""Byte streams in fixed-size blocks: an S3 body, incremental gunzip with bomb guards, what
the first bytes say (compression magic, byte-order mark), UTF-16/32 re-encoded as UTF-8.

Memory stays flat: at most one block (and one bounded decompressed block) is held at a time.
"""

from __future__ import annotations

import codecs
import zlib
from collections.abc import Iterable, Iterator
from typing import Protocol

UTF8 = "utf-8"
# Byte-order marks, longest first: FF FE 00 00 is UTF-32-LE, not UTF-16-LE and a NUL.
BOMS = (
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF8, UTF8),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
BOM_BYTES = {name: bom for bom, name in BOMS}
# Read only after a BOM: the source encodings re-encoded as UTF-8 for the parsers.
REENCODED = frozenset(BOM_BYTES) - {UTF8}
# gzip only (16 + max window); a second member after the first one's end is read too.
GZIP_WBITS = 16 + zlib.MAX_WBITS
GZIP_MAGIC = b"\x1f\x8b\x08"  # ID1 ID2 and CM = deflate (RFC 1952)
# Compressions recognised by their first bytes only to be refused with a clear reason.
_UNSUPPORTED_MAGIC = (
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PK\x03\x04", "zip"),
)
# Enough for every magic above and for bzip2's "BZh" + level + block or end-of-stream magic.
MAGIC_BYTES = 10


class Readable(Protocol):
    def read(self, amt: int | None = ...) -> bytes: ...


class ObjectRemainderError(Exception):
    """The rest of the object cannot be read (corrupt gzip, bomb, broken structure).

    Not a `PermanentError` on purpose: records before it were good and were sent; the
    caller quarantines the remainder once, with `reason`.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Counter:
    """Bytes that went through a stage of the stream (for metrics and the ratio guard)."""

    def __init__(self) -> None:
        self.bytes = 0


def read_blocks(
    body: Readable, block_bytes: int, counter: Counter | None = None
) -> Iterator[bytes]:
    """Blocks of at most `block_bytes` from a file-like body (an S3 `StreamingBody`)."""
    while True:
        block = body.read(block_bytes)
        if not block:
            return
        if counter is not None:
            counter.bytes += len(block)
        yield block


def gunzip(
    blocks: Iterable[bytes],
    *,
    block_bytes: int,
    max_bytes: int,
    max_ratio: int,
    ratio_grace_bytes: int,
    compressed: Counter,
) -> Iterator[bytes]:
    """Decompress gzip incrementally: never more than `block_bytes` of output per step.

    Raises `ObjectRemainderError` on a corrupt or truncated stream, or when the output
    passes `max_bytes`, or `max_ratio` times the compressed input (past the grace size).
    """
    inflater = zlib.decompressobj(GZIP_WBITS)
    fed = 0  # compressed bytes given to the current member's inflater
    out = 0
    for block in blocks:
        pending = block
        while pending:
            fed += len(pending)
            try:
                data = inflater.decompress(pending, block_bytes)
            except zlib.error as exc:
                raise ObjectRemainderError(
                    f"corrupt gzip data after {out} decompressed bytes: {exc}"
                ) from None
            pending = inflater.unconsumed_tail
            fed -= len(pending)
            if inflater.eof:
                # Multi-member gzip: what follows this member's end starts another member.
                pending = inflater.unused_data + pending
                inflater = zlib.decompressobj(GZIP_WBITS)
                fed = 0
            if data:
                out += len(data)
                _guard(out, compressed.bytes, max_bytes, max_ratio, ratio_grace_bytes)
                yield data
    if fed and not inflater.eof:
        raise ObjectRemainderError(
            f"gzip stream truncated after {out} decompressed bytes (no end of stream)"
        )


def _guard(out: int, compressed: int, max_bytes: int, max_ratio: int, grace: int) -> None:
    if out > max_bytes:
        raise ObjectRemainderError(
            f"decompressed size passed {max_bytes} bytes (SLUICE_INGEST_MAX_DECOMPRESSED_BYTES): "
            "possible decompression bomb"
        )
    if out > grace and compressed and out > max_ratio * compressed:
        raise ObjectRemainderError(
            f"decompression ratio passed {max_ratio}:1 ({out} bytes from {compressed}) "
            "(SLUICE_INGEST_MAX_RATIO): possible decompression bomb"
        )


def peek(blocks: Iterable[bytes], count: int) -> tuple[bytes, Iterator[bytes]]:
    """(at least the first `count` bytes, unless the stream is shorter; the whole stream).

    Reads as many blocks as that takes, now: call it where a read error may surface.
    """
    it = iter(blocks)
    head = b""
    for block in it:
        head += block
        if len(head) >= count:
            break

    def whole() -> Iterator[bytes]:
        if head:
            yield head
        yield from it

    return head[:count], whole()


def compression_of(head: bytes) -> str | None:
    """The compression the first bytes of an object announce ("gzip", "bzip2", …), or None.

    Text never starts like this: each magic begins with a control byte or, for bzip2, is
    "BZh" followed by a level digit and a 48-bit block magic.
    """
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bzip2"
    return next((name for magic, name in _UNSUPPORTED_MAGIC if head.startswith(magic)), None)


def bom_of(head: bytes) -> str | None:
    """The encoding a leading byte-order mark names ("utf-8", "utf-16-le", …), or None."""
    return next((name for bom, name in BOMS if head.startswith(bom)), None)


def reencoded(blocks: Iterable[bytes], encoding: str) -> Iterator[bytes]:
    """UTF-8 blocks from a stream in `encoding` that starts with its BOM (dropped here).

    Incremental (a character split between blocks is completed by the next one), so memory
    stays flat; a UTF-16 block of n bytes becomes at most 1.5 n bytes of UTF-8. Text that is
    not valid `encoding` raises `ObjectRemainderError` (what was decoded before it was sent).
    """
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    read = 0  # source bytes given to the decoder, after the BOM
    label = encoding.upper()
    for block in skip(blocks, len(BOM_BYTES[encoding])):
        try:
            text = decoder.decode(block)
        except UnicodeDecodeError as exc:
            # The text before the fault is good: hand it on, so its records are not lost.
            good = exc.object[: exc.start]
            if good:
                yield good.decode(encoding).encode(UTF8)
            at = read - (len(exc.object) - len(block)) + exc.start
            raise ObjectRemainderError(
                f"invalid {label} text at byte {at} after the BOM: {exc.reason}"
            ) from None
        read += len(block)
        if text:
            yield text.encode(UTF8)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ObjectRemainderError(
            f"{label} text ends inside a character ({read} bytes after the BOM)"
        ) from None


def skip(blocks: Iterable[bytes], count: int) -> Iterator[bytes]:
    """Drop the first `count` bytes (a gzip continuation re-reads and discards up to it)."""
    for block in blocks:
        if count >= len(block):
            count -= len(block)
            continue
        yield block[count:] if count else block
        count = 0
