"""Split a decompressed byte stream into items: JSON Lines, a JSON array, or CSV with a header.

Each item has its ordinal and the stream offset just after it, so a follow-up invocation can
resume at any good record's end. A bad line, row or element is an item with a reason, and so
is one that makes the parser fail in any way (issue 24: a hostile record never costs the good
ones beside it); only what makes the rest unreadable raises `ObjectRemainderError`. No I/O,
memory bounded by the largest record (`max_item_bytes`).
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
from chalicelib.streams import UTF8, ObjectRemainderError, bom_of, peek, reencoded, skip
from sluice import jsonx

# What a quarantine entry keeps of an over-long line.
RAW_KEEP_BYTES = 64 * 1024
# Deepest nesting of arrays and objects a record may have (the record itself is level 1).
# The parsers' own limits (msgspec's, the standard library's RecursionError) depend on how
# deep the stack already is, so a record one parser accepts could break a later step (a
# chunk's encoding here, its decoding in cleanse, with its whole chunk): a fixed limit, far
# below those, is checked here once.
MAX_NESTING = 256
_SPACE = re.compile(r"[ \t\r\n]*")
# A JSON string (group 1 is its closing quote: None if the text ends inside it), or a run of
# opening or of closing brackets; what lies between them does not change the nesting depth.
_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(")?|[\[{]+|[\]}]+', re.DOTALL)


@dataclass(frozen=True, slots=True)
class Item:
    """One line/row/element: a payload, or (`reason` set) bad input kept as `raw`.

    `line` is the 1-based physical line the item starts on and `end_line` the one it ends
    on (JSON Lines, CSV); both are 0 for a JSON array's elements, which are named by number.
    """

    ordinal: int
    end: int
    payload: dict[str, Any] | None = None
    raw: bytes | str = b""
    reason: str | None = None
    error_class: str = "ParseError"
    line: int = 0
    end_line: int = 0

    @property
    def where(self) -> str:
        """Where the item is, for people: "line 61" (as editors count) or "element 61"."""
        return f"line {self.line}" if self.line else f"element {self.ordinal + 1}"


@dataclass
class ParseState:
    """Where a parse starts: stream offset, next ordinal, and the CSV header once known.

    While parsing, `line` is the number of physical lines read whole (JSON Lines, CSV) and
    `encoding` the one a byte-order mark named, if the stream is re-encoded as UTF-8.
    """

    offset: int = 0
    ordinal: int = 0
    resume: bool = False  # True: continuing after a record (JSON: inside the array)
    header: list[str] | None = field(default=None)
    line: int = 0
    encoding: str | None = None


def parse(
    fmt: Format, blocks: Iterable[bytes], state: ParseState, max_item_bytes: int
) -> Iterator[Item]:
    """Items of the stream. At offset 0 a byte-order mark decides the encoding: a UTF-8 BOM
    is skipped (and counted in offsets); after a UTF-16/32 one the stream is re-encoded as
    UTF-8 (`state.encoding`), and offsets count bytes of that UTF-8 stream.

    Lazy: nothing is read before the first item is asked for, so read errors surface there.
    """
    impl = {Format.JSONL: _jsonl, Format.JSON: _json_array, Format.CSV: _csv}[fmt]
    if state.offset == 0 and not state.resume:
        head, blocks = peek(blocks, 4)
        encoding = bom_of(head)
        if encoding == UTF8:
            state.offset += len(codecs.BOM_UTF8)
            blocks = skip(blocks, len(codecs.BOM_UTF8))
        elif encoding is not None:
            state.encoding = encoding
            blocks = reencoded(blocks, encoding)
    yield from impl(blocks, state, max_item_bytes)


def _unexpected(exc: Exception) -> str:
    """The reason for an item that made a parser fail in a way it does not foresee."""
    if isinstance(exc, MemoryError):
        raise exc  # not the item's fault alone: the invocation fails and is retried
    return f"could not be parsed ({type(exc).__name__}: {exc})"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(payload, None) for a JSON object, else (None, why not).

    Strict RFC 8259 (`sluice.jsonx`, ~2x the standard library's speed): NaN, Infinity, lone
    surrogates and numbers beyond a double's range are not JSON, nor is nesting deeper than
    `MAX_NESTING`. A refused line is parsed again by the standard library only for its
    reason, which names line, column and token.
    """
    try:
        value = jsonx.loads(text)
    except jsonx.JSONDecodeError as exc:
        return None, _why_not_json(text, str(exc))
    if not isinstance(value, dict):
        return None, f"a record must be a JSON object, not {type(value).__name__}"
    if len(text) > 2 * MAX_NESTING and too_deep(text):  # shorter text cannot nest that deep
        return None, _TOO_DEEP
    return value, None


