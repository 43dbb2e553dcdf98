"""The package's layers (docs/design.md): each layer imports only layers below it, and no
module imports itself back through others (no import cycles), function-local imports
included."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "traitlab"

# Lowest first. A module may import its own layer and the layers before it.
LAYERS = [
    {"core"},
    {"config"},
    {"lm", "theory"},
    {"traits", "data", "mnist", "judges"},
    {"toy", "evaluate"},
    {"experiments", "serve", "audit"},
    {"sweep"},
    {"cli", "__main__", "__init__"},
]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: in no layer; add it to LAYERS and docs/design.md")


def modules() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("traitlab")
            ):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("traitlab")}
        graph[name] = deps
    return graph


def test_every_import_points_down_or_sideways() -> None:
    up = []
    for mod, deps in modules().items():
        for dep in deps:
            if layer_of(dep) > layer_of(mod):
                up.append(f"{mod} -> {dep}")
    assert not up, up


def test_there_are_no_import_cycles() -> None:
    graph = modules()
    names = set(graph)

    def resolve(dep: str) -> str | None:
        while dep and dep not in names:
            dep = dep.rpartition(".")[0]
        return dep or None

    edges = {
        m: {d for d in (resolve(x) for x in deps) if d and d != m} for m, deps in graph.items()
    }
    # A package's __init__ re-exporting its modules is not a cycle of code.
    edges = {m: {d for d in ds if not d.startswith(m + ".")} for m, ds in edges.items()}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for d in edges.get(m, ()):
            if seen.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            if d not in seen:
                visit(d)
        stack.pop()
        seen[m] = 2

    for m in sorted(edges):
        if m not in seen:
            visit(m)


def test_no_module_is_over_about_400_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 450
    }
    assert not long, long
