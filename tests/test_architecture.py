"""The package's layers: every import points down, and no modules import each other in a loop.

The table below is the architecture (docs/architecture.md draws it). Every
import statement of every module counts, wherever it stands: at the top, in a
function (lazy imports) or under ``if TYPE_CHECKING``. A module may import
modules of its own layer and of the layers below it, never above; and no set
of modules may import each other in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kitaru"

#: Layers, bottom up: a module's layer is the first whose prefix names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "ground",
        (
            "kitaru._errors",
            "kitaru._version",
            "kitaru._clock",
            "kitaru._tracing",
            "kitaru._types",
            "kitaru._config",
        ),
    ),
    ("storage", ("kitaru.storage",)),
    ("journal", ("kitaru.journal",)),
    ("actors", ("kitaru.actors",)),
    ("runtime", ("kitaru._runtime",)),
    ("llm", ("kitaru._llm",)),
    (
        "public face",
        (
            "kitaru._flow",
            "kitaru._checkpoint",
            "kitaru._primitives",
            "kitaru._named",
            "kitaru.testing",
            "kitaru",
        ),
    ),
    ("integrations", ("kitaru.integrations",)),
    ("command line", ("kitaru._cli", "kitaru.__main__")),
]

#: Import cycles allowed, each a documented pair (none today).
ALLOWED_CYCLES: list[frozenset[str]] = []

#: Entry points (``python -m``) stand above every layer.
ENTRY_POINTS = ("__main__",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the kitaru modules it imports (submodules named in ``from x import y`` too)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                subs = [f"{base}.{alias.name}" for alias in node.names]
                found = [s for s in subs if s in modules]
                targets.update(found)
                if len(found) < len(subs):
                    targets.add(base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _layer_name(module: str) -> str:
    index = _layer(module)
    return LAYERS[index][0] if index < len(LAYERS) else "entry point"


def _layer(module: str) -> int:
    if module.rsplit(".", 1)[-1] in ENTRY_POINTS:
        return len(LAYERS)
    best = -1
    best_len = -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best < 0:
        raise AssertionError(f"module {module} is in no layer; add it to LAYERS")
    return best


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _imports(_modules())


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    for module in graph:
        _layer(module)


def test_imports_only_point_down(graph: dict[str, set[str]]) -> None:
    upward = [
        f"{src} ({_layer_name(src)}) imports {dst} ({_layer_name(dst)})"
        for src, targets in sorted(graph.items())
        for dst in sorted(targets)
        if _layer(dst) > _layer(src)
    ]
    assert not upward, "imports from a higher layer:\n  " + "\n  ".join(upward)


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    cycles = [c for c in _cycles(graph) if frozenset(c) not in ALLOWED_CYCLES]
    assert not cycles, "modules importing each other in a circle:\n  " + "\n  ".join(
        " <-> ".join(c) for c in cycles
    )


def test_no_module_is_too_long() -> None:
    long = [
        f"{_module_name(p)}: {n} lines"
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > 500
    ]
    assert not long, "modules over 500 lines (split them along a seam):\n  " + "\n  ".join(long)


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    # The checker itself: a made-up graph with one circle and one upward arrow.
    made_up = {
        "kitaru.journal._a": {"kitaru.journal._b"},
        "kitaru.journal._b": {"kitaru.journal._a", "kitaru._runtime._x"},
        "kitaru._runtime._x": set(),
    }
    assert _cycles(made_up) == [["kitaru.journal._a", "kitaru.journal._b"]]
    assert _layer("kitaru._runtime._x") > _layer("kitaru.journal._b")
