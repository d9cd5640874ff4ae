"""Cleanse one chunk: each record normalised and validated by its type, good ones sent on.

A bad record raises `PermanentError` in the record handler and the stage runtime
quarantines it; nothing invalid is retried. So does a record that makes normalisation or
validation fail in any other way (issue 24: hostile nesting, a rule meeting a value it did not
expect): it costs that record, never its chunk. Only a failed send, a deploy fault
(`ConfigError`) or a transient one fails (and retries) the chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import Any, Protocol

from chalicelib.catalogue import Catalogue
from chalicelib.clean_queue import CleanQueue
from sluice.batch import ChunkOutcome
from sluice.config import get_settings
from sluice.envelope import Chunk, ChunkLimits, Record, derive_chunk_id, pack_records
from sluice.errors import PermanentError, SluiceError
from sluice.observability import get_logger
from sluice.stage import StageRuntime

STAGE = "cleanse"


log = get_logger(__name__)


def _log_refused(record: Record, key_field: str | None, error: PermanentError) -> None:
    """One line naming the refused record by its natural key (`sluice trace --type --key`
    finds it in the logs; the quarantine document is named by record id)."""
    try:
        payload = record.payload
    except PermanentError:  # its JSON, left undecoded, cannot be decoded: no key to name
        payload = None
    value = payload.get(key_field) if key_field and isinstance(payload, dict) else None
    if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
        log.info("record refused", extra={"natural_key": str(value), "reason": error.reason})


# What the record handler returns for a record whose payload passes on as the JSON it came as.
AS_IS: Any = type("_AsIs", (), {"__repr__": lambda self: "<as is>"})()


class ChunkSink(Protocol):
    """Where output chunks go (the clean queue; a fake in tests)."""

    def send(self, chunk: Chunk) -> None: ...


class UnknownRecordTypeError(PermanentError):
    """No `types/<type>/` folder for the chunk's type: all its records are quarantined."""

    def __init__(self, record_type: str) -> None:
        super().__init__(f"unknown record type '{record_type}'")


class RecordCrashError(PermanentError):
    """Normalising or validating one record raised something other than a Sluice error."""

    def __init__(self, error: Exception, limit: int = 200) -> None:
        text = str(error)
        text = text if len(text) <= limit else text[:limit] + "…"
        super().__init__(f"could not cleanse the record ({type(error).__name__}: {text})")


def output_chunk_id(input_chunk_id: str, ordinal: int = 0) -> str:
    """The id of the `ordinal`-th chunk cleanse sends for an input chunk.

    The same input gives the same ids, so the router drops what a retry sends twice. The
    first (nearly always the only) output chunk is `derive_chunk_id(input, "cleanse")`.
    """
    if ordinal == 0:
        return derive_chunk_id(input_chunk_id, STAGE)
    return derive_chunk_id(input_chunk_id, STAGE, ordinal)


class Cleanser:
    """The stage's work on a chunk (`handle_chunk`), with its parts passed in (tests) or
    built on first use."""

    def __init__(
        self,
        runtime: StageRuntime,
        *,
        catalogue: Catalogue | None = None,
        sink: ChunkSink | None = None,
        limits: ChunkLimits | None = None,
    ) -> None:
        self.runtime = runtime
        self.catalogue = catalogue or Catalogue()
        self.sink: ChunkSink = sink or CleanQueue()
        self._limits = limits

    @property
    def limits(self) -> ChunkLimits:
        if self._limits is None:
            settings = get_settings()
            self._limits = ChunkLimits(settings.chunk_max_records, settings.chunk_max_bytes)
        return self._limits

    def handle_chunk(self, chunk: Chunk) -> ChunkOutcome:
        """Cleanse `chunk`'s records; send the good ones as one chunk (more if they grew)."""
        results = self.runtime.run_records(chunk, self._record_handler(chunk.type))
        outcome = results.outcome
        cleaned = [
            record if payload is AS_IS else record.with_payload(payload)
            for record, payload in results.outputs
        ]
        sent = 0
        for out in self._pack(chunk, cleaned):
            self.sink.send(out)
            sent += len(out.records)
        # A record over the hard maximum even by claim check was quarantined while packing.
        outcome.quarantined += len(cleaned) - sent
        outcome.out = sent
        return outcome

    def _record_handler(self, record_type: str) -> Callable[[Record, Chunk], Any]:
        """The record handler: the cleansed payload, or AS_IS (the payload passes as it came)."""
        found = self.catalogue.get(record_type)
        if found is None:

            def unknown(record: Record, chunk: Chunk) -> dict[str, Any]:
                raise UnknownRecordTypeError(record_type)

            return unknown

        key_field = found.rules.natural_key
        as_is = found.clean_as_is

        def cleanse(record: Record, chunk: Chunk) -> Any:
            raw = record.raw_payload()  # its JSON, when the runtime left it undecoded
            if raw is not None and as_is(bytes(raw)):
                return AS_IS  # already clean: it passes on as it came
            try:
                return found.cleanse(record.payload)
            except PermanentError as exc:
                _log_refused(record, key_field, exc)
                raise
            except (SluiceError, MemoryError):
                raise  # bad data is already permanent; the rest is not this record's fault
            except Exception as exc:
                error = RecordCrashError(exc)
                _log_refused(record, key_field, error)
                raise error from exc

        return cleanse

    def _pack(self, chunk: Chunk, records: list[Record]) -> Iterator[Chunk]:
        if not records:
            return iter(())

        def make_chunk(ordinal: int, batch: tuple[Record, ...]) -> Chunk:
            return chunk.derive(batch, chunk_id=output_chunk_id(chunk.chunk_id, ordinal))

        on_oversize = self.runtime.on_oversize(
            record_type=chunk.type, source=chunk.source, correlation_id=chunk.correlation_id
        )
        return pack_records(records, make_chunk, self.limits, on_oversize=on_oversize)


@cache
def cleanser() -> Cleanser:
    """The process's cleanser, built on the first event (never at import). Payloads stay as
    their JSON until read: a clean one passes on as it came (passthrough)."""
    return Cleanser(StageRuntime(name=STAGE, lazy_payloads=True))


def runtime() -> StageRuntime:
    """The process's stage runtime."""
    return cleanser().runtime


def handle_chunk(chunk: Chunk) -> ChunkOutcome:
    """Cleanse one chunk (the app's work for `StageRuntime.handle_sqs`)."""
    return cleanser().handle_chunk(chunk)


def reset() -> None:
    """Forget the cleanser (tests that start a fresh AWS mock call this)."""
    cleanser.cache_clear()
