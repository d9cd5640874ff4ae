"""Scaffolding of consumer apps (`sluice new-consumer`): templates, contract check, generator.

Tooling only; the generated app imports the shared runtime, never this package.
"""

from __future__ import annotations

from sluice_tools.scaffold.contract import (
    check_filter_policy,
    declared_attributes,
    unread_attributes,
)
from sluice_tools.scaffold.errors import ScaffoldError
from sluice_tools.scaffold.generator import (
    ConsumerSpec,
    chalice_config,
    find_repo,
    new_consumer,
    render_app,
    validate_name,
)

__all__ = [
    "ConsumerSpec",
    "ScaffoldError",
    "chalice_config",
    "check_filter_policy",
    "declared_attributes",
    "find_repo",
    "new_consumer",
    "render_app",
    "unread_attributes",
    "validate_name",
]
