"""The layer order of the project's packages, checked on the import graph (parsed with `ast`).

Every import counts: top-level ones, lazy ones inside functions, and the ones under
`if TYPE_CHECKING:` (they are still a dependency the type checker follows, and the next
refactor tends to make them real). `importlib.import_module("literal")` counts as well.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

# The layer order, lowest first: a module may import its own entry and any lower layer.
# Entries in the same tuple are siblings and must not import each other. A dotted entry is
# more specific than its package: server.runtime sits above the rest of server.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("model",),
    ("drivers", "compute"),
    ("alarms",),
    ("web",),
    ("server",),
    ("server.runtime",),
    ("server.cli",),
)

ROOT = Path(__file__).resolve().parents[1]
# Today there are ~60 modules; far fewer means discovery broke and the test would pass vacuously.
MIN_MODULES = 40


@dataclass(frozen=True)
class Import:
    """One import statement's edge: `importer` (in file `path`, at `line`) imports `imported`."""

    path: str
    line: int
    importer: str
    imported: str

    def where(self) -> str:
        """`path:line`, as an editor or terminal can jump to it."""
        return f"{self.path}:{self.line}"


def top_packages(layers: tuple[tuple[str, ...], ...] = LAYERS) -> tuple[str, ...]:
    """The top-level packages the layer order mentions, in order, without repeats."""
    return tuple(dict.fromkeys(entry.split(".")[0] for layer in layers for entry in layer))


def module_name(path: str) -> str:
    """`server/runtime.py` -> `server.runtime`, `server/__init__.py` -> `server`."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_sources(root: Path = ROOT) -> dict[str, str]:
    """Source text of every project module, keyed by its path relative to `root` (posix)."""
    sources: dict[str, str] = {}
    for package in top_packages():
        for file in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in file.parts:
                sources[file.relative_to(root).as_posix()] = file.read_text(encoding="utf-8")
    return sources


def _resolve(name: str, known: set[str]) -> str:
    """The longest known module (or package) that `name` starts with; `name` if none is."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return name


def _relative_base(module: str, is_package: bool, level: int, path: str, line: int) -> str:
    """The package a `from ...` import with `level` dots is relative to."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 >= len(package):
        raise ValueError(f"{path}:{line}: relative import beyond the top-level package")
    return ".".join(package[: len(package) - (level - 1)])


def _targets(node: ast.AST, module: str, is_package: bool, path: str) -> list[str]:
    """The dotted names one AST node imports (before resolving them against the project)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = _relative_base(module, is_package, node.level, path, node.lineno)
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        # `from pkg import mod` imports the submodule pkg.mod; `from pkg.mod import name` imports
        # pkg.mod. Which one a name is gets decided against the known modules in `find_imports`.
        return [source] + [f"{source}.{alias.name}" for alias in node.names if alias.name != "*"]
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        arg = node.args[0]
        if (name == "import_module" and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str) and not arg.value.startswith(".")):
            return [arg.value]
    return []


def find_imports(path: str, source: str, known: set[str]) -> list[Import]:
    """Every import of a project module in one file, wherever in the file it is."""
    module = module_name(path)
    is_package = path.endswith("__init__.py")
    projects = {name.split(".")[0] for name in known}
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=path)):
        targets = _targets(node, module, is_package, path)
        if not targets:
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.ImportFrom):
            source_module, *names = targets
            # A name that is a module is an edge to that submodule; any other name is an
            # attribute of source_module, so it is the edge. `from . import a` has no other.
            modules = [name for name in names if name in known]
            if len(modules) < len(names) or not names:
                modules.insert(0, source_module)
            targets = modules
        for target in targets:
            if target.split(".")[0] in projects:
                found.append(Import(path, line, module, _resolve(target, known)))
    return sorted(set(found), key=lambda imp: (imp.path, imp.line, imp.imported))


def known_modules(sources: Mapping[str, str]) -> set[str]:
    """Module names of the files, plus every package above them (namespace packages too)."""
    known: set[str] = set()
    for path in sources:
        parts = module_name(path).split(".")
        known.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
    return known


def all_imports(sources: Mapping[str, str]) -> list[Import]:
    """The project's import graph: every edge between project modules, in file order."""
    known = known_modules(sources)
    return [
        imp for path, text in sorted(sources.items()) for imp in find_imports(path, text, known)
    ]


