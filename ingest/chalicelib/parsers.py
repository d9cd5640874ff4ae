"""Split a decompressed byte stream into items: JSON Lines, a JSON array, or CSV with a header.

Each item has its ordinal and the stream offset just after it, so a follow-up invocation can
resume at any good record's end. A bad line, row or element is an item with a reason; what
makes the rest unreadable raises `ObjectRemainderError`. No I/O, memory bounded by the
largest record (`max_item_bytes`).
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from chalicelib.objects import Format
from chalicelib.streams import ObjectRemainderError, strip_bom
from sluice import jsonx

# What a quarantine entry keeps of an over-long line.
RAW_KEEP_BYTES = 64 * 1024
_SPACE = re.compile(r"[ \t\r\n]*")


@dataclass(frozen=True, slots=True)
class Item:
    """One line/row/element: a payload, or (`reason` set) bad input kept as `raw`."""

    ordinal: int
    end: int
    payload: dict[str, Any] | None = None
    raw: bytes | str = b""
    reason: str | None = None
    error_class: str = "ParseError"


@dataclass
class ParseState:
    """Where a parse starts: stream offset, next ordinal, and the CSV header once known."""

    offset: int = 0
    ordinal: int = 0
    resume: bool = False  # True: continuing after a record (JSON: inside the array)
    header: list[str] | None = field(default=None)


def parse(
    fmt: Format, blocks: Iterable[bytes], state: ParseState, max_item_bytes: int
) -> Iterator[Item]:
    """Items of the stream; a UTF-8 BOM at offset 0 is skipped (and counted in offsets).

    Lazy: nothing is read before the first item is asked for, so read errors surface there.
    """
    impl = {Format.JSONL: _jsonl, Format.JSON: _json_array, Format.CSV: _csv}[fmt]
    if state.offset == 0 and not state.resume:
        skipped, blocks = strip_bom(blocks)
        state.offset += skipped
    yield from impl(blocks, state, max_item_bytes)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(payload, None) for a JSON object, else (None, why not).

    Strict RFC 8259 (`sluice.jsonx`, ~2x the standard library's speed): NaN, Infinity, lone
    surrogates and numbers beyond a double's range are not JSON. A refused line is parsed
    again by the standard library only for its reason, which names line, column and token.
    """
    try:
        value = jsonx.loads(text)
    except jsonx.JSONDecodeError as exc:
        try:
            json.loads(text, parse_constant=_reject_constant)
        except ValueError as detailed:
            return None, f"not valid JSON: {detailed}"
        return None, f"not valid JSON: {exc}"
    if not isinstance(value, dict):
        return None, f"a record must be a JSON object, not {type(value).__name__}"
    return value, None


# ---------------------------------------------------------------------------- JSON Lines


def _jsonl(blocks: Iterable[bytes], state: ParseState, max_line: int) -> Iterator[Item]:
    ordinal = state.ordinal
    carry = b""
    carry_start = state.offset  # stream offset of carry[0]
    overlong: bytes | None = None  # head of a line being skipped for length
    for block in blocks:
        data = carry + block if carry else block
        pos = 0
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            end = carry_start + nl + 1
            if overlong is not None:
                yield _overlong(ordinal, end, overlong, max_line)
                ordinal += 1
                overlong = None
            elif nl - pos > max_line:
                yield _overlong(ordinal, end, data[pos : pos + RAW_KEEP_BYTES], max_line)
                ordinal += 1
            else:
                item = _jsonl_line(data[pos:nl], ordinal, end)
                if item is not None:
                    yield item
                    ordinal += 1
            pos = nl + 1
        carry_start += pos
        carry = data[pos:]
        if len(carry) > max_line:
            if overlong is None:
                overlong = carry[:RAW_KEEP_BYTES]
            carry_start += len(carry)
            carry = b""
    end = carry_start + len(carry)
    if overlong is not None:
        yield _overlong(ordinal, end, overlong, max_line)
    elif carry:
        item = _jsonl_line(carry, ordinal, end)
        if item is not None:
            yield item


def _overlong(ordinal: int, end: int, head: bytes, max_line: int) -> Item:
    return Item(
        ordinal,
        end,
        raw=head,
        reason=f"line longer than {max_line} bytes (first {len(head)} kept)",
        error_class="OversizeRecordError",
    )


def _jsonl_line(line: bytes, ordinal: int, end: int) -> Item | None:
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line.strip():
        return None  # blank lines are not records
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Item(
            ordinal, end, raw=line, reason=f"invalid UTF-8: {exc}", error_class="EncodingError"
        )
    payload, problem = loads_object(text)
    if payload is None:
        return Item(ordinal, end, raw=text, reason=problem)
    return Item(ordinal, end, payload=payload)


