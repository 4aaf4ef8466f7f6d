"""``artsim run`` killed with SIGKILL at each kind of write, then run again.

Every test starts a real ``artsim run`` subprocess (its own session, so ``os.killpg`` takes its children
too), waits for one moment by polling what the run writes (its stdout, the lake, the test server's
request log, the publish lock) and kills it there. Then:

* every stored artifact is whole: ``index/CURRENT`` (when present) names a generation that loads, every
  generation directory loads, every ``*.parquet`` reads, every cached image decodes and
  ``catalog.duckdb`` opens read-only;
* the next ``artsim run`` exits 0 and leaves a complete lake (all paintings in the served generation)
  with no temp file that the lake's own sweeps would not remove (``*.tmp`` files go once an hour old at
  the next catalog refresh; ``index/*/.tmp-*`` directories once an hour old at the next publish);
* the run after it materializes nothing ("everything up to date").

A moment the run got past before the kill fails the test with a message saying so (never a silent pass).
The index-swap test also runs ``artsim search <objectid> --json`` in a loop from before the kill until
the lake is whole again: every search must exit 0 with the painting itself at rank 1.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from artsim_pipeline.core.temp_sweep import LAKE_TEMP_DIRS, sweep_lake_temp_files
from artsim_pipeline.core.generations import current_generation_id, load_generation, load_staged_fusions
from artsim_pipeline.core.lake import DataLake
from artsim_pipeline_tests.http_server import IiifImages, LocalServer
from artsim_pipeline_tests.nga_fixtures import Painting, nga_csvs, write_mirror
from artsim_pipeline_tests.support import ARTSIM

pytestmark = pytest.mark.slow

SETTINGS = {
    "ARTSIM_MODELS": "mobilenet_v2", "ARTSIM_WEIGHTS": "random", "ARTSIM_DEVICE": "cpu", "ARTSIM_PCA_DIM": "4",
    "ARTSIM_MIN_SIDE": "64", "ARTSIM_LIMIT": "0", "ARTSIM_BATCH_SIZE": "3", "ARTSIM_IMAGE_SIZE": "1200",
    "ARTSIM_EMBED_BATCH_SIZE": "1",  # one progress line per image: an embedding step can be caught mid-way
}
RUN_TIMEOUT = 150.0  # one whole `artsim run` of a few paintings (torch on CPU, 2 cores, a search loop beside it)
MOMENT_TIMEOUT = 90.0  # waiting for the moment to kill at
POLL = 0.005
UP_TO_DATE = "artsim run: everything up to date"


def paintings(ids) -> list[Painting]:
    return [Painting(i, width=96, height=80, artist=f"Painter {i % 3}") for i in ids]


def picture(seed: int) -> Image.Image:
    """A distinct 96x80 picture (what the IIIF server serves for one painting)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:80, 0:96]
    pixels = [(rng.uniform(0, 255) + 90 * np.sin(rng.uniform(0.03, 0.3) * (x + 2 * y))) % 255 for _ in range(3)]
    return Image.fromarray(np.stack(pixels, axis=-1).astype(np.uint8))


# -- running and killing ---------------------------------------------------------------------------

@dataclass
class Run:
    """One ``artsim run`` subprocess; stdout and stderr go to a log file (read while it runs)."""

    proc: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.monotonic)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


