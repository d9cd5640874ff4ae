"""The record-type registry: one folder per type, the one place a type is declared.

`types/<name>/` holds `type.json` (version, description, natural key, routing rules),
`schema.json` (JSON Schema of the record after normalisation), `rules.json` (normalisation)
and `sample.jsonl` (good records). Every app that needs to know the types reads them from
here: the deploy ships a copy of the repository's `types/` with each app, beside the
package (`SHIPPED_DIR`). Stdlib only; read on first use, never at import.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sluice.errors import ConfigError

# The folder next to the `sluice` package that the deploy's vendoring fills with a copy of
# the repository's `types/` (`sluice_tools.deploy.vendor`).
SHIPPED_DIR = "sluice_types"
TYPE_FILE = "type.json"
SCHEMA_FILE = "schema.json"
RULES_FILE = "rules.json"
SAMPLE_FILE = "sample.jsonl"
REQUIRED_FILES = (TYPE_FILE, SCHEMA_FILE, RULES_FILE)
# A type name comes from envelopes and object keys: it must be a plain folder name.
NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_TYPE_KEYS = frozenset({"$comment", "version", "description", "natural_key", "routing", "alert"})

_PACKAGE_DIR = Path(__file__).resolve().parent


class UnknownRecordType(KeyError):
    """A name the registry does not hold; the message lists the ones it does."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        listed = ", ".join(self.known) or "none"
        return f"unknown record type {self.name!r} (known types: {listed})"


@dataclass(frozen=True)
class RecordTypeSpec:
    """Everything declared about one record type (read-only mappings)."""

    name: str
    version: int
    description: str
    natural_key: str
    routing: Mapping[str, Any]
    schema: Mapping[str, Any]
    rules: Mapping[str, Any]
    path: Path
    # Optional extras from type.json (e.g. the alerts consumer's "alert" block).
    extras: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def sample_path(self) -> Path:
        return self.path / SAMPLE_FILE


class Registry:
    """The record types found under one root folder, by name."""

    def __init__(self, root: Path, specs: Mapping[str, RecordTypeSpec]) -> None:
        self.root = root
        self._specs = dict(sorted(specs.items()))
        self._names = tuple(self._specs)

    def names(self) -> tuple[str, ...]:
        """The type names, sorted."""
        return self._names

    def get(self, name: str) -> RecordTypeSpec:
        """The type called `name`; `UnknownRecordType` (a KeyError) if there is none.

        Raises `UnknownRecordType` (a `KeyError`).
        """
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            raise UnknownRecordType(str(name), self._names) from None

    def natural_keys(self) -> dict[str, str]:
        """{type: natural key field}."""
        return {name: spec.natural_key for name, spec in self._specs.items()}

    def __iter__(self) -> Iterator[RecordTypeSpec]:
        return iter(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r}, {list(self._names)})"


# In a consumer's filter policy (resources.yaml), a value list holding this marker admits
# every registered type: the deploy renders it as the registry's names
# (`expand_registered_types`), so a new type reaches that consumer with no edit.
REGISTERED_TYPES = "sluice:registered-types"


def expand_registered_types(policy: Any, names: tuple[str, ...] | list[str]) -> Any:
    """`policy` (a filter policy: an object, or its JSON text) with each `REGISTERED_TYPES`
    marker in a value list replaced by `names`; anything else as it is."""
    if isinstance(policy, str):
        try:
            parsed = json.loads(policy)
        except ValueError:
            return policy
        expanded = expand_registered_types(parsed, names)
        return policy if expanded == parsed else json.dumps(expanded)
    if isinstance(policy, Mapping):
        return {k: expand_registered_types(v, names) for k, v in policy.items()}
    if isinstance(policy, list):
        out: list[Any] = []
        for item in policy:
            if item == REGISTERED_TYPES:
                out.extend(n for n in names if n not in out)
            else:
                out.append(expand_registered_types(item, names))
        return out
    return policy


def expand_template_policies(template: Any, names: tuple[str, ...] | list[str]) -> Any:
    """A consumer's template (parsed resources.yaml) with the marker expanded in the filter
    policies it declares: its SNS subscriptions' and a direct consumer's `Metadata.Sluice`.
    The same object when there is nothing to expand."""
    if not isinstance(template, Mapping):
        return template
    holders: list[tuple[tuple[str, ...], Any]] = [
        (("Metadata", "Sluice"), (template.get("Metadata") or {}).get("Sluice"))
    ]
    for logical_id, resource in (template.get("Resources") or {}).items():
        if isinstance(resource, Mapping) and resource.get("Type") == "AWS::SNS::Subscription":
            holders.append((("Resources", logical_id, "Properties"), resource.get("Properties")))
    result: Any = template
    for path, holder in holders:
        if not isinstance(holder, Mapping) or "FilterPolicy" not in holder:
            continue
        expanded = expand_registered_types(holder["FilterPolicy"], names)
        if expanded == holder["FilterPolicy"]:
            continue
        if result is template:
            result = copy.deepcopy(template)  # the caller's stays as it is
        target = result
        for key in path:
            target = target[key]
        target["FilterPolicy"] = expanded
    return result