# ---------------------------------------------------------------------------- JSON array


def _json_array(blocks: Iterable[bytes], state: ParseState, max_item: int) -> Iterator[Item]:
    """A `raw_decode` loop over a bounded text buffer; see `_ArrayReader`."""
    return _ArrayReader(blocks, state, max_item).items()


class _ArrayReader:
    """Incremental parser of `[ {…}, {…} ]` that knows the byte offset after each element.

    Why not ijson: a follow-up invocation resumes at a byte offset right after a chunk's last
    record, and ijson does not report element offsets. `raw_decode` (the stdlib's C scanner)
    does, and a buffer holding at most one element plus one block keeps memory flat.
    """

    def __init__(self, blocks: Iterable[bytes], state: ParseState, max_item: int) -> None:
        self._blocks = iter(blocks)
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._json = json.JSONDecoder(parse_constant=_reject_constant)
        self.buf = ""
        self.pos = 0  # next unread character of buf
        self.offset = state.offset  # stream offset of buf[pos]
        self.eof = False
        self.ordinal = state.ordinal
        self.resume = state.resume
        self.max_item = max_item

    def _more(self) -> bool:
        """Append one block to the unread text; False at the end of the stream."""
        if self.eof:
            return False
        for block in self._blocks:
            try:
                text = self._decoder.decode(block)
            except UnicodeDecodeError as exc:
                raise ObjectRemainderError(f"invalid UTF-8 in JSON array: {exc}") from None
            if text:
                self.buf = self.buf[self.pos :] + text
                self.pos = 0
                return True
        try:
            self.buf = self.buf[self.pos :] + self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ObjectRemainderError(f"invalid UTF-8 at the end of JSON array: {exc}") from None
        self.pos = 0
        self.eof = True
        return False

    def _consume(self, n: int) -> str:
        taken = self.buf[self.pos : self.pos + n]
        self.pos += n
        self.offset += n if taken.isascii() else len(taken.encode("utf-8"))
        return taken

    def _unread(self) -> int:
        return len(self.buf) - self.pos

    def _next_char(self) -> str | None:
        """Skip whitespace; the next significant character (not consumed), None at the end."""
        while True:
            start = _SPACE.match(self.buf, self.pos)
            skipped = start.end() - self.pos if start else 0
            self._consume(skipped)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return None

    def _expect(self, allowed: str, where: str) -> str:
        char = self._next_char()
        if char is None or char not in allowed:
            found = "the end of the object" if char is None else repr(char)
            raise ObjectRemainderError(
                f"broken JSON array at byte {self.offset}: expected {where}, found {found}"
            )
        self._consume(1)
        return char

    def items(self) -> Iterator[Item]:
        if not self.resume:
            self._expect("[", "'[' (a .json object must hold a JSON array)")
            if self._next_char() == "]":
                self._consume(1)
                self._trailing()
                return
        else:
            # Resuming right after an element: a ',' or the closing ']' follows.
            if self._expect(",]", "',' or ']'") == "]":
                self._trailing()
                return
        while True:
            yield self._element()
            if self._expect(",]", "',' or ']'") == "]":
                self._trailing()
                return

    def _element(self) -> Item:
        if self._next_char() is None:
            raise ObjectRemainderError(f"JSON array ends inside, at byte {self.offset}")
        need = 0
        while True:
            unread = self._unread()
            # Parse again only once the unread text has doubled (parsing stays linear), at
            # the end, or when it is past the maximum (to judge the element for good).
            if unread >= need or self.eof or unread > self.max_item:
                try:
                    value, end = self._json.raw_decode(self.buf, self.pos)
                except ValueError as exc:
                    if self.eof:
                        raise ObjectRemainderError(
                            f"invalid JSON array element at byte {self.offset}: {exc}"
                        ) from None
                else:
                    # A number or literal at the very end of the text may go on: read more.
                    if end < len(self.buf) or self.eof:
                        if end - self.pos > self.max_item:
                            break  # judged by its length alone, however the blocks fell
                        return self._item(value, end - self.pos)
                if unread > self.max_item:
                    break  # incomplete (or invalid) past the maximum
                need = 2 * unread
            self._more()
        raise ObjectRemainderError(
            f"JSON array element at byte {self.offset} is larger than {self.max_item} "
            "characters (SLUICE_RECORD_MAX_BYTES) or is not valid JSON"
        )

    def _item(self, value: Any, length: int) -> Item:
        text = self._consume(length)
        ordinal, self.ordinal = self.ordinal, self.ordinal + 1
        if not isinstance(value, dict):
            return Item(
                ordinal,
                self.offset,
                raw=text,
                reason=f"a record must be a JSON object, not {type(value).__name__}",
            )
        # The scanner found the element's end; the strict parse judges it, as for JSON Lines
        # (the standard library lets lone surrogates and 1e400 through).
        payload, problem = loads_object(text)
        if payload is None:
            return Item(ordinal, self.offset, raw=text, reason=problem)
        return Item(ordinal, self.offset, payload=payload)

    def _trailing(self) -> None:
        if self._next_char() is not None:
            raise ObjectRemainderError(
                f"data after the end of the JSON array at byte {self.offset}"
            )


