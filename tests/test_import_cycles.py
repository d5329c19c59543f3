"""No import cycles between packages: the graph of which package of kfac_repro imports which, read from every
module's import statements (those inside functions included), has no cycle."""

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "kfac_repro"


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def imported(path: Path, known: dict[str, tuple[Path, bool]]) -> set[str]:
    """The kfac_repro modules `path` imports (`from package import module` names the module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                         for alias in node.names)
    return {name for name in names if name in known}


def package_edges() -> dict[str, dict[str, list[str]]]:
    """package → package it imports → the module imports that make the edge. Nodes are sibling packages: an import
    from module a to module b joins the packages of a and b just below their deepest common package (a module's
    import of its own package's subpackage, or of a parent package's module, is no edge)."""
    known = modules()
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, (path, package) in known.items():
        source = name.split(".") if package else name.split(".")[:-1]
        for target_module in imported(path, known):
            target = target_module.split(".") if known[target_module][1] else target_module.split(".")[:-1]
            common = 0
            while common < min(len(source), len(target)) and source[common] == target[common]:
                common += 1
            if common < len(source) and common < len(target):
                edges[".".join(source[:common + 1])][".".join(target[:common + 1])].append(f"{name} → {target_module}")
    return edges


def cycles(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in edges.get(node, {}):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_imports_between_sibling_packages() -> None:
    edges = package_edges()
    assert "kfac_repro.kfac.blocks → kfac_repro.kfac.config" not in str(edges)  # a parent's module: no edge
    assert "kfac_repro.specs" in edges["kfac_repro.runner"]
    assert "kfac_repro.kfac.blocks" in edges["kfac_repro.kfac.inversion"] or \
        "kfac_repro.kfac.inversion" in edges["kfac_repro.kfac.blocks"]


def test_cycles_finds_a_cycle_through_three_packages() -> None:
    graph = {"a": {"b": ["a.x → b.y"]}, "b": {"c": ["b.y → c.z"]}, "c": {"a": ["c.z → a.x"]}, "d": {"a": []}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles_between_packages() -> None:
    edges = package_edges()
    found = cycles(edges)
    details = [f"{a} → {b}: {', '.join(edges[a][b])}" for component in found for a in component
               for b in component if b in edges.get(a, {})]
    assert not found, "import cycles between packages:\n" + "\n".join(details)
