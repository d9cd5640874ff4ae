"""Which record-type registry each deployed function ships: the deploy tags every function
with the registry it vendored (`sluice:registry`: a digest of types/ and each type's
version), and `sluice doctor` compares the tags with the checkout's `types/`.

A tag is readable on AWS and in the emulator alike (ListTags), with no code download.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from sluice.registry import load_registry
from sluice_tools.deploy.vendor import REGISTRY_DIR, source_files

TAG = "sluice:registry"
TAG_MAX = 256  # Lambda's limit on a tag value


def registry_tag(root: Path) -> str:
    """`<digest> <type>@<version> ...` of `root/types` (cut to Lambda's 256 characters).

    The digest covers every shipped file of the registry, so an edited schema shows even
    when its version was not raised."""
    types_dir = root / REGISTRY_DIR
    digest = hashlib.sha256()
    for rel in source_files(types_dir):
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update((types_dir / rel).read_bytes() + b"\0")
    versions = " ".join(f"{s.name}@{s.version}" for s in load_registry(types_dir))
    return f"{digest.hexdigest()[:16]} {versions}".strip()[:TAG_MAX]


def registry_findings(tags: Mapping[str, str | None], expected: str) -> Iterable[tuple[str, str]]:
    """(function, what is wrong) for each function (name -> its tag, None: untagged) whose
    registry is not `expected` (`registry_tag` of the checkout)."""
    want_digest, _, want_types = expected.partition(" ")
    for function, tag in sorted(tags.items()):
        if tag is None:
            yield (
                function,
                (
                    f"function {function} has no {TAG} tag: it was deployed before its app "
                    f"shipped the record-type registry (types/ has {want_types or 'no type'})"
                ),
            )
        elif tag.partition(" ")[0] != want_digest:
            have = tag.partition(" ")[2] or "no type"
            same = have == want_types
            yield (
                function,
                (
                    f"function {function} ships another record-type registry than types/ "
                    f"({have}{' with other contents' if same else ''}; types/ has "
                    f"{want_types or 'no type'})"
                ),
            )
