"""A JSON value kept in one DynamoDB attribute, and read back in every form it was kept.

Written as its compact JSON text (`jsonx.dumps`: non-ASCII kept, numbers as sent),
zlib-compressed, as a binary attribute (`B`): a 1 KB record's JSON packs to ~40%, so an item
holding one stays within one 1 KB write unit. The stream is ISA-L's when it is installed
(`sluice.envelope.zlib_codec`: the same format, a quarter of the CPU, ~1% larger). Read back
from that form and from the ones items held before: JSON text (`S`) and a DynamoDB typed map
(`M`). The index consumer writes its version items' payload this way, and `sluice trace`
reads them with the same function.
"""

from __future__ import annotations

import decimal
import json
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from sluice import jsonx
from sluice.envelope import zlib_codec

# zlib level 6: level 9 gains nothing on record-sized JSON. ISA-L's levels are 0-3; its 1
# packs a 1 KB record within ~1% of zlib's 6 at a quarter of the CPU.
ZLIB_LEVEL = 6
ISAL_LEVEL = 1


def json_attribute(value: Any) -> dict[str, Any]:
    """`value` as a binary attribute of its compressed JSON; `TypeError`/`ValueError` if it
    is not JSON."""
    codec = zlib_codec()
    level = ZLIB_LEVEL if codec is zlib else ISAL_LEVEL
    return {"B": codec.compress(jsonx.dumps(value), level)}


def json_from_attribute(
    attribute: Mapping[str, Any], *, parse_float: Callable[[str], Any] = decimal.Decimal
) -> Any:
    """The value of an attribute `json_attribute` wrote, or of an older JSON text (`S`) or
    typed map (`M`) one; decimals as `parse_float` makes them (exact `Decimal` by default).
    Raises `ValueError` (or `zlib.error`) for an attribute that holds none of these."""
    if "B" in attribute:
        data = attribute["B"]
        text = zlib.decompress(data.value if hasattr(data, "value") else data)
        return json.loads(text, parse_float=parse_float)
    if "S" in attribute:
        return json.loads(attribute["S"], parse_float=parse_float)
    if "M" in attribute:
        from boto3.dynamodb.types import TypeDeserializer

        return TypeDeserializer().deserialize(attribute)  # type: ignore[arg-type]
    raise ValueError(f"not a JSON attribute: {sorted(attribute)}")


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "json_attribute",
    "json_from_attribute",
]
