"""Record types: `types/<type>/schema.json` and `rules.json`, loaded on first use and cached.

A type's fastjsonschema validator is compiled when its first record arrives, never at
import: a cold start pays only for the types it meets, a warm Lambda reuses them.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from chalicelib.normalise import UNKNOWN_DROP, TypeRules, normalise
from sluice.errors import ConfigError, PermanentError

TYPES_DIR = Path(__file__).resolve().parent / "types"
# A type name comes from the envelope (untrusted): it must be a plain folder name.
TYPE_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")

Validator = Callable[[Any], Any]


class RecordType:
    """One record type: its schema, its rules, and its validator (compiled on first use)."""

    def __init__(self, name: str, schema: Mapping[str, Any], rules: TypeRules) -> None:
        self.name = name
        self.schema = schema
        self.rules = rules
        properties = schema.get("properties") or {}
        self.known_fields = frozenset(properties)
        self._validator: Validator | None = None
        self._lock = threading.Lock()
        self._check()

    def cleanse(self, payload: Any) -> dict[str, Any]:
        """The normalised, validated payload; `PermanentError` with the reason if it is bad."""
        data = normalise(payload, self.rules, self.known_fields)
        from fastjsonschema import JsonSchemaValueException

        try:
            result = self.validator(data)
        except JsonSchemaValueException as exc:
            raise PermanentError(f"invalid {self.name}: {exc.message}") from None
        return result if isinstance(result, dict) else data

    @property
    def validator(self) -> Validator:
        if self._validator is None:
            with self._lock:
                if self._validator is None:
                    self._validator = _compile(self.name, self.schema)
        return self._validator

    def _check(self) -> None:
        """Rules and schema must agree; a mismatch is a deploy bug, not bad data."""
        if self.schema.get("type") != "object":
            raise ConfigError(f"type {self.name!r}: schema.json must describe an object")
        missing = sorted(self.rules.fields() - self.known_fields)
        if missing:
            raise ConfigError(f"type {self.name!r}: rules name fields not in schema: {missing}")
        key = self.rules.natural_key
        if key is not None and key not in (self.schema.get("required") or []):
            raise ConfigError(f"type {self.name!r}: natural_key {key!r} must be required")
        if self.rules.unknown_fields == UNKNOWN_DROP and not self.known_fields:
            raise ConfigError(f"type {self.name!r}: unknown_fields 'drop' needs properties")


class Catalogue:
    """Record types by name, loaded from `root` on first use and cached (misses too)."""

    def __init__(self, root: Path = TYPES_DIR) -> None:
        self.root = root
        self._types: dict[str, RecordType | None] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> RecordType | None:
        """The type called `name`, or None if there is no such type."""
        try:
            return self._types[name]
        except KeyError:
            pass
        with self._lock:
            if name not in self._types:
                self._types[name] = self._load(name)
            return self._types[name]

    def names(self) -> list[str]:
        """Every type shipped in `root` (for tests and tooling)."""
        return sorted(p.parent.name for p in self.root.glob("*/schema.json"))

    def _load(self, name: str) -> RecordType | None:
        if not TYPE_NAME_RE.fullmatch(name):
            return None
        folder = self.root / name
        if not (folder / "schema.json").is_file():
            return None
        schema = _read_json(folder / "schema.json")
        if not isinstance(schema, dict):
            raise ConfigError(f"{folder / 'schema.json'}: not a JSON object")
        rules_file = folder / "rules.json"
        rules = _read_json(rules_file) if rules_file.is_file() else {}
        return RecordType(name, schema, TypeRules.from_json(rules, where=str(rules_file)))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def _compile(name: str, schema: Mapping[str, Any]) -> Validator:
    import fastjsonschema

    try:
        return fastjsonschema.compile(dict(schema))
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise ConfigError(f"type {name!r}: schema.json is not a valid JSON Schema: {exc}") from None
