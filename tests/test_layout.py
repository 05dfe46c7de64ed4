"""The package's layout rules (docs/architecture.md): every module imports, module-level
imports form no cycle, spu is imported only by the SPU backend modules, no library file is over
450 lines. Seconds in all, so the fast lane imports every module of the library."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "secfwt_jax"
MAX_LINES = 450


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = [module_name(p) for p in FILES]


def top_level_imports(path: pathlib.Path) -> set[str]:
    """Modules a file imports at module level (TYPE_CHECKING blocks included, imports inside
    functions left out: those are deliberate lazy imports). `from a import b` counts a.b when
    that is a module of the package, else a."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    nodes = [n for n in tree.body]
    nodes += [c for n in tree.body if isinstance(n, ast.If) for c in n.body]
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)
    return out


def spu_installed() -> bool:
    return importlib.util.find_spec("spu") is not None


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    path = FILES[MODULES.index(name)]
    if not spu_installed() and any(m.split(".")[0] == "spu" for m in top_level_imports(path)):
        pytest.skip(f"{name} imports spu at module level and spu is not installed")
    importlib.import_module(name)


def test_module_level_imports_form_no_cycle():
    graph = {m: {i for i in top_level_imports(p) if i in MODULES and i != m}
             for m, p in zip(MODULES, FILES)}
    # a package's __init__ importing its own submodules is not a cycle of the layering
    for m in graph:
        graph[m] = {i for i in graph[m] if not i.startswith(m + ".")}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])


def test_spu_is_imported_only_by_the_spu_backend_modules():
    importers = [m for m, p in zip(MODULES, FILES)
                 if any(i.split(".")[0] == "spu" for i in top_level_imports(p))]
    assert all(m.startswith("secfwt_jax.backend.spu_") for m in importers), importers


def test_no_library_file_is_over_the_line_limit():
    lines = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines()) for p in FILES}
    long = {f: n for f, n in lines.items() if n > MAX_LINES}
    assert not long, f"library files over {MAX_LINES} lines: {long}"
