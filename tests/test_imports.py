"""No import circles: every shoplens module's imports (lazy ones inside functions included), parsed, not run."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "shoplens"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports() -> dict[str, set[str]]:
    """module -> the shoplens modules it imports (`from shoplens.a import b` names b when b is a module)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package this module is in
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for target in targets:
                while target and target not in modules:  # `import shoplens.a.b.C`-like names: the module holding it
                    target = target.rpartition(".")[0]
                if target.startswith("shoplens") and target != name:
                    graph[name].add(target)
    return graph


def package_of(module: str) -> str:
    """shoplens.index.sync -> index; shoplens.cli -> cli (a top-level module is a unit of its own)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "shoplens"


def package_imports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        here = package_of(module)
        out.setdefault(here, set()).update(package_of(t) for t in targets if package_of(t) not in (here, "shoplens"))
    return out


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member (each is an import circle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
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


def test_the_circle_finder_finds_circles():
    """Worked by hand: a->b->c->a is one circle, d->a hangs off it, e alone."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_the_parser_sees_lazy_imports():
    graph = module_imports()
    # index/indexer.py imports the sync inside a function: still an edge.
    assert "shoplens.index.sync" in graph["shoplens.index.indexer"]
    assert "shoplens.vectors.embedcache" in graph["shoplens.index.sync"]


def test_index_and_tune_share_what_lies_below_both_and_import_neither_way():
    """Before: tune/fit.py imported index/embedcache.py and index/ imported tune/ (a package-level circle)."""
    packages = package_imports(module_imports())
    assert "tune" not in packages["index"] and "index" not in packages["tune"]
    assert "vectors" in packages["index"] and "vectors" in packages["tune"]
    assert not packages["vectors"] & {"index", "tune", "quality", "query", "web"}


def test_no_import_circle_between_packages_or_modules():
    graph = module_imports()
    assert strongly_connected(graph) == []
    assert strongly_connected(package_imports(graph)) == []
