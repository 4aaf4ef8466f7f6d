"""Rules of the test suite itself, read from the source of every module under ``artsim_pipeline_tests/``:

* no module imports a test module (``test_*.py``): shared helpers live in support modules
  (``support.py``, ``core/support.py``, ``search_lake.py``, ``web_lake.py``, ``nga_fixtures.py``, ...);
* a test that starts a real process is marked ``slow`` (on the function, its class, or the module's
  ``pytestmark``). A test starts one when it, a fixture it asks for, or a helper it calls (in its own module,
  a ``conftest.py`` or a support module, followed through calls and references) calls ``subprocess``,
  ``os.fork``/``os.system``/``os.spawn*``, ``multiprocessing.Process`` or Playwright (a browser process).
  A server in a thread of the test process (``web_lake.LiveServer``, ``http_server.LocalServer``) is no
  process. Processes started inside ``artsim_pipeline`` or a library (Dagster's multiprocess executor) are not
  seen; ``NOT_A_SERVED_PROCESS`` lists the few tests allowed a process, each with why.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from artsim_pipeline_tests.import_reader import Import, module_name, read_imports

TESTS = Path(__file__).resolve().parent

PROCESS_STARTERS = {"subprocess.Popen", "subprocess.run", "subprocess.call", "subprocess.check_call",
                    "subprocess.check_output", "os.fork", "os.system", "os.posix_spawn", "os.spawnv", "os.spawnl",
                    "os.execv", "multiprocessing.Process", "asyncio.create_subprocess_exec",
                    "asyncio.create_subprocess_shell", "playwright.sync_api.sync_playwright"}
NOT_A_SERVED_PROCESS = {
    "test_automation.py::test_runs_of_a_killed_artsim_run_are_failed_so_the_automation_requests_them_again":
        "`python -c pass`, waited for at once: only the pid of a process that is gone",
}


def is_test_module(dotted: str) -> bool:
    return dotted.rpartition(".")[2].startswith("test_")


@dataclass
class Module:
    """One parsed module: what its names import, its top-level defs, and what each def refers to."""

    path: Path
    root: Path
    name: str
    tree: ast.Module
    imports: dict[str, str] = field(default_factory=dict)  # local name -> dotted origin
    defs: dict[str, ast.AST] = field(default_factory=dict)  # top-level functions and classes
    statements: list[Import] = field(default_factory=list)  # its import statements (import_reader)

    @classmethod
    def parse(cls, path: Path, root: Path) -> "Module":
        module = cls(path, root, module_name(path, root), ast.parse(path.read_text(), str(path)))
        module.statements = read_imports(path, root, module.tree)  # function-local imports count too
        for statement in module.statements:
            module.imports.update(statement.bound)
        for node in module.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                module.defs[node.name] = node
        return module

    def imported_modules(self) -> list[tuple[int, str]]:
        """``(line, dotted name)`` of every module (or module member) this module imports (the module imported
        from, and each member: ``from . import test_x`` too)."""
        return [(statement.line, name) for statement in self.statements for name in statement.names]

    @property
    def rel(self) -> str:
        return self.path.relative_to(self.root).as_posix()

    def references(self, node: ast.AST) -> set[str]:
        """Dotted names ``node`` uses: ``local:<def>`` for this module's defs, else the imported origin."""
        out = set()
        annotations = {id(n) for a in ast.walk(node) for ann in _annotations(a) for n in ast.walk(ann)}
        for sub in ast.walk(node):
            if id(sub) in annotations:  # `procs: list[subprocess.Popen]` starts nothing
                continue
            if isinstance(sub, (ast.Name, ast.Attribute)) and isinstance(getattr(sub, "ctx", None), ast.Load):
                parts = []
                target = sub
                while isinstance(target, ast.Attribute):
                    parts.append(target.attr)
                    target = target.value
                if not isinstance(target, ast.Name):
                    continue
                head = target.id
                if head in self.defs:
                    out.add(f"local:{head}")
                elif head in self.imports:
                    origin = self.imports[head]
                    out.add(origin)
                    out.add(".".join([origin, *reversed(parts)]))
        return out


def _annotations(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.arg):
        return [node.annotation] if node.annotation else []
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return [node.returns] if node.returns else []
    return [node.annotation] if isinstance(node, ast.AnnAssign) else []


def all_modules(root: Path = TESTS) -> dict[str, Module]:
    return {m.name: m for m in (Module.parse(p, root) for p in sorted(root.rglob("*.py")))}


def uses_of(module: Module, node: ast.AST, modules: dict[str, Module]) -> set[str]:
    """Dotted names ``node`` refers to, plus the fixtures its arguments name (this module's or a conftest's)."""
    uses = {r if not r.startswith("local:") else f"{module.name}.{r[6:]}" for r in module.references(node)}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        fixtures = conftest_fixtures(module, modules) | {n: f"{module.name}.{n}" for n in module.defs}
        uses |= {fixtures[a.arg] for a in node.args.args if a.arg in fixtures}
    return uses


