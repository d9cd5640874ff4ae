"""No import cycles in the tooling (tools/sluice_tools) or the shared runtime (shared/sluice).

The graph is read from the source (tests/support/import_graph.py): a deferred import in a
function counts (it runs), an `if TYPE_CHECKING:` import does not, and importing anything
inside another package counts as needing that package's `__init__` too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.import_graph import cycles, import_graph, shortest_cycle

ROOT = Path(__file__).resolve().parents[2]

# Cycles known on 2026-12-05 that this suite leaves to their owners, each listed with what
# breaks it. A cycle found must lie inside one of these; any other fails the test.
KNOWN: dict[str, list[tuple[frozenset[str], str]]] = {
    "tools/sluice_tools": [
        (
            frozenset(
                {
                    "sluice_tools.local.apifaults",
                    "sluice_tools.local.emulator",
                    "sluice_tools.local.iam",
                }
            ),
            "iam imports ACCOUNT_ID/CREDENTIALS from emulator, which starts iam and apifaults; "
            "iam and apifaults import each other's request helpers (operation, s3_error, "
            "s3_operation): move those constants and helpers into a module of their own",
        ),
    ],
    "shared/sluice": [],  # none: the delivery context has a module of its own, events no
    # longer imports the ledger
}


@pytest.mark.parametrize("package", sorted(KNOWN))
def test_no_import_cycles_beyond_the_known_ones(package: str) -> None:
    graph = import_graph(ROOT / package)
    assert len(graph) > 20  # the package was found and read
    known = [group for group, _why in KNOWN[package]]
    new = [group for group in cycles(graph) if not any(set(group) <= k for k in known)]
    assert not new, "import cycles:\n" + "\n".join(
        " -> ".join(shortest_cycle(graph, group[0])) for group in new
    )


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_the_graph_counts_deferred_imports_and_other_packages_inits(tmp_path: Path) -> None:
    pkg = write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            # a package whose __init__ re-exports its own modules: no cycle by itself
            "pkg/a/__init__.py": "from pkg.a.command import run\nfrom .model import Thing\n",
            "pkg/a/command.py": "def run():\n    from pkg.b.queues import read\n",
            "pkg/a/model.py": "class Thing: ...\n",
            "pkg/b/__init__.py": "",
            "pkg/b/queues.py": "from pkg.a.model import Thing\n",
            "pkg/c.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg import d\n",
            "pkg/d.py": "from . import c\n",
        },
    )
    graph = import_graph(pkg)
    assert graph["pkg.b.queues"] == {"pkg.a", "pkg.a.model"}  # a's __init__ runs first
    assert graph["pkg.a.command"] == {"pkg.b", "pkg.b.queues"}  # deferred, still an import
    assert graph["pkg.c"] == set()  # TYPE_CHECKING never runs
    assert graph["pkg.d"] == {"pkg.c"}  # relative import
    # a.command -> b.queues -> a (its __init__) -> a.command
    assert cycles(graph) == [["pkg.a", "pkg.a.command", "pkg.b.queues"]]
    assert shortest_cycle(graph, "pkg.a") == ["pkg.a", "pkg.a.command", "pkg.b.queues", "pkg.a"]

    (pkg / "b" / "queues.py").write_text("def read():\n    return None\n", encoding="utf-8")
    assert cycles(import_graph(pkg)) == []
