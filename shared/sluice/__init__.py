"""Sluice's shared Lambda runtime: settings, envelope, clients, batch, idempotency, observability.

Every stage imports it, so it stays import-light and never imports tooling or an app.
"""

__version__ = "0.1.0"
