"""A consumer's template as deployed: the registered-types marker of its filter policy
(`sluice.registry.REGISTERED_TYPES`) rendered as the registry's type names.

`stage_stacks` applies it to every consumer stack, so CloudFormation, cfn-lint, drift and
`sluice doctor` all see the policy the registry implies; the file itself names no type.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from sluice.registry import REGISTERED_TYPES, expand_template_policies, load_registry

if TYPE_CHECKING:
    from sluice_tools.deploy.templates import StackSpec

REGISTRY_DIR = "types"


def registered_type_names(root: Path) -> tuple[str, ...]:
    """The type names of the repository's registry (`root/types`)."""
    return load_registry(root / REGISTRY_DIR).names()


def with_registered_types(spec: StackSpec, root: Path) -> StackSpec:
    """`spec` with its filter policies' marker expanded (body and rendered text); `spec`
    itself when it has no marker."""
    if REGISTERED_TYPES not in spec.text:
        return spec
    names = registered_type_names(root)
    body = expand_template_policies(spec.body, names)
    if body is spec.body:
        return spec
    header = (
        f"# Rendered by sluice_tools.deploy.typed_consumers from {spec.path.name}: "
        f"{REGISTERED_TYPES} = the registry's {len(names)} type(s).\n"
    )
    text = header + yaml.safe_dump(body, sort_keys=False, width=100)
    return dataclasses.replace(spec, body=body, rendered=text)
