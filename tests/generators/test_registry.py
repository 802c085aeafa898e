"""The registry: each method package registers itself, and the import rules around it (LAYOUT.md rules 3 and 6)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import generators
from generators import registry
from zoo.errors import ZooError

ROOT = Path(generators.__file__).parent
METHODS = ("dwf", "d2nwg", "known")


def _imports(path: Path) -> set[str]:
    """The modules a file imports (absolute names), at any depth."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def _imports_of(*parts: str) -> set[str]:
    target = ROOT.joinpath(*parts)
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    return set().union(*(_imports(f) for f in files))


def test_every_method_registers_itself():
    assert registry.names() == sorted(METHODS)
    assert registry.get("dwf").cls is generators.DeepWeightFlow and registry.get("dwf").fit is None
    assert registry.get("known").cls is generators.Known and registry.get("known").fit is not None


def test_unknown_method_is_a_one_line_error():
    with pytest.raises(ZooError, match="unknown generator 'nope'"):
        registry.get("nope")


@pytest.mark.parametrize("module", ["base", "registry", "fit", "source", "diagnose"])
def test_the_shared_rooms_import_no_method(module):
    used = _imports_of(module)
    assert not {m for m in used for method in METHODS if m == f"generators.{method}" or
                m.startswith(f"generators.{method}.")}, used


@pytest.mark.parametrize("method", METHODS)
def test_methods_never_import_each_other(method):
    used = _imports_of(method)
    others = [o for o in METHODS if o != method]
    assert not {m for m in used for o in others if m == f"generators.{o}" or m.startswith(f"generators.{o}.")}


def test_no_library_module_imports_a_command():
    for path in ROOT.rglob("*.py"):
        if "commands" in path.relative_to(ROOT).parts:
            continue
        assert not {m for m in _imports(path) if m.startswith("generators.commands")}, path