class Workspace:
    """A temporary data lake + DAGSTER_HOME and the ``artsim`` processes started on them."""

    def __init__(self, root: Path, source: str) -> None:
        self.root = root
        self.lake = root / "lake"
        home = root / "dagster_home"
        home.mkdir(parents=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTSIM_", "DAGSTER_HOME"))}
        self.env |= SETTINGS | {"ARTSIM_NGA_SOURCE": source, "ARTSIM_DATA_LAKE": str(self.lake),
                                "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.runs: list[Run] = []

    def start(self) -> Run:
        """``artsim run`` in the background, in its own session (``os.killpg`` reaches its children)."""
        log = self.root / f"artsim-{len(self.runs):02d}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([ARTSIM, "run"], cwd=self.root, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        run = Run(proc, log)
        self.runs.append(run)
        return run

    def run(self, what: str) -> str:
        """``artsim run`` to the end; it must exit 0. Returns its output."""
        run = self.start()
        try:
            code = run.proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            run.kill()
            pytest.fail(f"{what}: artsim run did not finish in {RUN_TIMEOUT:.0f}s; output:\n{run.output()[-4000:]}")
        assert code == 0, f"{what}: artsim run exited {code}; output:\n{run.output()[-4000:]}"
        return run.output()

    def search(self, objectid: int) -> tuple[int, str, str]:
        result = subprocess.run([ARTSIM, "search", str(objectid), "--json", "-k", "3", "--include-self"],
                                cwd=self.root, env=self.env,
                                capture_output=True, text=True, timeout=RUN_TIMEOUT, start_new_session=True)
        return result.returncode, result.stdout, result.stderr

    def close(self) -> None:
        for run in self.runs:
            if run.proc.poll() is None:
                run.kill()


@pytest.fixture
def workspaces(tmp_path):
    made: list[Workspace] = []

    def make(source: str | Path, name: str = "ws") -> Workspace:
        ws = Workspace(tmp_path / name, str(source))
        made.append(ws)
        return ws

    yield make
    for ws in made:
        ws.close()


def kill_at(run: Run, moment: Callable[[], bool], what: str, timeout: float = MOMENT_TIMEOUT) -> float:
    """Poll ``moment`` and SIGKILL the run's process group as soon as it holds; returns seconds into the run.

    Fails when the run exits first (the moment was missed) or the moment never comes.
    """
    deadline = time.monotonic() + timeout
    while True:
        if moment():
            run.kill()
            assert run.proc.returncode == -signal.SIGKILL, f"artsim run exited {run.proc.returncode} before the kill"
            return time.monotonic() - run.started
        code = run.proc.poll()
        if code is not None:
            pytest.fail(f"artsim run exited {code} before {what}: the moment to kill at was missed "
                        f"(the run got past it); output:\n{run.output()[-4000:]}")
        if time.monotonic() > deadline:
            run.kill()
            pytest.fail(f"no {what} within {timeout:.0f}s; output:\n{run.output()[-4000:]}")
        time.sleep(POLL)


def wait_for(condition: Callable[[], bool], what: str, run: Run | None = None, timeout: float = MOMENT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if run is not None and run.proc.poll() is not None:
            pytest.fail(f"artsim run exited {run.proc.returncode} while waiting for {what}; "
                        f"output:\n{run.output()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f}s" + (f"; output:\n{run.output()[-4000:]}" if run else ""))
        time.sleep(POLL)


def rerun_until_up_to_date(ws: Workspace, expected_ids: set[int]) -> None:
    """The next run completes and leaves a whole lake; the run after it materializes nothing."""
    output = ws.run("the run after the kill")
    assert UP_TO_DATE not in output, "the run after the kill found nothing to redo"
    assert_whole(ws.lake, expected_ids)
    assert_temp_files_sweepable(ws.lake)
    again = ws.run("the second run after the kill")
    assert UP_TO_DATE in again, f"the second run after the kill materialized something:\n{again}"


# -- what a lake must look like ----------------------------------------------------------------------

def served_ids(lake: Path) -> set[int]:
    return {int(i) for i in load_generation(DataLake(lake)).bundles["full"].ids}


def assert_consistent(lake: Path) -> None:
    """Every stored artifact is complete: the old state or the new one, never a torn file."""
    dl = DataLake(lake)
    served = current_generation_id(dl)
    if served is not None:  # else nothing was published yet: the "old generation" is no generation
        assert dl.generation_dir(served).is_dir(), f"index/CURRENT names {served}, which does not exist"
        assert load_generation(dl).id == served
    if dl.generations_dir.is_dir():
        for entry in dl.generations_dir.iterdir():
            if not entry.name.startswith(".tmp-"):  # a renamed-into-place generation is complete
                load_generation(dl, entry.name)
    if dl.staged_pointer_path.is_file():
        assert load_staged_fusions(dl) is not None
    for path in lake.rglob("*.parquet"):
        pq.read_table(path)  # raises on a torn or empty file
    for path in dl.images_dir.glob("*.jpg") if dl.images_dir.is_dir() else []:
        with Image.open(path) as image:
            image.load()  # a truncated JPEG raises
    if dl.catalog_db.exists():
        with duckdb.connect(str(dl.catalog_db), read_only=True) as con:
            tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            if "filtered_paintings" in tables:
                con.execute("SELECT count(*) FROM filtered_paintings").fetchone()


def assert_whole(lake: Path, expected_ids: set[int]) -> None:
    """A finished lake: consistent, every painting in the catalog, the Parquet table and the served index."""
    assert_consistent(lake)
    dl = DataLake(lake)
    assert current_generation_id(dl) is not None, "no generation is served after a completed run"
    assert served_ids(lake) == expected_ids
    with duckdb.connect(str(dl.catalog_db), read_only=True) as con:
        catalog = {row[0] for row in con.execute("SELECT objectid FROM filtered_paintings").fetchall()}
    assert catalog == expected_ids
    assert set(pq.read_table(dl.filtered_paintings_parquet).column("objectid").to_pylist()) == expected_ids
    for batch in sorted(dl.image_status_dir.glob("*.parquet")):
        statuses = set(pq.read_table(batch).column("status").to_pylist())
        assert statuses <= {"ok", "cached"}, f"{batch.name}: {statuses}"


def temp_leftovers(lake: Path) -> tuple[list[Path], list[Path]]:
    files = [p for p in lake.rglob("*.tmp") if p.is_file()]
    dirs = [p for p in lake.rglob(".tmp-*") if p.is_dir()]
    return files, dirs


def assert_temp_files_sweepable(lake: Path) -> None:
    """Temp entries a kill left behind are ones the lake's own clean-up removes once they are stale.

    ``*.tmp`` files (``storage.atomic_path``): ``sweep_lake_temp_files`` (run by every catalog refresh)
    removes them once an hour old; shown here by ageing them. ``.tmp-*`` directories (half-written
    generations / staged fusions): only directly under ``index/generations`` or ``index/staging``,
    where the next publish removes them once an hour old.
    """
    dl = DataLake(lake)
    files, dirs = temp_leftovers(lake)
    for path in files:
        top = path.relative_to(lake).parts[0]
        assert path.name.startswith("."), path
        assert top in LAKE_TEMP_DIRS or path.parent == dl.images_dir, f"{path}: not in a swept folder"
    for path in dirs:
        assert path.parent in (dl.generations_dir, dl.staging_dir), f"{path}: a temp dir outside index/*/"
    if files:
        old = time.time() - 2 * 3600
        for path in files:
            os.utime(path, (old, old))
        assert sweep_lake_temp_files(dl) == len(files)
        assert not temp_leftovers(lake)[0]


# -- (a) image downloads ------------------------------------------------------------------------------

def test_kill_during_image_downloads(workspaces):
    """Killed with image bodies in flight (served from 127.0.0.1, stalled after 64 bytes): no image is stored
    half-written, no batch status is recorded, and the next run downloads every image."""
    ids = range(1, 8)  # three batches: 3 + 3 + 1
    with LocalServer() as server:
        iiif = IiifImages(server)
        for name, body in nga_csvs(paintings(ids), iiif_base=f"{server.url}/iiif").items():
            server.routes[f"/data/{name}.csv"] = body
        for p in paintings(ids):
            iiif.add(p.uuid, picture(p.objectid))
            # the first bytes of every image, then a long pause: the run is killed with bodies in flight
            server.faults[IiifImages.path(p.uuid, int(SETTINGS["ARTSIM_IMAGE_SIZE"]))] = [("stall", 64, 60.0)]
        ws = workspaces(server.url)
        run = ws.start()
        kill_at(run, lambda: server.count("/iiif/") > 0, "an image request")
        assert "[1/3] batch-00000: image_cache" in run.output()
        dl = DataLake(ws.lake)
        assert not list(dl.images_dir.glob("*.jpg")), "an image was stored before its body arrived"
        assert list(dl.images_dir.glob(".*.tmp")), "no download was in flight at the kill"
        assert not dl.image_status_path("batch-00000").exists()
        assert_consistent(ws.lake)

        server.faults.clear()  # the source is healthy again
        rerun_until_up_to_date(ws, set(ids))


# -- (b) embedding writes -----------------------------------------------------------------------------

def test_kill_during_embedding_writes(workspaces, tmp_path):
    """Killed as batch-00001's embeddings are written: batch 0 stays done, the next run redoes batch 1's
    unrecorded step and runs batch 2 and the collection."""
    ids = range(1, 8)
    mirror = write_mirror(tmp_path / "mirror", paintings(ids))
    ws = workspaces(mirror)
    run = ws.start()
    # the last image of batch 1 is embedded: its Parquet file is being written (or was just written and
    # Dagster has not recorded it yet); batch 2 and the collection are still to come
    line = re.compile(r"batch-00001: mobilenet_v2: 3/3 ")
    kill_at(run, lambda: bool(line.search(run.output())), "the last embedding progress line of batch-00001")
    dl = DataLake(ws.lake)
    assert dl.embeddings_path("mobilenet_v2", "batch-00000").is_file()  # batch 0 was done
    assert not dl.embeddings_path("mobilenet_v2", "batch-00002").exists()
    assert current_generation_id(dl) is None
    assert_consistent(ws.lake)

    rerun_until_up_to_date(ws, set(ids))


# -- (c) the index swap, with searches throughout -----------------------------------------------------

class SearchLoop:
    """``artsim search <objectid> --json`` over and over in a thread, until stopped."""

    def __init__(self, ws: Workspace, objectid: int) -> None:
        self.ws, self.objectid = ws, objectid
        self.results: list[tuple[int, str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.results.append(self.ws.search(self.objectid))

    def __enter__(self) -> "SearchLoop":
        self._thread.start()
        wait_for(lambda: len(self.results) > 0, "a first search")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=RUN_TIMEOUT)

    def check(self) -> None:
        assert self.results
        for code, out, err in self.results:
            assert code == 0, f"artsim search {self.objectid} exited {code} during the rebuild: {err[-2000:]}"
            ranked = [hit["objectid"] for hit in json.loads(out)["results"]]
            assert ranked[0] == self.objectid, f"search for {self.objectid} during the rebuild returned {ranked}"


@dataclass
class PublishLock:
    """The lake's publish lock (``index/.lock``), held by the test to stop a run inside ``publish_generation``."""

    path: Path
    handle: object = None

    def acquire(self, timeout: float = MOMENT_TIMEOUT) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+b")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"could not take {self.path} within {timeout:.0f}s")
                time.sleep(0.0002)

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None

    def waiting(self, pid: int) -> bool:
        """Whether process ``pid`` is blocked on this lock (Linux ``/proc/locks``: ``-> FLOCK ... <pid> maj:min:inode``)."""
        inode = os.stat(self.path).st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 6 and fields[1] == "->" and fields[2] == "FLOCK" and fields[5] == str(pid) \
                    and fields[6].rsplit(":", 1)[-1] == str(inode):
                return True
        return False


def spin_until(condition: Callable[[], bool], run: Run, what: str, timeout: float = MOMENT_TIMEOUT) -> None:
    """Like :func:`wait_for` with a 0.2 ms poll, for windows of a few milliseconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if run.proc.poll() is not None:
            pytest.fail(f"artsim run exited {run.proc.returncode} before {what}: the moment was missed; "
                        f"output:\n{run.output()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f}s; output:\n{run.output()[-4000:]}")
        time.sleep(0.0002)


@pytest.mark.skipif(not Path("/proc/locks").is_file(), reason="needs Linux /proc/locks to see a blocked publish")
def test_kill_during_index_swap_keeps_search_on_one_whole_generation(workspaces, tmp_path):
    """Generation A is served; a rebuild (two new paintings) is killed twice inside ``faiss_index`` while
    ``artsim search 2`` runs in a loop, then completed.

    The test stops the run at known points with the lake's publish lock (``index/.lock``, taken by
    ``stage_fusions`` and ``publish_generation``): (1) once ``pca_model`` has staged the new fusions, the
    test takes the lock and the run is killed while ``faiss_index`` waits for it; (2) the next run waits
    for the test's lock, the lock is released, and the run is killed as soon as the new generation's temp
    directory appears (the ``CURRENT`` swap follows a few milliseconds later).
    """
    mirror = tmp_path / "mirror"
    write_mirror(mirror, paintings(range(1, 5)))  # batches of 3 + 1
    ws = workspaces(mirror)
    ws.run("building generation A")
    dl = DataLake(ws.lake)
    generation_a = current_generation_id(dl)
    assert served_ids(ws.lake) == {1, 2, 3, 4}
    staged_a = dl.staged_pointer_path.read_text()
    lock = PublishLock(dl.index_lock_path)

    def temp_generations() -> list[str]:
        return [e.name for e in os.scandir(dl.generations_dir) if e.name.startswith(".tmp-")]

    write_mirror(mirror, paintings(range(1, 7)))  # two new paintings: new catalog, a new batch, a rebuild
    with SearchLoop(ws, objectid=2) as searches:
        try:
            # 1. pca_model staged the new fusions; faiss_index is killed while it waits to publish them
            run = ws.start()
            wait_for(lambda: "pca_model (" in run.output(), "the collection stage", run)
            os.setpriority(os.PRIO_PROCESS, run.proc.pid, 19)  # the test's polls must win the CPU from here on
            spin_until(lambda: dl.staged_pointer_path.read_text() != staged_a, run, "pca_model staging new fusions")
            lock.acquire()
            assert current_generation_id(dl) == generation_a, \
                "faiss_index published before the test took the publish lock: the moment was missed"
            kill_at(run, lambda: lock.waiting(run.proc.pid), "faiss_index waiting for the publish lock")
            lock.release()
            assert current_generation_id(dl) == generation_a and not temp_generations()
            assert_consistent(ws.lake)

            # 2. the next run is killed while it writes the new generation's directory (before the swap)
            lock.acquire()
            run = ws.start()
            wait_for(lambda: lock.waiting(run.proc.pid), "the next run waiting for the publish lock", run)
            os.setpriority(os.PRIO_PROCESS, run.proc.pid, 19)  # the test's poll must win the CPU from here on
            lock.release()
            spin_until(lambda: bool(temp_generations()), run, "a generation being written")
            run.kill()
            assert current_generation_id(dl) == generation_a, \
                "the new generation was swapped in before the kill: the moment was missed"
            assert temp_generations(), "the half-written generation directory is gone"
            assert_consistent(ws.lake)
            assert served_ids(ws.lake) == {1, 2, 3, 4}

            # 3. the next run completes (swap to B) and the one after has nothing to do
            rerun_until_up_to_date(ws, set(range(1, 7)))
        finally:
            lock.release()
    searches.check()
    assert len(searches.results) >= 3
    assert current_generation_id(dl) != generation_a
    code, out, err = ws.search(6)  # a painting only generation B has
    assert code == 0 and json.loads(out)["results"][0]["objectid"] == 6, err


# -- (d) DuckDB writes --------------------------------------------------------------------------------

def test_kill_during_catalog_writes(workspaces, tmp_path):
    """Killed while ``raw_objects`` / ``filtered_paintings`` write ``catalog.duckdb``: on a fresh lake, then
    during a refresh of a served lake. The database opens read-only after each kill, the old generation
    stays served, and the next run reloads the catalog."""
    mirror = tmp_path / "mirror"
    write_mirror(mirror, paintings(range(1, 6)))
    ws = workspaces(mirror)
    catalog = DataLake(ws.lake).catalog_db

    # a fresh lake: killed as soon as raw_objects created catalog.duckdb
    run = ws.start()
    kill_at(run, catalog.exists, "catalog.duckdb")
    assert "materializing" in run.output() and "done in" not in run.output(), "the catalog stage had finished"
    assert_consistent(ws.lake)
    rerun_until_up_to_date(ws, set(range(1, 6)))

    # a refresh (two new paintings): killed as soon as the catalog assets change catalog.duckdb
    write_mirror(mirror, paintings(range(1, 8)))
    stamp = catalog.stat().st_mtime_ns
    wal = catalog.with_name(catalog.name + ".wal")
    run = ws.start()
    kill_at(run, lambda: wal.exists() or catalog.stat().st_mtime_ns != stamp, "a write to catalog.duckdb")
    output = run.output()
    assert "raw_objects" in output and "done in" not in output, "the catalog stage had finished:\n" + output
    assert_consistent(ws.lake)
    assert served_ids(ws.lake) == set(range(1, 6))  # the old generation is still served
    rerun_until_up_to_date(ws, set(range(1, 8)))
