"""The import layering of palm/ and app/ (gsplat's rule: kernels -> models -> pipelines).

Reads the code as text (ast), so imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 650
# palm/render/ holds kernels only: it never reaches up into models, pipelines or commands.
RENDER_FORBIDDEN = (
    "palm.model", "palm.prior", "palm.avatar", "palm.export", "palm.train",
    "palm.data", "palm.scene", "palm.cli",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources(*tops: str) -> dict[str, Path]:
    return {_module_name(p): p for top in tops for p in sorted((ROOT / top).rglob("*.py"))}


def _imports(module: str, path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (absolute names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    """palm-internal import edges, resolved to modules that exist (a name imported from a
    package resolves to its submodule when there is one, else to the package)."""
    modules = _sources("palm")
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in _imports(name, path):
            if not target.startswith("palm"):
                continue
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def test_no_file_longer_than_limit():
    long = {str(p.relative_to(ROOT)): n for p in _sources("palm", "app").values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_render_imports_kernels_only():
    bad = {}
    for name, path in _sources("palm").items():
        if not name.startswith("palm.render"):
            continue
        hits = sorted(t for t in _imports(name, path)
                      if any(t == f or t.startswith(f + ".") for f in RENDER_FORBIDDEN))
        if hits:
            bad[name] = hits
    assert not bad, f"palm/render reaches up: {bad}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # a package's __init__ importing its own submodules is not a cycle of concepts,
            # but a submodule importing its package back is: count both directions as written.
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_in_palm():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_detector_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("needle", ["def optional(", "def call_with(", "def sg_eval_np("])
def test_removed_scaffolding_stays_removed(needle):
    hits = [str(p.relative_to(ROOT)) for p in _sources("palm", "app").values() if needle in p.read_text()]
    assert not hits, f"{needle!r} found in {hits}"
    assert not (ROOT / "app" / "standin.py").exists()


def test_one_rasteriser():
    defs = []
    for name, path in _sources("palm", "app").items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "rasteri" in node.name.lower():
                if name != "palm.render.raster":
                    defs.append(f"{name}.{node.name}")
    assert not defs, f"rasterisers outside palm/render/raster.py: {defs}"


def test_engine_never_imports_gui():
    bad = [n for n, p in _sources("palm").items() if any(t == "app" or t.startswith("app.") for t in _imports(n, p))]
    assert not bad, f"palm imports app: {bad}"
