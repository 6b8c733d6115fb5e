"""The shape of builder/: import cycles (imports inside functions included), long functions and modules, package
sizes. `python scripts/code_shape.py [ROOT]` prints the numbers that docs/architecture.md and issue notes quote."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

FUNCTION_LIMIT = 60
MODULE_LIMIT = 400

# Who may import whom: a module imports only modules of its own layer or of layers below it (docs/architecture.md).
# Everything not named here (images/, registry/, api/, store.py, volumes.py, spec.py, ...) is the adapter layer.
LAYERS = [  # top first
    ("cli", ("builder.cli", "builder.__main__", "builder.container")),
    ("console", ("builder.console",)),
    ("jobs", ("builder.jobs",)),
    ("evaluate", ("builder.evaluate",)),
    ("evaluate.runner", ("builder.evaluate.runner",)),
    ("runs", ("builder.runs",)),
    ("distribute", ("builder.distribute",)),
    ("build", ("builder.build",)),
]
ADAPTERS = "adapters"


def modules(root: Path, package: str = "builder") -> dict[str, Path]:
    """Every module under ROOT/PACKAGE, by dotted name (a package is its __init__)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, level: int, here: str, is_package: bool) -> str:
    if not level:
        return name
    base = here.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its body (functions included)."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, name, is_package)
                candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for candidate in candidates:
                # the longest project module that the dotted name starts with
                parts = candidate.split(".")
                while parts and ".".join(parts) not in mods:
                    parts.pop()
                if parts:
                    target = ".".join(parts)
                    if target != name:
                        targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
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
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10000)  # a deep import chain; put back after, for whatever runs in this process next
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def layer_of(module: str) -> tuple[int, str]:
    """(rank, name): the deepest LAYERS prefix the module falls under; adapters rank 0."""
    best = (0, ADAPTERS, 0)
    for position, (name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[2]:
                best = (len(LAYERS) - position, name, len(prefix))
    return best[0], best[1]


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a lower layer to a higher one."""
    return sorted((src, dst) for src, targets in graph.items() for dst in targets if layer_of(dst)[0] > layer_of(src)[0])


def long_functions(mods: dict[str, Path], limit: int = FUNCTION_LIMIT) -> list[tuple[str, int]]:
    found = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append((f"{name}.{node.name}", length))
    return sorted(found, key=lambda item: -item[1])


def long_modules(mods: dict[str, Path], limit: int = MODULE_LIMIT) -> list[tuple[str, int]]:
    sizes = [(name, len(path.read_text().splitlines())) for name, path in mods.items()]
    return sorted([item for item in sizes if item[1] > limit], key=lambda item: -item[1])


def package_sizes(mods: dict[str, Path]) -> list[tuple[str, int, int]]:
    """(package, modules, lines) for each folder under builder/, its own files only, largest first."""
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, path in mods.items():
        folder = str(path.parent.relative_to(path.parents[len(name.split(".")) - (0 if path.name == "__init__.py" else 1)]))
        sizes[folder][0] += 1
        sizes[folder][1] += len(path.read_text().splitlines())
    return sorted(((k, v[0], v[1]) for k, v in sizes.items()), key=lambda item: -item[2])


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1]
    mods = modules(root)
    graph = imports(mods)
    found = cycles(graph)
    print(f"modules: {len(mods)}, lines: {sum(len(p.read_text().splitlines()) for p in mods.values())}")
    print(f"import cycles (strongly connected groups, imports inside functions counted): {len(found)}")
    for group in found:
        print("  " + " <-> ".join(group))
    arrows = upward(graph)
    print(f"imports pointing up a layer: {len(arrows)}")
    for src, dst in arrows:
        print(f"  {src} ({layer_of(src)[1]}) -> {dst} ({layer_of(dst)[1]})")
    funcs = long_functions(mods)
    print(f"functions over {FUNCTION_LIMIT} lines: {len(funcs)}")
    for name, length in funcs:
        print(f"  {name} {length}")
    mods_long = long_modules(mods)
    print(f"modules over {MODULE_LIMIT} lines: {len(mods_long)}")
    for name, length in mods_long:
        print(f"  {name} {length}")
    print("packages (own files): ")
    for folder, count, lines in package_sizes(mods)[:6]:
        print(f"  {folder}: {count} modules, {lines} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
