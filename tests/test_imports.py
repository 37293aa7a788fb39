"""The package's dependencies run one way: no import cycles, every module on its floor imports
only from its own package or lower floors, and front ends validate a render without TensorFlow.

The floors (DESIGN.md, the charter), lowest first::

    ground      wga's root modules: atomic, errors, quiet, run, figures, …
    data, executors
    models
    vis, train
    corpus
    serve
    cli

Packages that share a floor do not import each other either (data ↛ executors, vis ↛ train): a
sideways arrow is the start of a circle. A higher floor hands a seam down instead (a renderer,
an executor).

Imports are read with ``ast`` from every module of ``wga/``, function-level ones included (a
cycle hidden in a function is still a cycle), and those under ``if TYPE_CHECKING:`` too: a
type-only import never runs, but it still ties the two modules together (one cannot be read,
moved or tested without the other), so it counts for circles and floors alike; the shared type
moves down instead. ``import a.b.c`` depends on ``a.b.c``; ``from a.b import c`` on ``a.b.c``
when that is a module, else on ``a.b``.

A package's ``__init__``: Python runs it before any of its submodules, so a submodule that
imports from its own package (``from wga.executors import WorkerSpec`` in
``wga.executors.local``) only states a dependency that the layout already has, pointing one way
(the package is initialised first); such edges to a module's own ancestors are left out, and a
package ``__init__`` that hands out its submodules lazily (a factory) is not a cycle. An import
of any other package's ``__init__`` (``import wga`` for ``wga.__version__`` from ``wga.vis``)
is an edge like any other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "wga"
GROUND = "ground"  # wga's root modules (a module directly in wga/, not a package)
FLOORS: tuple[tuple[str, ...], ...] = (
    (GROUND,),
    ("wga.data", "wga.executors"),
    ("wga.models",),
    ("wga.vis", "wga.train"),
    ("wga.corpus",),
    ("wga.serve",),
    ("wga.cli",),
)
ENTRY_POINTS = {"wga.__main__": "wga.cli"}  # ``python -m wga`` is the CLI


def module_files() -> dict[str, Path]:
    """``wga.x.y`` → its file, for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The wga modules that ``module`` imports, anywhere in its code (type-only ones too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(_known(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else _known(base, modules))
    ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    return found - ancestors - {module, ""}


def _known(name: str, modules: dict[str, Path]) -> str:
    """``name`` or its longest prefix that is a wga module ('' outside wga)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return ""


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_cycle_finder_sees_a_cycle_through_a_function_level_import(tmp_path):
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import thing\n")
    modules = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph == {"a": {"b"}, "b": {"a"}}
    assert cycles(graph) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_a_submodule_importing_its_own_package_is_no_cycle(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("def make():\n    from pkg.impl import X\n")
    (tmp_path / "pkg" / "impl.py").write_text("from pkg import make\nimport other\n")
    (tmp_path / "other.py").write_text("import pkg.impl\n")
    modules = {
        "pkg": tmp_path / "pkg" / "__init__.py",
        "pkg.impl": tmp_path / "pkg" / "impl.py",
        "other": tmp_path / "other.py",
    }
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph == {"pkg": {"pkg.impl"}, "pkg.impl": {"other"}, "other": {"pkg.impl"}}
    assert cycles(graph) == [["other", "pkg.impl"]]


def test_no_module_of_wga_takes_part_in_an_import_cycle():
    graph = import_graph()
    assert "wga.vis.render" in graph and "wga.vis.recipe" in graph["wga.vis.render"]
    assert cycles(graph) == []


def floor_of(module: str, packages: set[str] | None = None) -> tuple[int, str]:
    """The floor of ``module`` (its index in :data:`FLOORS`) and the package that puts it there
    (:data:`GROUND` for a root module). ``packages``: the names that are packages (default:
    wga's), so that a root module is told from a package of its own."""
    packages = (
        packages
        if packages is not None
        else {name for name, path in module_files().items() if path.name == "__init__.py"}
    )
    module = ENTRY_POINTS.get(module, module)
    if module == "wga" or (module.count(".") == 1 and module not in packages):
        return 0, GROUND
    for index, names in enumerate(FLOORS):
        for name in names:
            if module == name or module.startswith(f"{name}."):
                return index, name
    raise AssertionError(f"{module} is on no floor: add its package to FLOORS (and DESIGN.md)")


def wrong_arrows(graph: dict[str, set[str]], packages: set[str]) -> list[str]:
    """Imports that climb to a higher floor or cross to another package of the same floor."""
    wrong = []
    for module, targets in sorted(graph.items()):
        floor, package = floor_of(module, packages)
        for target in sorted(targets):
            target_floor, target_package = floor_of(target, packages)
            if target_floor > floor:
                wrong.append(f"{module} → {target} (up: {package} → {target_package})")
            elif target_floor == floor and package != target_package:
                wrong.append(f"{module} → {target} (sideways: {package} → {target_package})")
    return wrong


def test_the_floor_check_sees_upward_sideways_and_type_only_arrows(tmp_path):
    (tmp_path / "vis.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import serve\n"
    )
    (tmp_path / "serve.py").write_text("def f():\n    import vis, train\n")
    (tmp_path / "train.py").write_text("import vis\n")
    modules = {name: tmp_path / f"{name}.py" for name in ("vis", "serve", "train")}
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph == {"vis": {"serve"}, "serve": {"vis", "train"}, "train": {"vis"}}
    assert cycles(graph) == [["serve", "train", "vis"]]  # a type-only import closes a circle too
    real = {f"wga.{name}": {f"wga.{t}" for t in targets} for name, targets in graph.items()}
    packages = set(real)  # as if each were a package of wga
    assert wrong_arrows(real, packages) == [
        "wga.train → wga.vis (sideways: wga.train → wga.vis)",
        "wga.vis → wga.serve (up: wga.vis → wga.serve)",
    ]
    assert floor_of("wga.atomic", packages) == (0, GROUND)
    assert floor_of("wga.models.surgery", packages) == (2, "wga.models")


def test_every_module_imports_only_from_its_floor_or_below():
    graph = import_graph()
    packages = {name for name, path in module_files().items() if path.name == "__init__.py"}
    assert floor_of("wga.run", packages) == (0, GROUND)
    assert floor_of("wga.models.registry", packages)[1] == "wga.models"
    assert wrong_arrows(graph, packages) == []


def test_front_ends_validate_a_render_request_without_starting_tensorflow():
    code = (
        "import sys\n"
        "import wga.cli.render_cmd, wga.vis.recipe, wga.vis.objective_table\n"
        "from wga.vis.recipe import recipes_from_request\n"
        "recipes_from_request({'model': 'vgg16-hed', 'layer': 'block1_conv1', 'unit': 3})\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"
