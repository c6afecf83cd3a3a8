"""The architecture of DESIGN.md as tests: who may import whom, no import
cycles (imports inside functions included), a lint-clean tree, one settings
table.

The import graph is read from the source with ``ast`` (every import
statement, at any depth), so an import hidden in a function counts too.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gmmseg"

# The model layer: what a Segmenter or Inspector is made of.
MODELS = ("gmmseg.segment", "gmmseg.inspection", "gmmseg.features", "gmmseg.params", "gmmseg.persistence")
FRONT_ENDS = ("gmmseg.cli", "gmmseg.gui", "gmmseg.workflows", "gmmseg.dask")
LEAVES = ("gmmseg._fileio", "gmmseg._jit", "gmmseg._validation", "gmmseg._version")

# Imports inside functions, each for a reason other than dodging a cycle.
DEFERRED_ALLOWED = {
    # The desktop application needs PySide6 and a display; 'gmmseg segment'
    # must start without either.
    ("gmmseg.cli", "gmmseg.gui"): "the CLI starts without Qt",
    # Qt is imported only after the display check (no bare Qt abort).
    ("gmmseg.gui", "gmmseg.gui.app"): "no Qt until 'gmmseg gui' runs",
    ("gmmseg.gui.app", "gmmseg.gui.main_window"): "no Qt before the display check",
    # Dask is an optional extra: only --scheduler needs it.
    ("gmmseg.cli", "gmmseg.dask"): "the CLI starts without Dask",
}


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(name):
    return (ROOT / Path(*name.split(".")) / "__init__.py").is_file()


def _exists(name):
    path = ROOT / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _resolve(module, node):
    """Absolute names a (possibly relative) import statement brings in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".")
        if not _is_package(module):
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    names = []
    for alias in node.names:  # 'from . import workflows' imports a submodule
        sub = f"{target}.{alias.name}"
        names.append(sub if _exists(sub) else target)
    return names


