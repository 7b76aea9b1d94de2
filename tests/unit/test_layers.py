"""The layers of ../DESIGN.md hold: every import points down the package order (:data:`LAYERS`),
no package or module imports one that imports it back, and only ``faust_*.py`` modules touch
Faust's internals.

Every module of ``streams``, ``models`` and ``tables`` is read (not imported) and its imports
of our own modules collected, those inside functions included: a cycle hidden in a function
is still a cycle of the design. Imports under ``if TYPE_CHECKING:`` are left out (they are not
run).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "models", "tables")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _type_checking_only(tree: ast.Module) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Return the modules of ours that ``name`` imports (a name of a package: its __init__)."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from package import module`` imports the module (and runs the package's
            # __init__, which is Python's order, not a dependency of the importer's).
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            if target in known and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = our_modules()
    known = set(modules)
    # A package's __init__ runs before any of its modules, but that is Python's order, not an
    # import of the module's: only what a module names counts.
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert cycles(import_graph()) == []


def test_the_core_imports_nothing_of_ours_and_models_nothing_above_it() -> None:
    graph = import_graph()
    for name, targets in graph.items():
        if name == "streams.core" or name.startswith("streams.core."):
            above = {t for t in targets if not t.startswith("streams.core") and t != "streams"}
            assert not above, f"{name} (the core) imports {sorted(above)}"
        if name.split(".")[0] == "models":
            above = {
                t
                for t in targets
                if t.split(".")[0] in ("streams", "tables")
                and not t.startswith("streams.core")
                and t != "streams"
            }
            assert not above, f"{name} imports {sorted(above)}, above models"


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: The packages from the bottom up: a module may import modules of its own layer and of the
#: layers below, never above. ``streams.core`` is the pure floor (standard library only, see
#: test_purity); the rooms of ``streams`` follow DESIGN.md's order.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("streams.core",),
    ("models",),
    ("streams.kafka",),
    ("tables",),
    ("streams.intake",),
    ("streams.apply",),
    ("streams.ops",),
    (
        "streams.cli",
        "streams.app",
        "streams.worker",
        "streams.msk",
        "streams.faust_app",
        "streams.__main__",
    ),
)
#: Read by every room, so they sit just above the core: they import nothing of ours but it.
SHARED = ("streams.settings", "streams.ops.metrics")
#: Faust's public surface: the ``faust`` package itself, its web views and its exceptions
#: (documented for callers to catch). Anything deeper
#: (``faust.transport``, ``faust.tables``, ``faust.stores``, ...) is its internals.
FAUST_PUBLIC = {"faust", "faust.web", "faust.exceptions"}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_of(name: str) -> int | None:
    """Return the layer of module ``name`` (None: a shared module, or the ``streams`` package
    itself, whose __init__ imports nothing)."""
    if any(_within(name, s) for s in SHARED) or name == "streams":
        return None
    found = [i for i, packages in enumerate(LAYERS) if any(_within(name, p) for p in packages)]
    assert found, f"{name} is in no layer: add its package to LAYERS"
    return max(found)  # the most specific match (streams.core below streams.*)


def package_of(name: str) -> str:
    """Return the node of ``name`` in the package graph: its room of ``streams`` (or
    ``streams`` for the entry points), a shared module by itself, else its top package."""
    if any(_within(name, s) for s in SHARED):
        return next(s for s in SHARED if _within(name, s))
    if name == "streams.__main__":
        return "streams.cli"  # ``python -m streams``: the command line's entry
    parts = name.split(".")
    if parts[0] == "streams" and len(parts) >= 2 and (ROOT / "streams" / parts[1]).is_dir():
        return ".".join(parts[:2])
    return parts[0]


def test_every_import_points_down_the_layers() -> None:
    wrong = []
    for name, targets in import_graph().items():
        mine = layer_of(name)
        for target in targets:
            theirs = layer_of(target)
            if mine is None or theirs is None:
                continue  # the shared modules: test_the_shared_modules_import_only_the_core
            if theirs > mine:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports that point up the layers:\n" + "\n".join(sorted(wrong))


def test_the_shared_modules_import_only_the_core() -> None:
    for name, targets in import_graph().items():
        if any(_within(name, s) for s in SHARED):
            above = {t for t in targets if not _within(t, "streams.core")}
            assert not above, f"{name} (read by every room) imports {sorted(above)}"


def test_no_package_imports_one_that_imports_it_back() -> None:
    graph: dict[str, set[str]] = {}
    for name, targets in import_graph().items():
        mine = package_of(name)
        graph.setdefault(mine, set())
        graph[mine] |= {package_of(t) for t in targets if package_of(t) != mine}
    for package in {p for targets in graph.values() for p in targets}:
        graph.setdefault(package, set())
    assert cycles(graph) == []


def faust_imports(path: Path) -> set[str]:
    """Return the modules of faust that ``path`` imports (mode, the library under it, is a
    library of its own with a public API: ``streams.ops.logs`` uses its logging set-up)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return {n for n in found if _within(n, "faust")}


def test_only_faust_modules_touch_fausts_internals() -> None:
    for name, path in our_modules().items():
        internal = {n for n in faust_imports(path) if n not in FAUST_PUBLIC}
        if path.name.startswith("faust_"):
            continue
        assert not internal, (
            f"{name} imports Faust's internals {sorted(internal)}: move that code into a "
            "faust_*.py module, where every workaround of Faust is listed"
        )


def test_every_faust_module_lists_its_workarounds() -> None:
    modules = [p for p in our_modules().values() if p.name.startswith("faust_")]
    assert len(modules) >= 4
    for path in modules:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "workaround" in doc and "**" in doc, f"{path} does not list its workarounds"


def test_layers_catch_an_import_pointing_up() -> None:
    assert layer_of("streams.kafka.topics") < layer_of("tables.cache")  # type: ignore[operator]
    assert layer_of("streams.core.routing") == 0
    assert package_of("streams.apply.lane") == "streams.apply"
    assert package_of("streams.worker") == "streams"
    assert package_of("streams.settings") == "streams.settings"
    assert package_of("tables.cache") == "tables"
