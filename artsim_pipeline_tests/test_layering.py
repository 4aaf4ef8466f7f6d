"""The package's layering, read from the imports of every module under ``artsim_pipeline/``:

* ``core/`` imports no Dagster (plain Python, usable without an orchestrator), and not the settings module
  (``config`` reads the environment; core gets its values passed in) except inside the one Python-API
  convenience that defaults to the environment, ``core.search.search``;
* Dagster's internals (``dagster._...``) are imported by one module only, ``dagster_stale.py`` (its
  docstring says why: Dagster has no public stale-status API);
* ``web/`` depends on ``core`` (and itself), never on the asset graph, the runner or the CLI;
* the asset modules import no asset module in a circle;
* no test module imports another test module (shared helpers live in support modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "artsim_pipeline"


def imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against the package)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.extend(imports_of(node, path))
    return found


def imports_of(node: ast.Import | ast.ImportFrom, path: Path) -> list[str]:
    """The absolute names one import statement of ``path`` imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)[:-1]
    if node.level:
        module = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    return [module, *(f"{module}.{alias.name}" for alias in node.names)]


def modules(under: str = "") -> dict[str, list[str]]:
    root = PACKAGE / under if under else PACKAGE
    return {str(p.relative_to(PACKAGE)): imports(p) for p in sorted(root.rglob("*.py"))}


def test_core_imports_no_dagster():
    offenders = {m: [i for i in names if i == "dagster" or i.startswith("dagster.")]
                 for m, names in modules("core").items()}
    assert not {m: i for m, i in offenders.items() if i}


def is_private_dagster(name: str) -> bool:
    """``dagster._core...`` is; ``dagster.__version__`` and ``dagster.AssetKey`` are not."""
    parts = name.split(".")
    return len(parts) > 1 and parts[0] == "dagster" and parts[1].startswith("_") and not parts[1].endswith("__")


def test_core_does_not_import_the_settings_module():
    importers = set()
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        lines = _convenience_lines(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in lines:
                names = imports_of(node, path)
                if any(n == "artsim_pipeline.config" or n.startswith("artsim_pipeline.config.") for n in names):
                    importers.add(str(path.relative_to(PACKAGE)))
    assert not importers


def _convenience_lines(path: Path) -> set[int]:
    """Lines allowed to import the settings: ``if TYPE_CHECKING:`` blocks (annotations only) and the body of
    ``core.search.search`` (the convenience that defaults to the environment's settings)."""
    lines: set[int] = set()
    for node in ast.parse(path.read_text()).body:
        type_only = isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        convenience = (isinstance(node, ast.FunctionDef) and node.name == "search" and path.name == "search.py"
                       and path.parent.name == "core")
        if type_only or convenience:
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def test_only_the_stale_status_adapter_imports_dagster_internals():
    private = {m for m, names in modules().items() if any(is_private_dagster(i) for i in names)}
    assert private == {"dagster_stale.py"}


def test_web_depends_on_core_only():
    allowed = ("artsim_pipeline.core", "artsim_pipeline.web", "artsim_pipeline.config")
    offenders = {m: [i for i in names if i.startswith("artsim_pipeline") and i != "artsim_pipeline"
                     and not i.startswith(allowed)]
                 for m, names in modules("web").items()}
    assert not {m: i for m, i in offenders.items() if i}


def test_asset_modules_import_no_asset_module_in_a_circle():
    graph = {}
    for module, names in modules("assets").items():
        name = "artsim_pipeline.assets." + Path(module).stem
        graph[name] = {i for i in names if i.startswith("artsim_pipeline.assets.")
                       and i.count(".") == 2 and i != name}
    for start in graph:
        seen, stack = set(), list(graph[start])
        while stack:
            node = stack.pop()
            assert node != start, f"{start} imports itself through {sorted(seen)}"
            if node not in seen and node in graph:
                seen.add(node)
                stack.extend(graph[node])


def test_no_test_module_imports_another():
    tests = PACKAGE.parent / "artsim_pipeline_tests"
    offenders = {}
    for path in sorted(tests.rglob("*.py")):
        names = [n for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, (ast.Import, ast.ImportFrom))
                 for n in _test_imports(node, path, tests)]
        if names:
            offenders[str(path.relative_to(tests))] = names
    assert not offenders


def _test_imports(node: ast.Import | ast.ImportFrom, path: Path, tests: Path) -> list[str]:
    """The ``test_*`` modules of the test package that one import statement names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = list(path.relative_to(tests.parent).with_suffix("").parts)[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return [n for n in names if n.startswith("artsim_pipeline_tests") and n.split(".")[-1].startswith("test_")
            and (tests.parent / (n.replace(".", "/") + ".py")).exists()]


def test_the_import_reader_sees_relative_and_private_imports():
    names = imports(PACKAGE / "runner.py")
    assert "artsim_pipeline.dagster_stale" in names and "dagster" in names
    assert any(is_private_dagster(i) for i in imports(PACKAGE / "dagster_stale.py"))
    assert not is_private_dagster("dagster.__version__") and not is_private_dagster("dagster.AssetKey")