def _imports():
    """{module: [(imported name, inside a function?)]} for every module of gmmseg."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[module] = list(_visit(module, tree, False))
    return graph


def _visit(module, node, in_function):
    """(imported name, inside a function?) for every import under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            for name in _resolve(module, child):
                yield name, in_function
        yield from _visit(module, child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


GRAPH = _imports()


def _internal(module):
    return sorted({name for name, _ in GRAPH[module] if name == "gmmseg" or name.startswith("gmmseg.")})


def _under(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_graph_was_read():
    assert {"gmmseg.segment", "gmmseg.engine.gaussian_mixture", "gmmseg.gui.main_window", "gmmseg.workflows"} <= set(GRAPH)
    assert ("gmmseg.segment", False) in [(n, f) for n, f in GRAPH["gmmseg.inspection"]]


def test_engine_imports_nothing_else_of_gmmseg():
    for module in GRAPH:
        if _under(module, ["gmmseg.engine"]):
            others = [n for n in _internal(module) if not _under(n, ["gmmseg.engine", "gmmseg._jit"])]
            assert not others, f"{module} imports {others}: the engine is numpy + numba only"


def test_only_the_gui_imports_qt():
    for module, imports in GRAPH.items():
        qt = [n for n, _ in imports if n.split(".")[0] in ("PySide6", "PyQt5", "PyQt6", "shiboken6", "qtpy", "superqt")]
        if qt:
            assert _under(module, ["gmmseg.gui", "gmmseg.napari"]), f"{module} imports {qt}"


def test_only_the_napari_plugin_imports_napari():
    for module, imports in GRAPH.items():
        found = [n for n, _ in imports if n.split(".")[0] in ("napari", "npe2", "magicgui", "vispy")]
        if found:
            assert _under(module, ["gmmseg.napari"]), f"{module} imports {found}: napari is an optional extra"


def test_the_napari_plugin_is_a_front_end_of_its_own():
    # It may reuse the application's settings form (built from the settings
    # table) but nothing else of the desktop application, and nothing of
    # gmmseg imports it.
    for module in GRAPH:
        if _under(module, ["gmmseg.napari"]):
            gui = [n for n in _internal(module) if _under(n, ["gmmseg.gui"])]
            assert set(gui) <= {"gmmseg.gui.settings_form"}, f"{module} imports {gui}"
        else:
            assert not [n for n in _internal(module) if _under(n, ["gmmseg.napari"])], f"{module} imports the plugin"


def test_models_never_import_front_ends_or_exports():
    for module in MODELS:
        bad = [n for n in _internal(module) if _under(n, FRONT_ENDS + ("gmmseg.export",))]
        assert not bad, f"{module} imports {bad}: models know nothing of the CLI, the GUI or workflows"


def test_persistence_knows_states_not_model_classes():
    # The file format turns states into JSON and back; the models build
    # themselves from states (from_state), so the format never needs them.
    bad = [n for n in _internal("gmmseg.persistence") if _under(n, ("gmmseg.segment", "gmmseg.inspection"))]
    assert not bad, f"persistence imports {bad}"


def test_leaves_import_no_other_gmmseg_module():
    for module in LEAVES:
        assert _internal(module) == [], f"{module} is a leaf but imports {_internal(module)}"
    assert _internal("gmmseg.io") == ["gmmseg._jit"]


def test_nothing_but_the_front_ends_uses_workflows():
    for module in GRAPH:
        if "gmmseg.workflows" in _internal(module):
            assert _under(module, ("gmmseg.cli", "gmmseg.gui", "gmmseg.napari", "gmmseg.dask")), module


def test_no_import_cycles():
    edges = {m: [n for n in _internal(m) if n in GRAPH and n != m] for m in GRAPH}
    # Tarjan's strongly connected components: any component of more than one
    # module is a cycle.
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
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
                cycles.append(sorted(component))

    for v in edges:
        if v not in index:
            connect(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_imports_inside_functions_have_a_reason():
    deferred = sorted(
        (module, name) for module, imports in GRAPH.items() for name, inside in imports
        if inside and (name == "gmmseg" or name.startswith("gmmseg."))
    )
    unexplained = [pair for pair in deferred if pair not in DEFERRED_ALLOWED]
    assert unexplained == [], f"imports inside functions without a listed reason: {unexplained}"


def test_import_gmmseg_pulls_in_neither_qt_nor_scikit_learn():
    code = "import sys, gmmseg; print(sorted(m for m in ('PySide6', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_only_gmmseg_dask_imports_dask_and_only_when_used():
    for module, imports in GRAPH.items():
        found = [(n, inside) for n, inside in imports if n.split(".")[0] in ("dask", "distributed")]
        if found:
            assert module == "gmmseg.dask", f"{module} imports {found}"
            assert all(inside for _, inside in found), f"gmmseg.dask imports {found} at module level"


def test_import_gmmseg_and_the_cli_pull_in_no_dask():
    code = ("import sys, gmmseg, gmmseg.cli, gmmseg.dask\n"
            "try:\n    gmmseg.cli.main(['segment', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "--scheduler" in out.stdout
    assert out.stderr.strip() == "[]"


def test_import_gmmseg_pulls_in_no_napari():
    code = ("import sys, gmmseg; print(sorted(m for m in ('napari', 'npe2', 'qtpy', 'superqt', 'vispy', 'magicgui') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed: it is part of the 'test' extra (pip install -e '.[test]')")
    out = subprocess.run([ruff, "check", "gmmseg", "tests", "benchmarks", "resources"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


# The application is a Qt-free session model plus panels (DESIGN.md): the
# session and what it draws with hold the state and the work, and can be
# used (and tested) without Qt; the main window only assembles.
QT_FREE_GUI = ("gmmseg.gui.session", "gmmseg.gui.render")
MAIN_WINDOW_LINES = 400


def test_the_session_model_imports_no_qt():
    for module in QT_FREE_GUI:
        qt = [n for n, _ in GRAPH[module] if n.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph", "qtpy")]
        gui = [n for n in _internal(module) if _under(n, ["gmmseg.gui"]) and n not in QT_FREE_GUI]
        assert not qt and not gui, f"{module} imports {qt + gui}: the session model has no Qt"


def test_the_main_window_only_assembles():
    lines = len((PACKAGE / "gui" / "main_window.py").read_text(encoding="utf-8").splitlines())
    assert lines <= MAIN_WINDOW_LINES, f"main_window.py has {lines} lines; move work into the session or a panel"
