"""The package layout keeps its promises: no import cycle between ocrd's modules, and no module
over 500 lines (generated protobuf code aside). Both are read from the source with ``ast``, so the
check costs no import."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "ocrd" / "control" / "v1"
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((REPO / "ocrd").rglob("*.py")):
        if GENERATED in path.parents:
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imported_at_import_time(tree: ast.Module) -> set[str]:
    """Modules a module imports when it is imported: not those inside functions (run later) or
    under ``if TYPE_CHECKING:`` (never run)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(sub, ast.Import):
                names.update(alias.name for alias in sub.names)
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                names.add(sub.module)
                names.update(f"{sub.module}.{alias.name}" for alias in sub.names)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {other for other in _imported_at_import_time(ast.parse(path.read_text()))
                   if other in modules and other != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
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
                    work.append((child, iter(sorted(graph[child]))))
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


def test_no_import_cycle_between_ocrds_modules():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_is_over_500_lines():
    long = {str(path.relative_to(REPO)): count for path in _modules().values()
            if (count := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