def layer_of(
    module: str, layers: tuple[tuple[str, ...], ...] = LAYERS
) -> tuple[int, str] | None:
    """(layer index, entry) of the most specific layer entry `module` is in, if any."""
    best: tuple[int, str] | None = None
    for index, layer in enumerate(layers):
        for entry in layer:
            if (module == entry or module.startswith(entry + ".")) and (
                best is None or len(entry) > len(best[1])
            ):
                best = (index, entry)
    return best


def layer_violations(
    imports: Iterable[Import], layers: tuple[tuple[str, ...], ...] = LAYERS
) -> list[str]:
    """One message per import that goes up the layer order or sideways into a sibling."""
    messages: list[str] = []
    for imp in imports:
        source = layer_of(imp.importer, layers)
        target = layer_of(imp.imported, layers)
        if source is None:
            messages.append(f"{imp.where()}: {imp.importer} is in no layer of LAYERS")
            continue
        if target is None:
            messages.append(f"{imp.where()}: imports {imp.imported}, which is in no layer")
            continue
        (low, entry), (high, other) = source, target
        if high > low:
            why = f"upward: layer {low} {entry!r} must not import layer {high} {other!r}"
        elif high == low and entry != other:
            why = f"sideways: siblings {entry!r} and {other!r} must not import each other"
        else:
            continue
        messages.append(f"{imp.where()}: {imp.importer} imports {imp.imported} ({why})")
    return messages


