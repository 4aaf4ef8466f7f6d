"""The one reader of import statements the structure tests share (``test_layering``, ``test_suite_hygiene``,
``test_import_circles``): every ``import`` / ``from ... import`` of a module, relative ones resolved against its
package, with where it sits (line, ``if TYPE_CHECKING:`` block, enclosing top-level function or class).

* :func:`read_imports` -> :class:`Import` per statement (function-local and type-only ones included);
* :func:`module_graph` -> which modules of a package each of its modules imports (for circles).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Import:
    """One import statement: ``names`` are the dotted names it imports (``import a.b`` -> ``a.b``; ``from a
    import b, c`` -> ``a``, ``a.b``, ``a.c``), ``bound`` what each local name it binds refers to."""

    line: int
    module: str  # the module imported, or imported from
    names: tuple[str, ...]
    bound: tuple[tuple[str, str], ...]  # (local name, dotted origin)
    type_only: bool  # inside `if TYPE_CHECKING:` (annotations only; never run)
    scope: str | None  # the top-level function or class it sits in, None at module level


def module_name(path: Path, root: Path) -> str:
    """``root/a/b.py`` -> ``<root.name>.a.b`` (``__init__.py`` is its package)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join((root.name, *(parts[:-1] if parts[-1] == "__init__" else parts)))


def read_imports(path: Path, root: Path, tree: ast.Module | None = None) -> list[Import]:
    """Every import statement of ``path`` (a module of the package at ``root``), in source order."""
    tree = tree or ast.parse(path.read_text(), str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for scope, type_only, node in _statements(tree):
        if isinstance(node, ast.Import):
            bound = tuple((a.asname or a.name.partition(".")[0], a.name if a.asname else a.name.partition(".")[0])
                          for a in node.names)
            for alias in node.names:
                found.append(Import(node.lineno, alias.name, (alias.name,), bound, type_only, scope))
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            members = tuple(f"{base}.{alias.name}" for alias in node.names)
            bound = tuple((alias.asname or alias.name, member) for alias, member in zip(node.names, members))
            found.append(Import(node.lineno, base, (base, *members), bound, type_only, scope))
    return sorted(found, key=lambda i: i.line)


def _statements(tree: ast.Module):
    """``(scope, type_only, node)`` of every import statement in ``tree``."""
    def walk(node: ast.AST, scope: str | None, type_only: bool):
        checking = isinstance(node, ast.If) and _is_type_checking(node.test)
        for child in ast.iter_child_nodes(node):
            guarded = type_only or (checking and child in node.body)  # not its `else:`
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield scope, guarded, child
                continue
            inner = scope
            if scope is None and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = child.name
            yield from walk(child, inner, guarded)
    yield from walk(tree, None, False)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def package_modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package at ``root``."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def module_graph(root: Path) -> dict[str, dict[str, list[Import]]]:
    """Module -> {module of the same package it imports -> the statements that do}.

    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``; parent packages a
    dotted import loads on the way are not counted (they are not what the module asks for)."""
    modules = package_modules(root)
    graph: dict[str, dict[str, list[Import]]] = {}
    for name, path in modules.items():
        edges: dict[str, list[Import]] = {}
        for imp in read_imports(path, root):
            wanted = imp.names[1:] or imp.names  # `from a import b`: a.b when a module, else a
            targets = {n if n in modules else imp.module for n in wanted} & modules.keys()
            for target in sorted(targets):
                if target != name:
                    edges.setdefault(target, []).append(imp)
        graph[name] = edges
    return graph


def circles(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups, key=lambda g: (-len(g), g))
