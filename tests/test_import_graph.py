"""No import cycle in the package: the module-level import graph of ``src/otpguard``
(``import`` and ``from ... import`` statements that run when a module is first
imported) has no cycle.

Left out, as Python leaves them out of import time: imports inside functions and
under ``if TYPE_CHECKING:``. A submodule's import of its own parent packages is
left out too (the parent's ``__init__`` is always running already); an import of
``a.b.c`` counts as an import of ``a.b`` as well, whose ``__init__`` runs first.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import otpguard

Graph = dict[str, set[str]]


def modules_of(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time(body: Iterable[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of a module body that run at import time."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _import_time(node.body)
            yield from _import_time(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse):
                yield from _import_time(block)
            yield from _import_time(node.finalbody)
        elif isinstance(node, ast.With):
            yield from _import_time(node.body)


def _imported(node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> Iterator[str]:
    """The dotted names an import statement in module ``name`` loads."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    yield target
    for alias in node.names:  # ``from pkg import submodule`` loads the submodule
        yield f"{target}.{alias.name}"


def import_graph(root: Path, package: str) -> Graph:
    """Module -> the package's modules it imports at import time."""
    modules = modules_of(root, package)
    graph: Graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        deps = set()
        for node in _import_time(tree.body):
            for target in _imported(node, name, path.name == "__init__.py"):
                parts = target.split(".")
                deps |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        graph[name] = {d for d in deps if d in modules and d != name and d not in ancestors}
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle, as a path ``[a, b, ..., a]``, for every strongly connected group of
    modules (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
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
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    return [_path_through(graph, group) for group in groups]


def _path_through(graph: Graph, group: set[str]) -> list[str]:
    """A shortest cycle from the group's first module back to itself (breadth first)."""
    first = min(group)
    parent: dict[str, str | None] = {first: None}
    frontier = [first]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & group):
                if child == first:
                    path = [node]
                    while (up := parent[path[-1]]) is not None:
                        path.append(up)
                    return [*reversed(path), first]
                if child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {sorted(group)}")  # pragma: no cover


def test_the_package_has_no_import_cycle() -> None:
    root = Path(otpguard.__file__).parent
    graph = import_graph(root, "otpguard")
    assert len(graph) > 50 and graph["otpguard.service"]  # the walk found the package
    found = [" -> ".join(c) for c in cycles(graph)]
    assert found == [], "import cycles:\n  " + "\n  ".join(found)


# -- the walk itself, on a made-up package ---------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_is_found_and_named(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "a.py": "from . import b\n",
            "b.py": "from .sub.c import thing\n",
            "sub/__init__.py": "",
            "sub/c.py": "import pkg.a\n",
            "d.py": "from .a import x\n",  # imports into the cycle, not part of it
        },
    )
    graph = import_graph(root, "pkg")
    assert graph["pkg.b"] == {"pkg.sub", "pkg.sub.c"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


def test_type_checking_and_function_imports_are_not_import_time(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n",
            "b.py": "def f():\n    from . import a\n",
            "c.py": (
                "import typing\nif typing.TYPE_CHECKING:\n    pass\nelse:\n    from . import d\n"
            ),
            "d.py": "try:\n    from . import c\nexcept ImportError:\n    pass\n",
        },
    )
    graph = import_graph(root, "pkg")
    assert graph["pkg.a"] == set() and graph["pkg.b"] == set()
    assert cycles(graph) == [["pkg.c", "pkg.d", "pkg.c"]]  # an else branch does run


def test_a_submodule_importing_its_parent_is_no_cycle(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {"__init__.py": "from .sub import x\n", "sub/__init__.py": "from .. import y\n"},
    )
    graph = import_graph(root, "pkg")
    assert graph["pkg"] == {"pkg.sub"} and graph["pkg.sub"] == set()
    assert cycles(graph) == []