_TOO_DEEP = f"JSON nested more than {MAX_NESTING} levels deep"


def _why_not_json(text: str, fallback: str) -> str:
    if too_deep(text):
        return _TOO_DEEP  # msgspec hit its own depth limit, which depends on the stack
    try:
        json.loads(text, parse_constant=_reject_constant)
    except ValueError as detailed:
        return f"not valid JSON: {detailed}"
    except Exception:  # the re-parse only words the reason: it must not fail
        pass
    return f"not valid JSON: {fallback}"


def too_deep(text: str, limit: int = MAX_NESTING) -> bool:
    """True if arrays and objects in `text` nest more than `limit` deep (brackets in strings
    do not count). Cheap for nearly every record: scanned only if it has enough brackets."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for m in _STRUCTURE.finditer(text):
        first = text[m.start()]
        if first == "[" or first == "{":
            depth += m.end() - m.start()
            if depth > limit:
                return True
        elif first != '"':
            depth -= m.end() - m.start()
    return False


def container_end(text: str, start: int) -> int | None:
    """The index after the array or object starting at `text[start]`, None if it does not
    close within `text`. Iterative, so any depth is fine (the standard library's scanner
    raises RecursionError); it checks brackets and strings only, not that the JSON is valid.
    """
    if text[start : start + 1] not in ("[", "{"):
        return None
    depth = 0
    for m in _STRUCTURE.finditer(text, start):
        first = text[m.start()]
        if first == '"':
            if m.group(1) is None:
                return None  # the text ends inside a string
            continue
        run = m.end() - m.start()
        if first == "[" or first == "{":
            depth += run
        elif run >= depth:
            return m.start() + depth
        else:
            depth -= run
    return None


# ---------------------------------------------------------------------------- JSON Lines


def _jsonl(blocks: Iterable[bytes], state: ParseState, max_line: int) -> Iterator[Item]:
    ordinal = state.ordinal
    line = state.line  # physical lines read whole
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
            line += 1
            if overlong is not None:
                yield _overlong(ordinal, end, line, overlong, max_line)
                ordinal += 1
                overlong = None
            elif nl - pos > max_line:
                yield _overlong(ordinal, end, line, data[pos : pos + RAW_KEEP_BYTES], max_line)
                ordinal += 1
            else:
                item = _jsonl_line(data[pos:nl], ordinal, end, line)
                if item is not None:
                    yield item
                    ordinal += 1
            pos = nl + 1
        state.line = line
        carry_start += pos
        carry = data[pos:]
        if len(carry) > max_line:
            if overlong is None:
                overlong = carry[:RAW_KEEP_BYTES]
            carry_start += len(carry)
            carry = b""
    end = carry_start + len(carry)
    if overlong is not None:
        yield _overlong(ordinal, end, line + 1, overlong, max_line)
    elif carry:
        item = _jsonl_line(carry, ordinal, end, line + 1)
        if item is not None:
            yield item


def _overlong(ordinal: int, end: int, line: int, head: bytes, max_line: int) -> Item:
    return Item(
        ordinal,
        end,
        raw=head,
        reason=f"line longer than {max_line} bytes (first {len(head)} kept)",
        error_class="OversizeRecordError",
        line=line,
        end_line=line,
    )


def _jsonl_line(data: bytes, ordinal: int, end: int, line: int) -> Item | None:
    if data.endswith(b"\r"):
        data = data[:-1]
    if not data.strip():
        return None  # blank lines are not records
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Item(
            ordinal,
            end,
            raw=data,
            reason=f"invalid UTF-8: {exc}",
            error_class="EncodingError",
            line=line,
            end_line=line,
        )
    try:
        payload, problem = loads_object(text)
    except Exception as exc:
        payload, problem = None, _unexpected(exc)
    if payload is None:
        return Item(ordinal, end, raw=text, reason=problem, line=line, end_line=line)
    return Item(ordinal, end, payload=payload, line=line, end_line=line)


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
                except Exception as exc:
                    # The scanner gave up inside the element (RecursionError when it nests
                    # deeply): find its end without it, and let it cost that element only.
                    closed = container_end(self.buf, self.pos)
                    if closed is not None and closed - self.pos <= self.max_item:
                        return self._failed(exc, closed - self.pos)
                    if self.eof:
                        raise ObjectRemainderError(
                            f"unreadable JSON array element at byte {self.offset} "
                            f"({type(exc).__name__}: {exc})"
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
        try:
            payload, problem = loads_object(text)
        except Exception as exc:
            payload, problem = None, _unexpected(exc)
        if payload is None:
            return Item(ordinal, self.offset, raw=text, reason=problem)
        return Item(ordinal, self.offset, payload=payload)

    def _failed(self, exc: Exception, length: int) -> Item:
        """The element of `length` characters that the scanner failed on, with a reason."""
        reason = _unexpected(exc)
        text = self._consume(length)
        ordinal, self.ordinal = self.ordinal, self.ordinal + 1
        if too_deep(text):
            reason = _TOO_DEEP
        return Item(ordinal, self.offset, raw=text, reason=reason)

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
    `failed` keeps an error of the stream itself (S3, gzip): that one is not a row's fault.
    """

    def __init__(self, blocks: Iterable[bytes], offset: int, line: int, max_row: int) -> None:
        self._blocks = iter(blocks)
        self._data = b""
        self._pos = 0
        self.offset = offset  # stream offset after the last line handed out
        self.line = line  # physical lines handed out (or skipped for length)
        self.failed: Exception | None = None
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
            self.line += 1
            if self._skipping:
                self._skipping = False
                raise _RowTooLargeError
            self.row.append(line)
            self.row_bytes += len(line)
            if self.row_bytes > self.max_row:
                raise _RowTooLargeError
            return line.decode("utf-8", "surrogateescape")

    def _fill(self) -> None:
        try:
            for block in self._blocks:
                if block:
                    self._data = self._data[self._pos :] + block
                    self._pos = 0
                    return
        except Exception as exc:
            self.failed = exc
            raise
        self.eof = True


def _csv(blocks: Iterable[bytes], state: ParseState, max_row: int) -> Iterator[Item]:
    csv.field_size_limit(max(csv.field_size_limit(), max_row))
    lines = _Lines(blocks, state.offset, state.line, max_row)
    reader = csv.reader(lines, strict=True)
    header = state.header
    ordinal = state.ordinal
    while True:
        lines.start_row()
        first_line = lines.line + 1
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
        except Exception as exc:
            if lines.failed is not None:
                raise  # reading the stream failed, not parsing this row
            row, problem = [], _unexpected(exc)
        finally:
            state.line = lines.line
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
            yield Item(
                ordinal,
                lines.offset,
                raw=raw,
                reason=problem,
                error_class=error_class,
                line=first_line,
                end_line=lines.line,
            )
        else:
            payload = dict(zip(header, row, strict=True))
            yield Item(ordinal, lines.offset, payload, line=first_line, end_line=lines.line)
        ordinal += 1


def _check_header(row: list[str]) -> None:
    if any(not name.strip() for name in row):
        raise ObjectRemainderError(f"CSV header has an empty column name: {row!r}")
    if len(set(row)) != len(row):
        raise ObjectRemainderError(f"CSV header repeats a column name: {row!r}")
