"""The floors of the code, checked over the import graph: arrows only go down, and nothing imports in a circle.

cli -> tools -> engine -> core. The core is ``sandbox`` and its plain modules
(what plugins, examples and recipes import); the engine is ``sandbox.engine``
(one run); each tool is a module or package under ``sandbox.tools`` (across
runs) and never imports another tool; the command line is ``sandbox.cli``,
whose commands share ``sandbox.cli.common`` and never import each other.
Built-in plugins (``sandbox_plugins``) and the example packages import the
core only. Every import counts, those inside functions included.

``python tests/test_layers.py`` prints the graph's figures: modules per floor,
edges, and cycles.
"""

from __future__ import annotations

import ast
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"sandbox": ROOT / "sandbox", "sandbox_plugins": ROOT / "plugins"}
SOURCES.update({p.name: p for p in sorted(ROOT.glob("examples/*/src/*")) if (p / "__init__.py").exists()})


def modules() -> dict[str, Path]:
    """Every module of the tree by its dotted name."""
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """``module -> the tree's modules it imports`` (``from a import b`` counts ``a.b`` when that is a module)."""
    mods = modules()
    edges: dict[str, set[str]] = collections.defaultdict(set)
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    base = ".".join(parent + ([node.module] if node.module else []))
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                known = next(
                    (".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in mods), None
                )
                if known is not None and known != name:
                    edges[name].add(known)
    return {name: edges.get(name, set()) for name in mods}


def floor(module: str) -> str:
    """core, engine, tools, cli, plugins, or the example package's name."""
    parts = module.split(".")
    if parts[0] != "sandbox":
        return "plugins" if parts[0] == "sandbox_plugins" else f"example {parts[0]}"
    if len(parts) > 1 and parts[1] in ("engine", "tools", "cli"):
        return parts[1]
    if module == "sandbox.__main__":  # python -m sandbox: the command line
        return "cli"
    return "core"


def allowed(source: str, target: str) -> bool:
    """Whether ``source`` may import ``target``."""
    src, dst = floor(source), floor(target)
    if dst == "core":
        return True
    if src in ("core", "plugins") or src.startswith("example"):
        return dst == src and (src != "core")  # plugins import each other; the core never reaches up
    if src == "engine":
        return dst == "engine"
    if src == "tools":  # a tool's own modules, never another tool's
        return dst == "engine" or (dst == "tools" and target.split(".")[:3] == source.split(".")[:3])
    if src == "cli":  # anything below; a command only shares sandbox.cli.common
        return dst != "cli" or target in ("sandbox.cli", "sandbox.cli.common") or source == "sandbox.cli"
    return False


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_floor_is_populated():
    floors = collections.Counter(floor(m) for m in modules())
    assert floors["core"] >= 10 and floors["engine"] >= 10 and floors["tools"] >= 3 and floors["cli"] >= 10
    assert {"sandbox.hookspecs", "sandbox.protocols", "sandbox.registry", "sandbox.engine.run"} <= set(modules())


def test_arrows_only_go_down():
    wrong = [f"{s} -> {t}" for s, targets in import_graph().items() for t in sorted(targets) if not allowed(s, t)]
    assert not wrong, "imports against the floors (cli -> tools -> engine -> core):\n" + "\n".join(wrong)


def test_no_import_cycles():
    assert not cycles(import_graph())


def test_the_rule_catches_what_it_forbids():
    assert not allowed("sandbox.sampling", "sandbox.tools.tune")
    assert not allowed("sandbox.engine.events", "sandbox.tools.sweep")
    assert not allowed("sandbox_plugins.launchers.submitit_launcher", "sandbox.tools.sweep")
    assert not allowed("sandbox.tools.summary", "sandbox.tools.sweep")
    assert not allowed("sandbox.cli.summary", "sandbox.cli.sweep")
    assert allowed("sandbox.tools.sweep.plan", "sandbox.tools.sweep.axes")
    assert allowed("sandbox.cli.sweep", "sandbox.tools.sweep") and allowed("sandbox.cli.sweep", "sandbox.cli.common")
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


if __name__ == "__main__":
    graph = import_graph()
    counts = collections.Counter(floor(m) for m in graph)
    print("modules per floor:", dict(sorted(counts.items())))
    inside = sum(len(t) for s, t in graph.items() if s.startswith("sandbox.") or s == "sandbox")
    print(f"edges: {sum(len(t) for t in graph.values())} in all, {inside} from sandbox/")
    print("cycles:", cycles(graph) or "none")
    wrong = [f"{s} -> {t}" for s, targets in graph.items() for t in sorted(targets) if not allowed(s, t)]
    print("against the floors:", wrong or "none")
    sys.exit(0)
