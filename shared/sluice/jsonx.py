"""JSON on the hot path, with msgspec: strict RFC 8259, exact integers, compact UTF-8 out.

Every chunk is decoded and encoded once per stage, so JSON is most of a stage's own CPU;
msgspec decodes about 2x and encodes about 10x faster than the standard library, with the
same text out as `json.dumps(value, separators=(",", ":"), ensure_ascii=False)`. Unlike the
standard library it refuses `NaN`/`Infinity` and lone surrogates on input (not JSON), and
keeps integers of any size exact (orjson turns those over 64 bits into floats).
msgspec is imported on first use, not at import.
"""

from __future__ import annotations

from typing import Any

_decoder: Any = None
_fields_decoder: Any = None
_encoders: dict[bool, Any] = {}


class JSONDecodeError(ValueError):
    """The text is not JSON (as RFC 8259 defines it)."""


def loads(data: bytes | str) -> Any:
    """Parse JSON text; `JSONDecodeError` with msgspec's reason if it is not JSON.

    Raises `JSONDecodeError` (a `ValueError`).
    """
    global _decoder
    if _decoder is None:
        import msgspec

        _decoder = msgspec.json.Decoder()
    try:
        return _decoder.decode(data)
    except Exception as exc:  # msgspec.DecodeError / ValidationError
        raise JSONDecodeError(str(exc)) from None


def object_fields(data: Any) -> dict[str, Any] | None:
    """A JSON object's members, each value left as its JSON text (a `msgspec.Raw`, which
    `loads` reads and `dumps` writes as is); None if `data` is JSON but not an object.

    Reading a few fields of a large object then costs a scan of it, not a decode of it all.
    Values are checked to be well-formed JSON, not decoded: `loads` of one can still refuse
    it (a number out of range). `JSONDecodeError` if `data` is not JSON.
    """
    global _fields_decoder
    import msgspec

    if _fields_decoder is None:
        _fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
    try:
        fields: dict[str, Any] = _fields_decoder.decode(data)
    except msgspec.ValidationError:
        return None
    except Exception as exc:  # msgspec.DecodeError
        raise JSONDecodeError(str(exc)) from None
    return fields


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON; `TypeError` for what JSON cannot hold. Decimals become numbers.

    A float NaN would become `null`: none reaches here, as inputs are parsed strictly and
    cleanse refuses NaN and infinities.
    """
    encoder = _encoders.get(sort_keys)
    if encoder is None:
        import msgspec

        if sort_keys:
            encoder = msgspec.json.Encoder(decimal_format="number", order="sorted")
        else:
            encoder = msgspec.json.Encoder(decimal_format="number")
        _encoders[sort_keys] = encoder
    data: bytes = encoder.encode(value)
    return data


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "JSONDecodeError",
    "dumps",
    "loads",
]
