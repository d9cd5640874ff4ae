"""Every registered type's own samples pass cleanse, and so do those of a drafted type.

Parametrised over the registry: a type added with `sluice new-type` is tested here the moment
its folder exists (new-type writes no test file of its own).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib.catalogue import Catalogue
from sluice.errors import PermanentError
from sluice.registry import load_registry
from sluice_tools.types.newtype import new_type

TYPES = Path(__file__).resolve().parents[2] / "types"
REGISTRY = load_registry(TYPES)


def sample_records(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.mark.parametrize("name", REGISTRY.names())
def test_every_sample_record_of_a_type_passes_cleanse_with_a_unique_natural_key(name: str) -> None:
    spec = REGISTRY.get(name)
    assert spec.sample_path.is_file(), f"types/{name}/sample.jsonl: add a few good records"
    records = sample_records(spec.sample_path)
    assert records, f"types/{name}/sample.jsonl has no records"
    record_type = Catalogue(TYPES).get(name)
    assert record_type is not None
    keys = [record_type.cleanse(record)[spec.natural_key] for record in records]
    assert all(isinstance(key, str) and key for key in keys)
    assert len(set(keys)) == len(keys), f"types/{name}/sample.jsonl repeats a natural key"


# Raw, as producers send them: offsets, naive and space-separated times, padded strings.
MESSY_SHIPMENTS: list[dict[str, Any]] = [
    {
        "shipment_id": "s-1",
        "carrier": " DHL ",
        "shipped_at": "2026-11-27T08:15:00Z",
        "contact": " ops@example.com",
        "parcels": [{"parcel_id": "p-1", "scanned_at": "2026-11-27T07:00:00+01:00"}],
    },
    {
        "shipment_id": "s-2",
        "carrier": "UPS",
        "shipped_at": "2026-11-27 09:30:00+02:00",
        "weight_kg": "3.5",
        "parcels": [{"parcel_id": "p-2", "weight_kg": 1.25, "fragile": True}],
    },
    {
        "shipment_id": "s-3",
        "carrier": "DHL",
        "shipped_at": "2026-11-28T11:45:10.123456",
        "weight_kg": 0.7,
        "parcels": [],
        "note": None,
    },
]


def test_a_type_drafted_by_new_type_accepts_its_own_samples_and_refuses_strangers(
    tmp_path: Path,
) -> None:
    sample = tmp_path / "shipments.jsonl"
    sample.write_text("".join(json.dumps(r) + "\n" for r in MESSY_SHIPMENTS), encoding="utf-8")
    new_type(tmp_path, "shipment", sample)
    shipment = Catalogue(tmp_path / "types").get("shipment")
    assert shipment is not None

    cleaned = [shipment.cleanse(record) for record in MESSY_SHIPMENTS]
    assert [c["shipped_at"] for c in cleaned] == [
        "2026-11-27T08:15:00.000Z",
        "2026-11-27T07:30:00.000Z",
        "2026-11-28T11:45:10.123Z",
    ]
    assert cleaned[0]["parcels"][0]["scanned_at"] == "2026-11-27T06:00:00.000Z"
    assert cleaned[0]["carrier"] == "DHL"
    assert [c.get("weight_kg") for c in cleaned] == [None, 3.5, 0.7]

    with pytest.raises(PermanentError, match="surprise"):
        shipment.cleanse({**MESSY_SHIPMENTS[1], "surprise": 1})
    missing = {k: v for k, v in MESSY_SHIPMENTS[1].items() if k != "carrier"}
    with pytest.raises(PermanentError, match="carrier"):
        shipment.cleanse(missing)
    with pytest.raises(PermanentError, match="shipped_at"):
        shipment.cleanse({**MESSY_SHIPMENTS[1], "shipped_at": "soon"})
    with pytest.raises(PermanentError, match="shipment_id"):
        shipment.cleanse({**MESSY_SHIPMENTS[1], "shipment_id": ""})
