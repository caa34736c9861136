"""The package's import structure (DESIGN.md): cli -> pipeline -> (tiling, models, stitch, measure, io) ->
geometry/config. Read from the source with ``ast`` (function-level imports included), so a new upward import or
circle fails here, not in a review."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pathoseg"
# The building blocks: none of them may import the orchestration above them.
LOWER = ("io", "tiling", "models", "stitch", "measure", "geometry", "config", "errors", "optics", "metrics")
UPPER = ("cli", "batch", "pipeline", "plan", "outputs", "region", "distributed", "evaluation", "summary", "train")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Module -> the pathoseg modules it imports (``from pathoseg.x import y`` counts as x, and as x.y where y is
    a module)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pathoseg"):
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph.add_edges_from((name, target) for target in targets if target in modules and target != name)
    return graph


def layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    assert graph.has_edge("pathoseg.pipeline", "pathoseg.outputs")
    assert graph.has_edge("pathoseg.tiling.tiler", "pathoseg.io.ngff")


@pytest.mark.parametrize("lower", LOWER)
def test_building_blocks_import_nothing_above_them(lower):
    graph = import_graph()
    upward = [(module, target) for module, target in graph.edges if layer(module) == lower and layer(target) in UPPER]
    assert upward == []


def test_no_import_circle():
    graph = import_graph()
    # A package's __init__ importing its own modules is not a circle of concerns; none does today.
    assert list(nx.simple_cycles(graph)) == []
