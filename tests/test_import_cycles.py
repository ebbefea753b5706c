"""slotctl's modules import one another without circles: each layer (core, adapters, ops, render, the CLI) may use
the ones beneath it, never the reverse.

Every import counts: at module level, inside functions (the lazy imports that keep `slotctl --help` fast), and under
`if TYPE_CHECKING:`. A lazy import still makes two modules depend on each other; only when it runs differs. The two
circles issue 27 found were one of each kind: ops/fleet.py -> render.py (inside a function) -> ops/setup.py (for
annotations) -> ops/fleet.py, and ops/status.py <-> ops/metrics.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "slotctl"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str], package: Path = PACKAGE) -> set[str]:
    """The slotctl modules this file imports, wherever the import statement stands."""
    name = module_name(path, package)
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import hold` imports the module slotctl.ops.hold; `from .host import HostContext` slotctl.ops.host.
            subs = {f"{target}.{a.name}" for a in node.names} & modules
            found |= subs or {target}
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): imports(p, modules) for p in files}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected component that has one (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
            if len(component) > 1:
                found.append(path_around(edges, set(component)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def path_around(edges: dict[str, set[str]], component: set[str]) -> list[str]:
    """A readable circle inside a component: from its first module, breadth-first back to it."""
    start = min(component)
    came_from: dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(edges[v] & component):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if w not in came_from:
                came_from[w] = v
                todo.append(w)
    raise AssertionError(f"no circle in {component}")


def test_no_module_of_slotctl_imports_itself_through_others():
    found = cycles(graph())
    assert found == [], "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_checker_finds_circles_through_lazy_and_annotation_only_imports():
    """The checker itself, on the two circles issue 27 named (lazy and TYPE_CHECKING imports included)."""
    edges = {"slotctl.ops.fleet": {"slotctl.render"}, "slotctl.render": {"slotctl.ops.setup"},
             "slotctl.ops.setup": {"slotctl.ops.fleet"}, "slotctl.ops.status": {"slotctl.ops.metrics"},
             "slotctl.ops.metrics": {"slotctl.ops.status"}, "slotctl.core.layout": set()}
    assert cycles(edges) == [["slotctl.ops.fleet", "slotctl.render", "slotctl.ops.setup", "slotctl.ops.fleet"],
                             ["slotctl.ops.metrics", "slotctl.ops.status", "slotctl.ops.metrics"]]
    source = PACKAGE / "ops" / "status.py"
    assert "slotctl.ops.host" in imports(source, {module_name(p) for p in PACKAGE.rglob("*.py")})


def test_imports_inside_functions_and_for_annotations_are_edges(tmp_path):
    pkg = tmp_path / "slotctl"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "render.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .ops.setup import X\n")
    (pkg / "ops" / "setup.py").write_text("def f():\n    from . import fleet\n    from ..render import y\n")
    modules = {"slotctl", "slotctl.ops", "slotctl.render", "slotctl.ops.setup", "slotctl.ops.fleet"}
    assert imports(pkg / "render.py", modules, pkg) == {"slotctl.ops.setup"}
    assert imports(pkg / "ops" / "setup.py", modules, pkg) == {"slotctl.ops.fleet", "slotctl.render"}
