"""The architecture's figures, from the source: modules, the largest, import cycles, levels and
function-level imports of resolver's own modules.

    python benchmarks/architecture.py            # a table
    python benchmarks/architecture.py --json     # the same as JSON

Every import of a resolver module counts as an edge, at module top or inside a function, so a
cycle hidden in a function still shows; imports under `if TYPE_CHECKING:` name types and do not. A cycle is a strongly connected component of more than one
module.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "resolver"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.AST, here: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = here.split(".") if is_package else here.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        return [f"{base}.{alias.name}" for alias in node.names] + [base]
    return []


def own_module(name: str, modules: set[str]) -> str | None:
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def figures() -> dict:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p): p for p in paths}
    names = set(modules)
    edges: dict[str, set[str]] = {m: set() for m in names}
    function_level = 0
    lines = {m: len(p.read_text().splitlines()) for m, p in modules.items()}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        top = set(id(n) for n in tree.body)
        type_only = {id(n) for block in tree.body if _is_type_checking(block) for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            targets = {own_module(t, names) for t in imported(node, module, is_package)}
            targets.discard(None)
            targets.discard(module)
            if not targets:
                continue
            edges[module] |= targets
            in_function = id(node) not in top and not _under_top_level_guard(tree, node)
            if in_function and any(t != "resolver" for t in targets):
                function_level += 1
    components = _strongly_connected(edges)
    cycles = [sorted(c) for c in components if len(c) > 1]
    largest = max(lines, key=lines.get)
    return {
        "modules": sum(1 for p in paths if p.name != "__init__.py" or p.read_text().strip()),
        "top_level_modules": sum(1 for p in paths if p.parent == PACKAGE and p.name != "__init__.py"),
        "import_levels": _levels(edges, components),
        "largest_module": f"{largest} ({lines[largest]} lines)",
        "import_cycles": len(cycles),
        "cycles": cycles,
        "function_level_imports": function_level,
        "lines": sum(lines.values()),
    }


def _is_type_checking(node: ast.stmt) -> bool:
    """`if TYPE_CHECKING:` at module top: imports that name types only, never run (as import-linter
    is configured to see them too)."""
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _levels(edges: dict[str, set[str]], components: list[list[str]]) -> int:
    """The longest chain of imports, a cycle counted as one level (modules that import nothing: 1)."""
    component_of = {m: i for i, c in enumerate(components) for m in c}
    depth: dict[int, int] = {}
    for i, component in enumerate(components):  # Tarjan's order: every import's target comes first
        below = [depth[component_of[t]] for m in component for t in edges[m] if component_of[t] != i]
        depth[i] = 1 + max(below, default=0)
    return max(depth.values())


def _under_top_level_guard(tree: ast.Module, node: ast.AST) -> bool:
    """Imports under a module-level `if TYPE_CHECKING:` or `try:` still load with the module."""
    for top in tree.body:
        if isinstance(top, (ast.If, ast.Try)) and any(n is node for n in ast.walk(top)):
            return not any(
                isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and any(m is node for m in ast.walk(n))
                for n in ast.walk(top)
            )
    return False


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            found.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = figures()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key in ("modules", "top_level_modules", "import_levels", "lines", "largest_module", "import_cycles", "function_level_imports"):
        print(f"{key:24} {result[key]}")
    for cycle in result["cycles"]:
        print("  cycle: " + " / ".join(cycle))


if __name__ == "__main__":
    main()