def process_starting_defs(modules: dict[str, Module]) -> set[str]:
    """``module.def`` of every top-level def that (transitively) starts a process."""
    refs = {f"{m.name}.{name}": uses_of(m, node, modules) for m in modules.values() for name, node in m.defs.items()}
    starting: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, uses in refs.items():
            if name not in starting and any(u in PROCESS_STARTERS or u in starting for u in uses):
                starting.add(name)
                changed = True
    return starting


def marked_slow(decorators: list[ast.expr]) -> bool:
    return any("mark.slow" in ast.unparse(d) for d in decorators)


def module_marked_slow(module: Module) -> bool:
    for node in module.tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            return "mark.slow" in ast.unparse(node.value)
    return False


def conftest_fixtures(module: Module, modules: dict[str, Module]) -> dict[str, str]:
    """Fixture name -> ``module.def`` from the ``conftest.py`` files that apply to ``module``."""
    out = {}
    for conf in modules.values():
        if conf.path.name == "conftest.py" and module.path.is_relative_to(conf.path.parent):
            out |= {name: f"{conf.name}.{name}" for name in conf.defs}
    return out


def collected_tests(module: Module):
    """``(test id, function node, decorators that apply)`` of every test in ``module``."""
    for node in module.tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
            yield node.name, node, node.decorator_list
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and sub.name.startswith("test_"):
                    yield f"{node.name}::{sub.name}", sub, [*node.decorator_list, *sub.decorator_list]


def unmarked_process_tests(modules: dict[str, Module]) -> list[str]:
    starting = process_starting_defs(modules) | PROCESS_STARTERS
    offenders = []
    for module in modules.values():
        if not module.path.name.startswith("test_") or module_marked_slow(module):
            continue
        for test_id, node, decorators in collected_tests(module):
            key = f"{module.rel}::{test_id}"
            found = uses_of(module, node, modules) & starting
            if found and not marked_slow(decorators) and key not in NOT_A_SERVED_PROCESS:
                offenders.append(f"{key} starts a process (through {', '.join(sorted(found))})")
    return offenders


def imports_of_test_modules(modules: dict[str, Module]) -> list[str]:
    """``path:line imports name`` for every import of a test module (of this package) by any module."""
    found = {f"{m.rel}:{line} imports {name}" for m in modules.values() for line, name in m.imported_modules()
             if name.split(".")[0] == m.root.name and is_test_module(name) and name != m.name}
    return sorted(found)


def test_no_module_imports_a_test_module():
    assert not imports_of_test_modules(all_modules()), "move the shared helper into a support module:\n" + "\n".join(
        imports_of_test_modules(all_modules()))


def test_every_test_that_starts_a_process_is_marked_slow():
    offenders = unmarked_process_tests(all_modules())
    assert not offenders, "mark these @pytest.mark.slow:\n" + "\n".join(offenders)


def test_the_checks_find_a_test_import_and_processes_through_fixtures_helpers_and_classes(tmp_path):
    """Both rules on a planted package: each violation is found, and only those."""
    root = tmp_path / TESTS.name
    (root / "sub").mkdir(parents=True)
    for folder in (root, root / "sub"):
        (folder / "__init__.py").write_text("")
    (root / "helpers.py").write_text("import subprocess\n\ndef shell(cmd):\n    return subprocess.run(cmd)\n\n"
                                     "class Server:\n    def start(self):\n        return shell(['x'])\n")
    (root / "conftest.py").write_text("import pytest\nfrom .helpers import Server\n\n"
                                      "@pytest.fixture\ndef served():\n    return Server().start()\n\n"
                                      "@pytest.fixture\ndef uses_served(served):\n    return served\n")
    (root / "sub" / "test_a.py").write_text(
        "import pytest\nfrom ..helpers import shell\n\ndef helper():\n    return 1\n\n"
        "def test_fixture(uses_served):\n    pass\n\ndef test_helper():\n    shell(['y'])\n\n"
        "@pytest.mark.slow\ndef test_marked(served):\n    pass\n\ndef test_plain():\n    assert helper() == 1\n")
    (root / "sub" / "test_b.py").write_text(
        "from .test_a import helper\nfrom multiprocessing import Process\n\n"
        "class TestThing:\n    def test_proc(self):\n        Process(target=helper).start()\n")
    (root / "sub" / "test_c.py").write_text(
        "import pytest\nfrom . import test_a\nfrom ..helpers import Server\n\npytestmark = [pytest.mark.slow]\n\n"
        "def test_served():\n    Server().start()\n")
    modules = all_modules(root)
    assert [o.split(" ")[0] for o in sorted(unmarked_process_tests(modules))] == [
        "sub/test_a.py::test_fixture", "sub/test_a.py::test_helper", "sub/test_b.py::TestThing::test_proc"]
    assert [i.split(" ")[0] for i in imports_of_test_modules(modules)] == ["sub/test_b.py:1", "sub/test_c.py:2"]