# ---------------------------------------------------------------------------- CSV


class _RowTooLargeError(Exception):
    pass


class _Lines:
    """Lines (bytes → str with surrogateescape) for `csv.reader`, with offsets and a cap.

    A class, not a generator: raising from `__next__` (row too large) must not end it.
    """

    def __init__(self, blocks: Iterable[bytes], offset: int, max_row: int) -> None:
        self._blocks = iter(blocks)
        self._data = b""
        self._pos = 0
        self.offset = offset  # stream offset after the last line handed out
        self.max_row = max_row
        self.row: list[bytes] = []
        self.row_bytes = 0
        self._skipping = False
        self.eof = False

    def start_row(self) -> None:
        self.row = []
        self.row_bytes = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        while True:
            nl = self._data.find(b"\n", self._pos)
            if nl >= 0:
                line = self._data[self._pos : nl + 1]
                self._pos = nl + 1
            elif self.eof:
                if self._pos >= len(self._data):
                    raise StopIteration
                line = self._data[self._pos :]
                self._pos = len(self._data)
            else:
                rest = len(self._data) - self._pos
                if rest + self.row_bytes > self.max_row and not self._skipping:
                    self.row.append(self._data[self._pos : self._pos + RAW_KEEP_BYTES])
                    self._skipping = True
                if self._skipping:
                    self.offset += rest
                    self._data, self._pos = b"", 0
                self._fill()
                continue
            self.offset += len(line)
            if self._skipping:
                self._skipping = False
                raise _RowTooLargeError
            self.row.append(line)
            self.row_bytes += len(line)
            if self.row_bytes > self.max_row:
                raise _RowTooLargeError
            return line.decode("utf-8", "surrogateescape")

    def _fill(self) -> None:
        for block in self._blocks:
            if block:
                self._data = self._data[self._pos :] + block
                self._pos = 0
                return
        self.eof = True


def _csv(blocks: Iterable[bytes], state: ParseState, max_row: int) -> Iterator[Item]:
    csv.field_size_limit(max(csv.field_size_limit(), max_row))
    lines = _Lines(blocks, state.offset, max_row)
    reader = csv.reader(lines, strict=True)
    header = state.header
    ordinal = state.ordinal
    while True:
        lines.start_row()
        problem: str | None = None
        error_class = "ParseError"
        try:
            row = next(reader)
        except StopIteration:
            return
        except _RowTooLargeError:
            row, problem = [], f"CSV row longer than {max_row} bytes"
            error_class = "OversizeRecordError"
        except csv.Error as exc:
            row, problem = [], f"malformed CSV row: {exc}"
        if problem is None and not row:
            continue  # blank line
        raw = b"".join(lines.row)
        if problem is None:
            try:
                "".join(row).encode("utf-8")
            except UnicodeEncodeError:
                problem, error_class = "invalid UTF-8 in CSV row", "EncodingError"
        if header is None:
            if problem is not None:
                raise ObjectRemainderError(f"unusable CSV header: {problem}")
            _check_header(row)
            header = row
            state.header = row
            continue
        if problem is None and len(row) != len(header):
            problem = f"CSV row has {len(row)} fields; the header has {len(header)}"
        if problem is not None:
            yield Item(ordinal, lines.offset, raw=raw, reason=problem, error_class=error_class)
        else:
            yield Item(ordinal, lines.offset, payload=dict(zip(header, row, strict=True)))
        ordinal += 1


def _check_header(row: list[str]) -> None:
    if any(not name.strip() for name in row):
        raise ObjectRemainderError(f"CSV header has an empty column name: {row!r}")
    if len(set(row)) != len(row):
        raise ObjectRemainderError(f"CSV header repeats a column name: {row!r}")
