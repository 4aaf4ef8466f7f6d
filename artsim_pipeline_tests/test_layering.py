"""The package's layering, read from the imports of every module under ``artsim_pipeline/``:

* ``core/`` imports no Dagster (plain Python, usable without an orchestrator), and not the settings module
  (``config`` reads the environment; core gets its values passed in) except inside the one Python-API
  convenience that defaults to the environment, ``core.search.search``;
* Dagster's internals (``dagster._...``) are imported by one module only, ``dagster_stale.py`` (its
  docstring says why: Dagster has no public stale-status API);
* ``web/`` depends on ``core`` (and itself), never on the asset graph, the runner or the CLI;
* only the asset modules themselves and ``definitions.py`` (which builds the graph from them) import an asset
  module (``artsim_pipeline.assets...``): what the runner, the CLI or the stale-status cache need from the
  graph's side (the code versions, the check names) lives outside ``assets/``;
* no module imports another in a circle, type-only (``if TYPE_CHECKING:``) and function-local imports
  included (a type-only circle still ties two modules together: ``ModelSpec`` lives in ``core/model_spec.py``
  so that the model registry and the modules it imports do not import each other back).

(That no module imports a test module is ``test_suite_hygiene``'s rule.) Every rule reads the imports with
the one reader the structure tests share, ``import_reader``.
"""

from __future__ import annotations

from pathlib import Path

from artsim_pipeline_tests.import_reader import Import, circles, module_graph, read_imports

PACKAGE = Path(__file__).resolve().parent.parent / "artsim_pipeline"


def statements(path: Path) -> list[Import]:
    return read_imports(path, PACKAGE)


def imports(path: Path) -> list[str]:
    """Absolute names of every module (and module member) ``path`` imports, relative imports resolved."""
    return [name for statement in statements(path) for name in statement.names]


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
        for statement in statements(path):
            if _allowed_settings_import(statement, path):
                continue
            if any(n == "artsim_pipeline.config" or n.startswith("artsim_pipeline.config.") for n in statement.names):
                importers.add(str(path.relative_to(PACKAGE)))
    assert not importers


def _allowed_settings_import(statement: Import, path: Path) -> bool:
    """``if TYPE_CHECKING:`` blocks (annotations only) and the body of ``core.search.search`` (the convenience
    that defaults to the environment's settings)."""
    convenience = statement.scope == "search" and path.name == "search.py" and path.parent.name == "core"
    return statement.type_only or convenience


def test_only_the_stale_status_adapter_imports_dagster_internals():
    private = {m for m, names in modules().items() if any(is_private_dagster(i) for i in names)}
    assert private == {"dagster_stale.py"}


def test_web_depends_on_core_only():
    allowed = ("artsim_pipeline.core", "artsim_pipeline.web", "artsim_pipeline.config")
    offenders = {m: [i for i in names if i.startswith("artsim_pipeline") and i != "artsim_pipeline"
                     and not i.startswith(allowed)]
                 for m, names in modules("web").items()}
    assert not {m: i for m, i in offenders.items() if i}


def asset_importers(root: Path) -> dict[str, list[str]]:
    """Modules of the package at ``root`` outside ``assets/`` and ``definitions.py`` that import an asset
    module (``<package>.assets`` or below), with what they import."""
    assets = f"{root.name}.assets"
    found = {}
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(root)
        if where.parts[0] == "assets" or str(where) == "definitions.py":
            continue
        names = [n for s in read_imports(path, root) for n in s.names if n == assets or n.startswith(assets + ".")]
        if names:
            found[str(where)] = names
    return found


def test_only_the_graph_imports_asset_modules():
    assert asset_importers(PACKAGE) == {}


def test_the_asset_import_rule_sees_relative_local_and_type_only_imports(tmp_path):
    root = tmp_path / "pkg"
    (root / "assets").mkdir(parents=True)
    (root / "web").mkdir()
    for name, text in {
        "__init__.py": "", "assets/__init__.py": "", "web/__init__.py": "",
        "assets/index.py": "from .common import x\n", "assets/common.py": "x = 1\n",
        "definitions.py": "from .assets.index import x\n",  # the graph: allowed
        "runner.py": "def run():\n    from .assets.index import x\n",  # function-local
        "cli.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.assets import common\n",
        "web/app.py": "from ..assets import index\n",
        "status.py": "from .assets_report import y\nimport pkg.core\n",  # a look-alike name: not an asset module
    }.items():
        (root / name).write_text(text)
    assert asset_importers(root) == {
        "cli.py": ["pkg.assets", "pkg.assets.common"], "runner.py": ["pkg.assets.index", "pkg.assets.index.x"],
        "web/app.py": ["pkg.assets", "pkg.assets.index"]}


def test_no_module_imports_another_in_a_circle():
    graph = module_graph(PACKAGE)
    found = [" -> ".join(group) + "\n    " + "\n    ".join(
        f"{a} line {graph[a][b][0].line} imports {b}{' (type only)' if graph[a][b][0].type_only else ''}"
        for a in group for b in group if b in graph[a]) for group in circles(graph)]
    assert not found, "import circles:\n" + "\n".join(found)


def test_the_circle_finder_sees_type_only_and_function_local_imports(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    for name, text in {
        "__init__.py": "", "sub/__init__.py": "",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n",
        "b.py": "from . import c\nclass B: ...\n",
        "c.py": "def f():\n    from pkg.a import thing\n",
        "sub/d.py": "from ..e import x\n", "e.py": "import os\nx = 1\n",  # d -> e only: no circle
        "f.py": "from .sub import g\n", "sub/g.py": "from ..f import y\n",
    }.items():
        (root / name).write_text(text)
    graph = module_graph(root)
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.f", "pkg.sub.g"]]
    assert graph["pkg.a"]["pkg.b"][0].type_only and graph["pkg.c"]["pkg.a"][0].scope == "f"
    assert set(graph["pkg.sub.d"]) == {"pkg.e"} and graph["pkg.e"] == {}


def test_the_import_reader_sees_relative_and_private_imports():
    names = imports(PACKAGE / "runner.py")
    assert "artsim_pipeline.dagster_stale" in names and "dagster" in names
    assert any(is_private_dagster(i) for i in imports(PACKAGE / "dagster_stale.py"))
    assert not is_private_dagster("dagster.__version__") and not is_private_dagster("dagster.AssetKey")
