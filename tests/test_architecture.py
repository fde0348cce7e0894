"""The house rules of docs/architecture.md, checked on the code itself.

Every module's imports (lazy ones inside functions included) form a graph with no cycle; `duckdb` is
imported, and SQL written, only inside the storage package `ledger.log.store`; no module is over 800
lines; `import ledger` and the offline bundle verifier load no DuckDB (and `import ledger` no typer or
rich); tests reach into a handful of private names at most, each listed here with its reason.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "ledger"
STORE = "ledger.log.store"
MAX_LINES = 800
# SQL keywords as this code base writes them (upper case): a string holding them outside the store is SQL
# in the wrong room.
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|CREATE\s+(TABLE|INDEX|VIEW|TEMP)|DELETE\s+FROM"
    r"|UPDATE\s+\w+\s+SET|DROP\s+TABLE|COPY\s*\(|WITH\s+\w+\s+AS\s*\()",
    re.S,
)
# Private names tests may use, each with the reason a public name would be worse.
ALLOWED_PRIVATE: dict[str, str] = {
    "spilling.Spill._flush": "counting flushes is the only way to see that rows went through Parquet",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module `name` imports, lazy imports included, resolved to a module of the package."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = package[: len(package) - (node.level - 1)]
                base = ".".join([*here, base] if base else here)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_no_import_cycles_lazy_imports_included() -> None:
    edges = {
        name: {target for target, _ in _imports(name, path) if target in MODULES and target != name}
        for name, path in MODULES.items()
    }
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_duckdb_only_in_the_store() -> None:
    outside = [
        f"{name}:{line}"
        for name, path in MODULES.items()
        if not name.startswith(STORE)
        for target, line in _imports(name, path)
        if target.split(".")[0] == "duckdb"
    ]
    assert outside == []


def test_sql_only_in_the_store() -> None:
    outside = []
    for name, path in MODULES.items():
        if name.startswith(STORE):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and SQL.search(node.value)
            ):
                outside.append(f"{name}:{node.lineno}: {node.value.strip().splitlines()[0][:60]}")
    assert outside == []


def test_the_sql_pattern_sees_sql() -> None:
    assert SQL.search("SELECT idx FROM entries WHERE kind = 'batch'")
    assert SQL.search("\n  INSERT INTO records SELECT * FROM t")
    assert not SQL.search("select a checkpoint from the log")


def test_no_module_over_800_lines() -> None:
    long = {
        name: n for name, path in MODULES.items() if (n := path.read_text().count("\n")) > MAX_LINES
    }
    assert long == {}


def _loaded(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_import_ledger_loads_no_duckdb_typer_or_rich() -> None:
    loaded = _loaded("import ledger")
    assert {"duckdb", "typer", "rich"} & loaded == set()


def test_engines_are_imported_only_by_their_adapters() -> None:
    """pyspark and ray load only inside `ledger.engines.spark` / `ledger.engines.ray`, and `import
    ledger` (or `import ledger.engines`) loads neither."""
    owners = {"pyspark": "ledger.engines.spark", "ray": "ledger.engines.ray"}
    outside = [
        f"{name}:{line}"
        for name, path in MODULES.items()
        for target, line in _imports(name, path)
        if target.split(".")[0] in owners and owners[target.split(".")[0]] != name
    ]
    assert outside == []
    assert {"pyspark", "ray"} & _loaded("import ledger, ledger.engines") == set()


# The rooms from the bottom up (docs/architecture.md): a room imports only rooms below it.
LAYERS = [
    ["spec"],
    ["engine", "providers"],
    ["ingest"],
    ["log"],
    ["recording", "audit", "bundle", "witness"],
    ["engines", "integrations"],
    ["ledger"],
    ["cli", "views"],
]


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "ledger" or len(parts) == 1 or parts[1] in ("errors", "wording"):
        return None
    return parts[1]


def test_the_engine_room_is_engine_neutral_compute() -> None:
    """`engine/` (kernel, ranges, pool) imports no file reader, log, recorder or engine adapter;
    `engines/` (the Spark and Ray adapters) may use all of those to append."""
    level = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
    upward = [
        f"{name}:{line} imports {target}"
        for name, path in MODULES.items()
        if _room(name) in ("engine", "engines")
        for target, line in _imports(name, path)
        if target in MODULES
        and (room := _room(target)) in level
        and level[room] > level[str(_room(name))]
    ]
    assert upward == []


def test_the_offline_bundle_verifier_loads_no_duckdb() -> None:
    loaded = _loaded("from ledger.bundle.verify import verify_bundle, load_bundle")
    assert "duckdb" not in loaded


def test_nothing_imports_the_facade_back() -> None:
    importers = [
        name
        for name, path in MODULES.items()
        if name not in ("ledger", "ledger.ledger") and not name.startswith("ledger.cli")
        for target, _ in _imports(name, path)
        if target == "ledger.ledger"
    ]
    assert importers == []


def _base_name(node: ast.expr) -> str | None:
    """`a` for `a`, `a.b`, `a.b.c`: the name an attribute chain starts from."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _private_uses(path: Path) -> Iterator[str]:
    """`ledger` names a test reaches into: `from ledger.x import _y` and `<imported ledger module>._y`."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ledger"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    yield f"{node.module}.{alias.name}"
                elif f"{node.module}.{alias.name}" in MODULES:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ledger") and alias.asname:
                    modules.add(alias.asname)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(
                r"ledger(\.\w+)*\._[a-zA-Z]\w*", node.value
            ):  # mock.patch("ledger.x._y")
                yield node.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setattr"
            and len(node.args) >= 2
            and _base_name(node.args[0]) in modules
            and isinstance(node.args[1], ast.Constant)
            and str(node.args[1].value).startswith("_")
            and not str(node.args[1].value).startswith("__")
        ):
            yield f"{ast.unparse(node.args[0])}.{node.args[1].value}"
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and _base_name(node.value) in modules
        ):
            yield f"{ast.unparse(node.value)}.{node.attr}"


def test_tests_use_public_names() -> None:
    used = {
        f"{path.name}: {name}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        for name in _private_uses(path)
    }
    unexplained = sorted(u for u in used if u.split(": ", 1)[1] not in ALLOWED_PRIVATE)
    assert unexplained == []


@pytest.mark.parametrize("name", sorted(ALLOWED_PRIVATE))
def test_each_allowed_private_name_is_still_used(name: str) -> None:
    used = {n for path in (ROOT / "tests").glob("*.py") for n in _private_uses(path)}
    assert name in used, f"{name} is no longer used by a test: drop it from ALLOWED_PRIVATE"