def _strongly_connected(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of `graph`, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _shortest_cycle(start: str, graph: Mapping[str, set[str]], members: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one strongly connected component."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for succ in sorted(graph.get(node, set()) & members):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if succ not in parents:
                    parents[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError(f"{start} is not on a cycle")


def import_cycles(imports: Iterable[Import]) -> list[str]:
    """One message per import cycle (strongly connected component), with the lines involved."""
    edges: dict[tuple[str, str], list[Import]] = {}
    graph: dict[str, set[str]] = {}
    for imp in imports:
        edges.setdefault((imp.importer, imp.imported), []).append(imp)
        graph.setdefault(imp.importer, set()).add(imp.imported)
    messages: list[str] = []
    for component in _strongly_connected(graph):
        members = set(component)
        start = component[0]
        if len(component) == 1 and start not in graph.get(start, set()):
            continue
        cycle = _shortest_cycle(start, graph, members)
        lines = [
            f"  {imp.where()}: {a} imports {b}"
            for a, b in itertools.pairwise(cycle)
            for imp in edges[(a, b)]
        ]
        message = f"import cycle: {' -> '.join(cycle)}\n" + "\n".join(lines)
        if len(component) > len(cycle) - 1:
            message += f"\n  (one cycle of the strongly connected {', '.join(component)})"
        messages.append(message)
    return messages


# --- the project ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project_imports() -> list[Import]:
    """The import graph of the real tree."""
    return all_imports(project_sources())


def test_layers_name_each_entry_once() -> None:
    entries = [entry for layer in LAYERS for entry in layer]
    assert len(entries) == len(set(entries)), entries


def test_finds_the_project() -> None:
    modules = {module_name(path) for path in project_sources()}
    assert len(modules) >= MIN_MODULES, sorted(modules)
    for package in top_packages():
        assert package in modules, f"{package}/__init__.py not found under {ROOT}"
    assert all(layer_of(module) for module in modules)
    assert not any(m.startswith(("tests", "bench")) for m in modules)


def test_finds_imports_in_the_project(project_imports: list[Import]) -> None:
    # Guards against a checker that quietly sees nothing in the real tree.
    assert len(project_imports) >= 2 * MIN_MODULES
    assert {imp.importer.split(".")[0] for imp in project_imports} >= {"drivers", "compute"}


def test_imports_only_go_down_the_layers(project_imports: list[Import]) -> None:
    violations = layer_violations(project_imports)
    if violations:
        pytest.fail(f"{len(violations)} imports break the layer order:\n" + "\n".join(violations))


def test_no_import_cycles(project_imports: list[Import]) -> None:
    cycles = import_cycles(project_imports)
    if cycles:
        pytest.fail(f"{len(cycles)} import cycles:\n" + "\n".join(cycles))


# --- the checker, on synthetic trees ----------------------------------------------------------


def _check(sources: dict[str, str]) -> tuple[list[str], list[str]]:
    imports = all_imports(sources)
    return layer_violations(imports), import_cycles(imports)


CLEAN = {
    "model/__init__.py": "",
    "model/records.py": "from __future__ import annotations\nimport os\n",
    "model/flags.py": "from model.records import Sample\nfrom . import records\n",
    "drivers/__init__.py": "",
    "drivers/bus.py": "import model.records\nfrom aiohttp import web\nimport web_thing\n",
    "compute/__init__.py": "",
    "compute/kernels.py": "from model import flags\n",
    "server/__init__.py": "",
    "server/config.py": "from compute.kernels import k\nfrom drivers import bus\n",
    "server/runtime.py": "from server.config import Cfg\nfrom .config import Cfg\n",
    "server/cli.py": "def main():\n    from server import runtime\n",
}


def test_clean_tree_passes() -> None:
    assert _check(CLEAN) == ([], [])


def test_resolves_submodules_names_and_relative_imports() -> None:
    known = {"pkg", "pkg.mod", "pkg.sub", "pkg.sub.deep", "pkg.sub.leaf"}
    source = "\n".join([
        "from pkg import mod",  # a submodule
        "from pkg.mod import name",  # a name in pkg.mod
        "from pkg import attr",  # a name in pkg/__init__.py
        "import pkg.sub.deep",
        "from . import leaf",  # pkg.sub.leaf
        "from .. import mod",  # pkg.mod
        "from ..mod import name",
        "from .deep.gone import name",  # no such module: its longest known prefix
        "import os.path, numpy",
        "import importlib; importlib.import_module('pkg.sub.leaf')",
    ])
    found = [(imp.line, imp.imported) for imp in find_imports("pkg/sub/x.py", source, known)]
    assert found == [
        (1, "pkg.mod"), (2, "pkg.mod"), (3, "pkg"), (4, "pkg.sub.deep"), (5, "pkg.sub.leaf"),
        (6, "pkg.mod"), (7, "pkg.mod"), (8, "pkg.sub.deep"), (10, "pkg.sub.leaf"),
    ]
    # In a package's __init__.py, `.` is the package itself.
    init = find_imports("pkg/sub/__init__.py", "from . import leaf\nfrom .. import mod\n", known)
    assert [imp.imported for imp in init] == ["pkg.sub.leaf", "pkg.mod"]
    with pytest.raises(ValueError, match="beyond the top-level"):
        find_imports("pkg/mod.py", "from ... import x\n", known)


def test_catches_an_upward_import() -> None:
    violations, _ = _check({**CLEAN, "model/flags.py": "x = 1\nfrom drivers.bus import Bus\n"})
    assert len(violations) == 1
    assert violations[0].startswith("model/flags.py:2: model.flags imports drivers.bus (upward")


def test_catches_an_import_between_siblings() -> None:
    violations, _ = _check({**CLEAN, "compute/kernels.py": "import drivers.bus\n"})
    assert violations == [
        "compute/kernels.py:1: compute.kernels imports drivers.bus (sideways: siblings "
        "'compute' and 'drivers' must not import each other)"
    ]


def test_catches_lazy_and_type_checking_imports() -> None:
    lazy = "def f():\n    if True:\n        from server import config\n"
    typing = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from web import app\n"
    violations, _ = _check({
        **CLEAN, "web/__init__.py": "", "web/app.py": "",
        "drivers/bus.py": lazy, "compute/kernels.py": typing,
    })
    assert [v.split(" (")[0] for v in violations] == [
        "compute/kernels.py:3: compute.kernels imports web.app",
        "drivers/bus.py:3: drivers.bus imports server.config",
    ]


def test_a_dotted_entry_sits_above_its_package() -> None:
    violations, _ = _check({**CLEAN, "server/config.py": "from server.runtime import Runtime\n"})
    assert [v.split(" (")[0] for v in violations] == [
        "server/config.py:1: server.config imports server.runtime"
    ]
    assert "layer 4 'server' must not import layer 5 'server.runtime'" in violations[0]


def test_catches_a_cycle() -> None:
    _, cycles = _check({
        **CLEAN,
        "model/records.py": "def f():\n    from model import flags\n",
        "model/flags.py": "from .records import Sample\n",
    })
    assert cycles == [
        "import cycle: model.flags -> model.records -> model.flags\n"
        "  model/flags.py:1: model.flags imports model.records\n"
        "  model/records.py:2: model.records imports model.flags"
    ]


def test_catches_a_cycle_through_a_package_init() -> None:
    # `from server import VERSION` is an edge to server/__init__.py, which imports server.config.
    _, cycles = _check({
        **CLEAN,
        "server/__init__.py": "from .config import Cfg\n",
        "server/config.py": "from server import VERSION\n",
    })
    assert cycles == [
        "import cycle: server -> server.config -> server\n"
        "  server/__init__.py:1: server imports server.config\n"
        "  server/config.py:1: server.config imports server"
    ]