_default: Registry | None = None
_default_lock = threading.Lock()


def default_root() -> Path:
    """Where this process finds the registry: the copy shipped beside the package (a
    deployed app), else the repository's `types/` (a checkout: tests, local tools)."""
    for candidate in (_PACKAGE_DIR.parent / SHIPPED_DIR, _PACKAGE_DIR.parent.parent / "types"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(
        f"no record-type registry: neither {_PACKAGE_DIR.parent / SHIPPED_DIR} (shipped by "
        f"`sluice deploy`) nor {_PACKAGE_DIR.parent.parent / 'types'} (a checkout) exists"
    )


def load_registry(root: Path | None = None) -> Registry:
    """The registry under `root`, or this process's own (`default_root`, read once, cached).

    A malformed folder raises `ConfigError` naming the folder and what is wrong.
    """
    global _default
    if root is not None:
        return _read_registry(Path(root))
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = _read_registry(default_root())
    return _default


def _read_registry(root: Path) -> Registry:
    if not root.is_dir():
        raise ConfigError(f"record-type registry {root}: not a folder")
    specs: dict[str, RecordTypeSpec] = {}
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith((".", "_")):
            continue
        spec = read_type(folder)
        specs[spec.name] = spec
    return Registry(root, specs)


def read_type(folder: Path) -> RecordTypeSpec:
    """One type's folder, checked; `ConfigError` says which file and what is wrong."""
    name = folder.name
    if not NAME_RE.fullmatch(name):
        raise ConfigError(
            f"record type folder {folder}: the name {name!r} must match {NAME_RE.pattern} "
            "(lower case letters, digits, '_' or '-', starting with a letter)"
        )
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"record type {name!r} ({folder}): missing {', '.join(missing)}")
    declared = _read_object(folder / TYPE_FILE)
    schema = _read_object(folder / SCHEMA_FILE)
    rules = _read_object(folder / RULES_FILE)
    where = f"record type {name!r} ({folder / TYPE_FILE})"
    unknown = sorted(set(declared) - _TYPE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (allowed: {sorted(_TYPE_KEYS)})")
    version = declared.get("version")
    if type(version) is not int or version < 1:
        raise ConfigError(f"{where}: 'version' must be a positive integer, got {version!r}")
    description = declared.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: 'description' must be a string")
    key = declared.get("natural_key")
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        raise ConfigError(f"record type {name!r} ({folder / SCHEMA_FILE}): no 'properties'")
    if not isinstance(key, str) or key not in properties:
        raise ConfigError(
            f"{where}: 'natural_key' must name a property of schema.json "
            f"({', '.join(sorted(properties))}), got {key!r}"
        )
    if "natural_key" in rules:
        raise ConfigError(
            f"record type {name!r} ({folder / RULES_FILE}): 'natural_key' belongs in type.json"
        )
    routing = declared.get("routing", {})
    if not isinstance(routing, Mapping) or not all(
        isinstance(rule, Mapping) for rule in routing.values()
    ):
        raise ConfigError(f"{where}: 'routing' must map attribute names to rules")
    extras = {}
    if "alert" in declared:
        extras["alert"] = _checked_alert(declared["alert"], properties, where)
    return RecordTypeSpec(
        name=name,
        version=version,
        description=description,
        natural_key=key,
        routing=_frozen(routing),
        schema=_frozen(schema),
        rules=_frozen(rules),
        path=folder,
        extras=_frozen(extras),
    )


_ALERT_TEXTS = frozenset({"title", "party_label"})
_ALERT_FIELDS = frozenset({"amount_field", "currency_field", "party_field"})


def _checked_alert(alert: Any, properties: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The optional "alert" block (how the alerts consumer words this type's alerts): texts,
    and fields that must be schema properties."""
    allowed = _ALERT_TEXTS | _ALERT_FIELDS
    if not isinstance(alert, Mapping) or set(alert) - allowed:
        extra = sorted(set(alert) - allowed) if isinstance(alert, Mapping) else alert
        raise ConfigError(f"{where}: 'alert' takes only {sorted(allowed)}, got {extra!r}")
    for key, value in alert.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: 'alert'.{key} must be a non-empty string")
        if key in _ALERT_FIELDS and value not in properties:
            raise ConfigError(f"{where}: 'alert'.{key} {value!r} is not a schema property")
    return _frozen(alert)


def _read_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: not a JSON object")
    return value


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    # Top level only: consumers (fastjsonschema, the router) want plain dicts inside.
    return MappingProxyType(dict(value))


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "RecordTypeSpec",
    "Registry",
    "load_registry",
]
