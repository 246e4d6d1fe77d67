"""The import graph of src/synthloop, read from the source (AST), and the layers it promises.

Every import counts, also the ones inside functions (a lazy import is still a dependency: it
only moves the cycle to run time); imports under ``if TYPE_CHECKING:`` do not. A failure names
each edge with its file and line, so the reader sees where to cut.

The layers (ARCHITECTURE.md, "Layout"): the library never imports Prefect; Blender's modules
only inside synthesis/blender; imports go one way, ``flows -> synthloop.stages -> the rest``:
nothing imports flows/, the library below the stages never imports them, and the command line
(cli*.py) is an entry point that no library module imports.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = "synthloop"
FLOWS = ROOT / "flows"

# Entry points: they sit beside flows/ at the top and may import stages. The library imports
# none of them.
ENTRY_POINTS = ("synthloop.__main__", "synthloop.init_project")
ENTRY_PREFIXES = ("synthloop.cli",)  # cli.py, cli_options.py, cli_ct.py, ...
BLENDER_MODULES = ("bpy", "bmesh", "mathutils", "gpu", "bl_math", "idprop")
# What flows/ may take from the package besides the stages: the typed config at the edge,
# console logging, and the event names its triggers emit.
FLOWS_MAY_IMPORT = ("synthloop.stages", "synthloop.config", "synthloop.log_setup",
                    "synthloop.monitoring.decision", "synthloop.monitoring.triggers")


@dataclass(frozen=True)
class Edge:
    source: str  # importing module (dotted)
    target: str  # imported module: a module of the package, or the raw name of another
    where: str  # path:line

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}  ({self.where})"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules(root: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_names(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """``(dotted name, line)`` of what ``module`` imports: ``from a import b`` gives ``a.b``
    when that is a module of the package, else ``a``; relative imports are resolved."""
    is_package = path.name == "__init__.py"
    out = []
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
            continue
        base = node.module or ""
        if node.level:
            here = module.split(".") if is_package else module.split(".")[:-1]
            here = here[:len(here) - (node.level - 1)]
            base = ".".join(here + ([node.module] if node.module else []))
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            out.append((sub if sub in modules else base, node.lineno))
    return out


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module ``name`` is or lives in (``a.b.func`` -> ``a.b``); None if outside."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = SRC, package: str = PACKAGE
                 ) -> tuple[dict[str, set[str]], list[Edge], list[Edge]]:
    """(module -> package modules it imports, internal edges, external edges)."""
    modules = package_modules(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    internal, external = [], []
    for module, path in modules.items():
        for name, line in imported_names(module, path, modules):
            where = f"{path.relative_to(root.parent)}:{line}"
            target = resolve(name, modules) if name.split(".")[0] == package else None
            if target is None:
                external.append(Edge(module, name, where))
            elif target != module:
                graph[module].add(target)
                internal.append(Edge(module, target, where))
    return graph, internal, external


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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
    return sorted(found)


def _report(title: str, edges: list[Edge]) -> str:
    return title + "\n" + "\n".join(f"  {e}" for e in sorted(set(edges), key=str))


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def is_entry_point(module: str) -> bool:
    return module in ENTRY_POINTS or module.startswith(ENTRY_PREFIXES)


def is_stage(module: str) -> bool:
    return module == "synthloop.stages" or module.startswith("synthloop.stages.")


# ------------------------------------------------------------------------------ the checks
def test_no_import_cycle_in_the_package(graph):
    deps, internal, _ = graph
    found = cycles(deps)
    lines = []
    for component in found:
        members = set(component)
        lines.append(_report(f"cycle of {len(component)} modules: {', '.join(component)}",
                             [e for e in internal if e.source in members and e.target in members]))
    assert not found, "import cycles (lazy imports count too):\n" + "\n".join(lines)


def test_the_library_never_imports_prefect(graph):
    _, _, external = graph
    bad = [e for e in external if e.target.split(".")[0] == "prefect"
           or e.target.split(".")[0].startswith("prefect_")]
    assert not bad, _report("src/synthloop imports Prefect (only flows/ may):", bad)


def test_blender_is_imported_only_inside_synthesis_blender(graph):
    _, _, external = graph
    bad = [e for e in external if e.target.split(".")[0] in BLENDER_MODULES
           and not e.source.startswith("synthloop.synthesis.blender")]
    assert not bad, _report("Blender modules imported outside synthesis/blender:", bad)


def test_nothing_in_the_package_imports_flows(graph):
    _, _, external = graph
    flow_modules = {p.stem for p in FLOWS.glob("*.py")} | {"flows"}
    bad = [e for e in external if e.target.split(".")[0] in flow_modules]
    assert not bad, _report("src/synthloop imports flows/:", bad)


def test_the_library_below_the_stages_never_imports_them(graph):
    _, internal, _ = graph
    bad = [e for e in internal if is_stage(e.target)
           and not (is_stage(e.source) or is_entry_point(e.source))]
    assert not bad, _report("library modules importing synthloop.stages (an orchestrator "
                            "belongs in stages/):", bad)


def test_no_library_module_imports_the_command_line(graph):
    _, internal, _ = graph
    bad = [e for e in internal if is_entry_point(e.target) and not is_entry_point(e.source)]
    assert not bad, _report("library modules importing an entry point (cli*.py, ...):", bad)


def test_flows_reach_the_library_through_the_stages():
    modules = package_modules()
    bad = []
    for path in sorted(FLOWS.glob("*.py")):
        for name, line in imported_names(path.stem, path, modules):
            if name.split(".")[0] == PACKAGE and not any(
                    name == allowed or name.startswith(allowed + ".") for allowed in FLOWS_MAY_IMPORT):
                bad.append(Edge(f"flows/{path.name}", resolve(name, modules) or name,
                                f"{path.relative_to(ROOT)}:{line}"))
    assert not bad, _report("flows/ importing the package beside synthloop.stages (move the "
                            f"work into a stage; allowed: {', '.join(FLOWS_MAY_IMPORT)}):", bad)


# ---------------------------------------------------------------- the checker checks itself
def test_the_checker_sees_lazy_relative_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from pkg import c\n\ndef f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from .b import g\n")
    (pkg / "sub" / "b.py").write_text("import prefect\n\ndef g():\n    from .. import VERSION\n")
    (pkg / "c.py").write_text("from pkg.a import f\n")
    deps, internal, external = import_graph(tmp_path, "pkg")
    assert deps["pkg.a"] == {"pkg.sub.b"}  # lazy import counted, TYPE_CHECKING one not
    assert deps["pkg.sub.b"] == {"pkg"} and deps["pkg.sub"] == {"pkg.sub.b"}
    assert deps["pkg.c"] == {"pkg.a"} and cycles(deps) == []  # a -> c was TYPE_CHECKING only
    (pkg / "__init__.py").write_text("from pkg.a import f\n")
    assert cycles(import_graph(tmp_path, "pkg")[0]) == [["pkg", "pkg.a", "pkg.sub.b"]]
    assert [e.target for e in external if e.source == "pkg.sub.b"] == ["prefect"]
    assert any(e.where.endswith("pkg/a.py:6") and e.target == "pkg.sub.b" for e in internal)
