"""The house rules of the code tree, kept by a test: no import cycles between dw_platform's
modules (imports inside functions count: they are cycles hidden from the reader), and `lib/`
knows no domain (domain code lives in `defs/<domain>/`, `samples/`, the engines beside `lib/`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from dw_platform.domains import DOMAINS

PACKAGE = Path(__file__).resolve().parents[1] / "dw_platform"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The dw_platform modules `path` imports, anywhere in the file."""
    found: set[str] = set()
    this = module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                package = this.split(".")[: -node.level] if path.name != "__init__.py" else this.split(".")
                if path.name == "__init__.py" and node.level > 1:
                    package = this.split(".")[: -(node.level - 1)]
                base = ".".join([*package, base]) if base else ".".join(package)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            # `from a.b import c` names module a.b.c when it exists, else module a.b
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != this:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    graph = {name: imported_modules(path, known) for name, path in paths.items()}
    # importing a.b.c imports its packages a and a.b first; that is not a cycle of ours
    return {name: {m for m in edges if not name.startswith(m + ".")} for name, edges in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lib_names_no_domain():
    pattern = re.compile(r"\b(" + "|".join(DOMAINS) + r")\b", re.IGNORECASE)
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted((PACKAGE / "lib").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_lib_imports_nothing_outside_lib():
    graph = import_graph()
    outside = {
        name: sorted(m for m in edges if not m.startswith("dw_platform.lib"))
        for name, edges in graph.items()
        if name.startswith("dw_platform.lib")
    }
    assert {name: edges for name, edges in outside.items() if edges} == {}


def test_engines_define_no_dagster_objects_and_defs_import_at_the_top():
    """Engines (replication, devenv) do not import dagster; modules under defs/ import at the top."""
    for engine in ("replication",):
        for path in (PACKAGE / engine).rglob("*.py"):
            assert "import dagster" not in path.read_text(), path
    hidden = []
    for path in sorted((PACKAGE / "defs").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                hidden += [
                    f"{path.relative_to(PACKAGE.parent)}:{inner.lineno}"
                    for inner in ast.walk(node)
                    if isinstance(inner, ast.Import | ast.ImportFrom)
                ]
    assert hidden == []
