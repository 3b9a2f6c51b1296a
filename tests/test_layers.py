"""The layers README's Architecture section draws, held by the imports themselves.

Every import in the package (module level and inside functions alike) is read from the
source; each module's layer may import only the layers listed for it, and no two modules
may import each other, directly or through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "membership_log"

#: layer -> the layers it may import (besides itself). Shells may import anything.
ALLOWED = {
    "version": set(),
    "core": {"version"},
    "settings": {"core", "version"},
    "render": {"core", "version"},
    "stores": {"core", "settings", "version"},
    "history": {"core", "stores", "render", "settings", "version"},
    "ops": {"core", "stores", "history", "render", "settings", "version"},
    "demo": {"core", "stores", "history", "render", "ops", "settings", "version"},
    "engine": {"core", "render", "version"},
    "shell": {"core", "stores", "history", "render", "ops", "demo", "settings", "version",
              "engine", "shell"},
}
SHELLS = {"cli", "handler", "launch", "__main__", "__init__"}


def layer_of(module: str) -> str:
    """``membership_log.core.fold`` -> ``core``; top-level modules are their own layer."""
    parts = module.split(".")[1:]
    if not parts:
        return "shell"
    head = parts[0]
    if head in SHELLS:
        return "shell"
    return head


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        if ".migrations" in name:
            continue
        out[name] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (a ``from pkg import mod`` counts as mod)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith("membership_log"):
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # A package's __init__ imported only for its submodule is not an arrow.
    return {n: {t for t in imports_of(n, p, known) if mods[t].name != "__init__.py"
                or t == "membership_log"} - {"membership_log"}
            for n, p in mods.items()}


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for name, targets in graph().items():
        mine = layer_of(name)
        for t in targets:
            theirs = layer_of(t)
            if theirs != mine and theirs not in ALLOWED[mine]:
                wrong.append(f"{name} ({mine}) imports {t} ({theirs})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
    g = graph()
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for t in sorted(g.get(n, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)
    assert not cycles, "\n".join(cycles)


def test_the_store_layer_never_imports_the_driver_or_a_shell():
    for name, targets in graph().items():
        if layer_of(name) == "stores":
            assert not any(layer_of(t) in ("history", "shell", "ops") for t in targets), name
