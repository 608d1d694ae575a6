"""The package's two floors, read from its own imports: sections -> library -> config, no circles.

Every ``import`` and ``from ... import`` in ``falcon_h1r/`` (function-level imports included) is read with ``ast``;
a library module that imports ``falcon_h1r.sections`` (or the CLI) fails, and so does any circle of imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "falcon_h1r"
APP = {"falcon_h1r.cli", "falcon_h1r.__main__"}  # above the sections: they may import anything


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports, resolved to the longest existing module name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()

    def resolve(name: str) -> None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != me:
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                resolve(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                resolve(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def is_section(name: str) -> bool:
    return name == "falcon_h1r.sections" or name.startswith("falcon_h1r.sections.")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # a package's __init__ importing its own submodules is how packages expose names, not a circle
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for n in sorted(graph):
        if state.get(n) is None:
            found = visit(n)
            if found:
                return found
    return None


def test_the_library_never_imports_the_sections_or_the_cli():
    graph = import_graph()
    upward = sorted(f"{m} -> {t}" for m, ts in graph.items() if not is_section(m) and m not in APP
                    for t in ts if is_section(t) or t in APP)
    assert not upward, "library modules importing the floor above:\n" + "\n".join(upward)


def test_config_is_the_ground_floor():
    graph = import_graph()
    assert graph["falcon_h1r.config"] == set(), graph["falcon_h1r.config"]


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checker_sees_what_it_should():
    """The reader has teeth: it finds function-level imports and relative ones, and a planted circle."""
    graph = import_graph()
    assert "falcon_h1r.sft" in graph["falcon_h1r.sections.common"]  # imported inside get_base_model
    assert "falcon_h1r.inference.engine_pool" in graph["falcon_h1r.inference.dispatch"]  # "from pkg import module"
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"p": {"p.x"}, "p.x": {"q"}, "q": set()}) is None
