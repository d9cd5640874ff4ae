"""Sluice's shared Lambda runtime: settings, envelope, clients, batch, idempotency, observability.

Every stage imports it, so it stays import-light and never imports tooling or an app:
importing `sluice` imports none of its modules.

The public API: the modules in `API`, and in each the names its `__all__` lists (typed,
with docstrings saying what they raise); anything else is internal and may change.
`public_names()` gathers them in one listing. `tests/shared/test_public_api.py` checks that
the apps in the tree use nothing else.
"""

__version__ = "0.1.0"

# The modules apps may use; what each offers is its `__all__`.
API: tuple[str, ...] = (
    "sluice.attributes",
    "sluice.aws",
    "sluice.batch",
    "sluice.config",
    "sluice.delivery",
    "sluice.envelope",
    "sluice.errors",
    "sluice.events",
    "sluice.filters",
    "sluice.idempotency",
    "sluice.jsonx",
    "sluice.lazy",
    "sluice.ledger",
    "sluice.observability",
    "sluice.observability.tracing",
    "sluice.progress",
    "sluice.registry",
    "sluice.stage",
)


def public_names() -> dict[str, list[str]]:
    """Every public name by module (imports the modules: for tooling and docs, not at start)."""
    import importlib

    return {module: list(importlib.import_module(module).__all__) for module in API}
