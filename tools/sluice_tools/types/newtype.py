"""`sluice new-type`: a registry folder (`types/<name>/`) drafted from sample records.

It writes only the new folder; nothing else names a type (ingest, the index, the filter
policies and the tests read the registry), so deploying is the only step after it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice_tools.types.infer import Draft, SampleError, draft_type, read_samples

SAMPLE_LINES = 20  # records kept in the folder's sample.jsonl
TYPE_FILES = ("type.json", "schema.json", "rules.json", "sample.jsonl")


class NewTypeError(Exception):
    """The type cannot be created as asked; `str(error)` says why, in one line."""


@dataclass(frozen=True)
class Created:
    """What `new_type` wrote."""

    draft: Draft
    folder: Path
    files: tuple[Path, ...]
    records: int  # sample records read


def types_dir(root: Path) -> Path:
    return root / "types"


def check_name(name: str, root: Path) -> None:
    """`NewTypeError` unless `name` is a valid type name not yet in `root`'s registry."""
    from sluice.registry import NAME_RE

    if not NAME_RE.fullmatch(name):
        raise NewTypeError(
            f"bad type name {name!r}: use lower-case letters, digits, '_' and '-', starting "
            "with a letter, at most 64 characters (it is a folder name and part of S3 keys)"
        )
    folder = types_dir(root) / name
    if folder.exists():
        raise NewTypeError(
            f"type {name!r} exists ({folder}): edit its files, and raise the version in "
            "type.json when the schema changes (`sluice types check` compares)"
        )


def new_type(
    root: Path,
    name: str,
    sample: Path,
    *,
    natural_key: str | None = None,
    description: str | None = None,
) -> Created:
    """Draft type `name` from the records in `sample` and write `root/types/<name>/`.

    The folder is written to a temporary name and renamed, so a failure leaves no half type;
    the result is loaded back through the registry, which must accept it.
    """
    check_name(name, root)
    try:
        records = read_samples(sample)
        draft = draft_type(name, records, natural_key=natural_key, description=description)
    except SampleError as exc:
        raise NewTypeError(str(exc)) from None
    folder = types_dir(root) / name
    staging = types_dir(root) / f".{name}.new"
    if staging.exists():
        _remove(staging)
    staging.mkdir(parents=True)
    drafted = f"{name[0].upper()}{name[1:]} records (drafted by sluice new-type from {sample.name})"
    about = description or drafted
    try:
        _write(staging, draft, records, about)
        staging.rename(folder)
    except BaseException:
        _remove(staging)
        raise
    _check_loads(root, name, folder)
    return Created(draft, folder, tuple(folder / f for f in TYPE_FILES), len(records))


def type_document(draft: Draft, description: str) -> dict[str, Any]:
    """type.json of a new type: version 1, no routing attributes (add them by hand)."""
    return {
        "version": 1,
        "description": description,
        "natural_key": draft.natural_key,
        "routing": {},
    }


def _write(
    folder: Path, draft: Draft, records: Sequence[Mapping[str, Any]], description: str
) -> None:
    _write_json(folder / "type.json", type_document(draft, description))
    _write_json(folder / "schema.json", draft.schema)
    _write_json(folder / "rules.json", draft.rules)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[:SAMPLE_LINES])
    (folder / "sample.jsonl").write_text(lines, encoding="utf-8")


def _write_json(path: Path, doc: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_loads(root: Path, name: str, folder: Path) -> None:
    """The registry loads the new folder; if it does not, the folder is removed again."""
    from sluice.errors import ConfigError
    from sluice.registry import load_registry

    try:
        load_registry(types_dir(root)).get(name)
    except (ConfigError, KeyError) as exc:
        _remove(folder)
        raise NewTypeError(f"the registry refuses the drafted type (not written): {exc}") from None


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
