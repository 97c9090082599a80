"""The one-way rule of the README's layout, checked on the source: every `import` in focalbench/
(module level, inside functions, under `if TYPE_CHECKING:`) is read with `ast`; no module may be
part of an import circle, and no room may import a room above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "focalbench"

# Rooms from the top down (README "Layout"); a room may import rooms below it, never above. Rooms on
# one line are siblings: they may import each other's modules, but no circle may form.
LAYERS: list[tuple[str, ...]] = [
    ("cli", "__main__", "train"),  # entry points: `focalbench ...`, `python -m focalbench.train`
    ("sweep",),
    ("engine",),
    ("models", "data", "metrics", "results"),
    ("losses", "matching"),
    ("config",),  # read by all; imports only the torch-free loss table below it
    ("errors", "utils", "__init__"),
]
# The one downward exception to "config imports none of the rooms": the loss table, which holds no
# code, so that a config knows each loss's hyper-parameters without importing torch.
ALLOWED = {("config", "losses.params")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The focalbench modules `path` imports, anywhere in the file (the submodule where a
    `from package import name` names one)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("focalbench")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package this module is in
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("focalbench"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def level(module: str) -> int:
    r = room(module)
    return next(i for i, rooms in enumerate(LAYERS) if r in rooms)


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_room_has_a_layer():
    unplaced = sorted({room(m) for m in modules()} - {r for rooms in LAYERS for r in rooms})
    assert not unplaced, f"rooms missing from LAYERS (and the README's layout): {unplaced}"


def test_no_import_circle():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_upward_import():
    upward = [
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in sorted(targets)
        if level(b) < level(a) and (room(a), b.removeprefix("focalbench.")) not in ALLOWED
    ]
    assert not upward, "imports against the one-way rule:\n" + "\n".join(upward)


@pytest.mark.parametrize(
    "edges, circle",
    [({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True), ({"a": {"b"}, "b": {"c"}, "c": set()}, False)],
)
def test_find_cycle_finds_a_planted_circle(edges, circle):
    assert (find_cycle(edges) is not None) is circle


def test_a_type_checking_import_counts(tmp_path):
    """`if TYPE_CHECKING: from focalbench.x import Y` is an import like any other."""
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from focalbench.sweep.plan import Job\n"
    )
    assert imports_of("focalbench.m", src, {"focalbench.sweep.plan"}) == {"focalbench.sweep.plan"}


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # in the rooms that launch and train, where long functions hid the flow
SHORT_FUNCTION_ROOMS = ("sweep", "engine")


def test_no_module_over_the_size_limit():
    long = {
        m: n
        for m, p in modules().items()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by idea): {long}"


def test_no_long_function_where_jobs_are_launched_and_trained():
    long = []
    for name, path in modules().items():
        if room(name) not in SHORT_FUNCTION_ROOMS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
