"""The shared runtime's public API: the modules in `sluice.API` and their `__all__`.

Every name an app takes from `sluice` (imported, or read off an imported module such as
`aws.s3`) must be in the `__all__` of a listed module (`sluice.public_names`), or be such a
module. Derived from the tree: a new app or consumer is checked as it is.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from collections import defaultdict
from pathlib import Path

import sluice
from sluice_tools.stages import app_dirs

ROOT = Path(__file__).resolve().parents[2]


def used_names() -> dict[str, set[str]]:
    """module → names the apps' code takes from it (`from m import n`, and `m.n` for a module
    imported from sluice)."""
    used: dict[str, set[str]] = defaultdict(set)
    for app in app_dirs(ROOT):
        for path in [app / "app.py", *sorted((app / "chalicelib").rglob("*.py"))]:
            tree = ast.parse(path.read_text(encoding="utf-8"))
            modules: dict[str, str] = {}  # local name → module, for `from sluice import aws`
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sluice"):
                    for alias in node.names:
                        used[str(node.module)].add(alias.name)
                        full = f"{node.module}.{alias.name}"
                        if full in sluice.API:  # a module imported whole
                            modules[alias.asname or alias.name] = full
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id in modules
                ):
                    used[modules[node.value.id]].add(node.attr)
    return used


def test_the_apps_use_only_the_listed_api() -> None:
    used = used_names()
    assert used, "no app code found"
    public = {module: set(names) for module, names in sluice.public_names().items()}
    public["sluice"] = {m.removeprefix("sluice.") for m in sluice.API if m.count(".") == 1}
    outside = {
        module: sorted(names - public.get(module, set()))
        for module, names in used.items()
        if names - public.get(module, set())
    }
    assert not outside, f"names the apps use that no public module offers: {outside}"


def test_every_listed_name_exists() -> None:
    for module, names in sluice.public_names().items():
        found = importlib.import_module(module)
        missing = [name for name in names if not hasattr(found, name)]
        assert not missing, f"{module}.__all__ names what it lacks: {missing}"


def test_importing_sluice_imports_none_of_its_modules() -> None:
    import subprocess
    import sys

    code = "import sys, sluice; print(sorted(m for m in sys.modules if m.startswith('sluice.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def public_callables() -> list[tuple[str, object]]:
    """Every public function of the listed modules, and every public method of their
    public classes, with its qualified name."""
    found: list[tuple[str, object]] = []
    for module_name in sluice.API:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isfunction(value):
                found.append((f"{module_name}.{name}", value))
            elif inspect.isclass(value):
                found += [
                    (f"{module_name}.{name}.{attr}", member)
                    for attr, member in vars(value).items()
                    if inspect.isfunction(member) and not attr.startswith("_")
                ]
    return found


def raises_itself(function: object) -> bool:
    """Whether the function's own body has a `raise` with an exception (not a bare re-raise)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    return any(isinstance(node, ast.Raise) and node.exc is not None for node in ast.walk(tree))


def test_every_public_function_that_raises_says_so() -> None:
    undocumented = [
        name
        for name, function in public_callables()
        if raises_itself(function) and "raise" not in (inspect.getdoc(function) or "").lower()
    ]
    assert not undocumented, f"public functions that raise without saying so: {undocumented}"
