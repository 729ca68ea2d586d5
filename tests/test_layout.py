"""The house rules of the code tree, kept by a test: no import cycles between dw_platform's
modules (imports inside functions count: they are cycles hidden from the reader); `lib/` knows no
domain (domain code lives in `defs/<domain>/`, `samples/`, the engines beside `lib/`); `defs/`
holds Dagster definitions only, in role-named modules, and the engines define none."""

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


# What a module under defs/ may be called: the kinds of Dagster definitions it holds.
ROLES = {"assets", "checks", "jobs", "schedules", "sensors", "resources", "partitions"}


def engine_packages() -> list[Path]:
    """The domains' engines beside lib/ (`dw_platform/<domain>/`, e.g. replication/, sales/)."""
    return [PACKAGE / name for name in DOMAINS if (PACKAGE / name / "__init__.py").is_file()]


def dagster_names(tree: ast.Module) -> set[str]:
    """The names a module binds to dagster or a dagster library (`dg`, `dbt_assets`, ...)."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name for a in node.names if a.name.split(".")[0].startswith("dagster")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0].startswith("dagster"):
            names |= {a.asname or a.name for a in node.names}
    return names


def defines_dagster_objects(tree: ast.Module) -> bool:
    """At the module's top level: a definition decorated by Dagster (`@dg.asset`, `@dg.definitions`,
    `@dbt_assets`...), a class deriving from a Dagster one, a value built by Dagster
    (`= dg.define_asset_job(...)`), or a function returning Dagster objects (`-> dg.X`)."""
    dagster = dagster_names(tree)

    def from_dagster(expr: ast.AST | None) -> bool:
        return expr is not None and any(isinstance(n, ast.Name) and n.id in dagster for n in ast.walk(expr))

    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and any(map(from_dagster, node.decorator_list)):
            return True
        if isinstance(node, ast.ClassDef) and any(map(from_dagster, node.bases)):
            return True
        if isinstance(node, ast.FunctionDef) and from_dagster(node.returns):
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call):
            if from_dagster(node.value.func):
                return True
    return False


def test_defs_holds_only_role_named_modules_that_define_dagster_objects():
    """Code that defines no Dagster object (parsing, quarantine, key rotation, `dw drop`) belongs in
    the domain's engine package beside lib/, not under defs/."""
    misplaced = []
    for path in sorted((PACKAGE / "defs").rglob("*.py")):
        if path.stem == "__init__":
            continue
        where = str(path.relative_to(PACKAGE.parent))
        if path.stem not in ROLES:
            misplaced.append(f"{where}: not named for a role ({', '.join(sorted(ROLES))})")
        elif not defines_dagster_objects(ast.parse(path.read_text())):
            misplaced.append(f"{where}: defines no Dagster object")
    assert misplaced == []


def test_the_role_rule_tells_a_definition_from_an_engine():
    definition = "import dagster as dg\n\n@dg.asset\ndef a():\n    return 1\n"
    factory = "import dagster as dg\n\ndef parts(s: str) -> dg.DynamicPartitionsDefinition:\n    return None\n"
    job = "from dagster import define_asset_job\n\njob = define_asset_job('j')\n"
    engine = "import dagster as dg\nimport psycopg\n\ndef parse(data: bytes) -> list:\n    raise dg.Failure('x')\n"
    assert all(defines_dagster_objects(ast.parse(code)) for code in (definition, factory, job))
    assert not defines_dagster_objects(ast.parse(engine))


def test_engines_define_no_dagster_objects_and_defs_import_at_the_top():
    """Engines (replication, the domains' packages) do not import dagster; modules under defs/ import at the top."""
    engines = engine_packages()
    assert {p.name for p in engines} >= {"replication", "sales", "video", "softcart"}
    for engine in engines:
        for path in engine.rglob("*.py"):
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
