"""Byte streams in fixed-size blocks: an S3 body, incremental gunzip with bomb guards, BOM.

Memory stays flat: at most one block (and one bounded decompressed block) is held at a time.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import Protocol

BOM = b"\xef\xbb\xbf"
# gzip only (16 + max window); a second member after the first one's end is read too.
GZIP_WBITS = 16 + zlib.MAX_WBITS


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


def strip_bom(blocks: Iterable[bytes]) -> tuple[int, Iterator[bytes]]:
    """(bytes skipped, blocks) with a leading UTF-8 BOM removed from the stream."""
    it = iter(blocks)
    head = b""
    for block in it:
        head += block
        if len(head) >= len(BOM):
            break
    skipped = len(BOM) if head.startswith(BOM) else 0

    def rest() -> Iterator[bytes]:
        if head[skipped:]:
            yield head[skipped:]
        yield from it

    return skipped, rest()


def skip(blocks: Iterable[bytes], count: int) -> Iterator[bytes]:
    """Drop the first `count` bytes (a gzip continuation re-reads and discards up to it)."""
    for block in blocks:
        if count >= len(block):
            count -= len(block)
            continue
        yield block[count:] if count else block
        count = 0
